"""``quantuna export`` and ``quantuna apply``: a trial's config out, the same model back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from quantuna.cli._common import add_cpu_argument


def add_parsers(sub: Any) -> None:
    """Add ``export SPEC -o OUT [--trial N | --pick RULE] [--model M]`` and ``apply``."""
    export = sub.add_parser("export", help="write a trial's config (and model) with provenance",
                            description="Write the config of the trial a rule picks (default: "
                            "Neural Compressor's weighted rule over the feasible front) or of "
                            "--trial N as YAML with its provenance (versions, sha256s, measured "
                            "figures); --model also rebuilds the quantized model. A trial that "
                            "misses the accuracy target needs --allow-infeasible.")
    export.add_argument("spec", type=Path, help="the study spec (YAML)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the config YAML to write")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, metavar="N",
                       help="export this trial number (a complete trial; `quantuna show` lists them)")
    which.add_argument("--pick", default="weighted", metavar="RULE",
                       help="pick rule: weighted (default, Neural Compressor's), score, best:<objective>")
    export.add_argument("--model", type=Path, metavar="OUT.onnx",
                        help="also write the quantized model here (rebuilt from the exported config)")
    export.add_argument("--allow-infeasible", action="store_true",
                        help="export a trial that misses the accuracy target (the best effort when "
                             "no trial meets it); without it that is an error and nothing is written")
    export.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    add_cpu_argument(export)
    export.set_defaults(handler=cmd_export)

    apply = sub.add_parser("apply", help="rebuild a quantized model from an exported config",
                           description="Quantize an fp32 ONNX model with a config written by "
                           "`quantuna export`, calibrating with the data it names. Paths in the "
                           "config are relative to it; a file that is not there is looked for by "
                           "name and sha256 in each --search-path folder, then the current "
                           "directory. With the same model, data and versions the output is the "
                           "file the trial measured, byte for byte. The config is data: it never "
                           "runs code without --trust-code.")
    apply.add_argument("config", type=Path, help="a config written by `quantuna export`")
    apply.add_argument("--model", type=Path,
                       help="the fp32 ONNX model (default: the source model the config names)")
    apply.add_argument("-o", "--output", type=Path, required=True, help="the quantized model to write")
    apply.add_argument("--calibration", type=Path,
                       help="calibration .npz (default: the file named in the config)")
    apply.add_argument("--search-path", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder to look in for a file the config names that is not where it "
                            "says (by name, then sha256); repeatable, the current directory last")
    apply.add_argument("--input-map", action="append", default=[], metavar="NAME=NEW",
                       help="feed the config's calibration input NAME to the model's input NEW "
                            "(when the model names its inputs otherwise); repeatable")
    apply.add_argument("--trust-code", action="store_true",
                       help="run the calibration loader the config names (a config file is data: "
                            "without this flag it never runs code)")
    apply.set_defaults(handler=cmd_apply)


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``quantuna export``: the config file, and the model when asked."""
    from quantuna._util import check_output_path
    from quantuna.export import apply, export_trial, file_sha256, write_export
    from quantuna.study.run import load_results

    check_output_path(args.output, where="-o")  # before any work
    if args.model is not None:
        check_output_path(args.model, where="--model")
    result = load_results(args.spec, storage=args.storage, cpu=args.cpu)
    if args.trial is not None and all(t.number != args.trial for t in result.trials):
        from quantuna.errors import QuantunaError

        numbers = [t.number for t in result.trials]
        raise QuantunaError(f"--trial {args.trial} is not a complete trial of the study "
                            f"(complete: {number_ranges(numbers)})")
    document = export_trial(result, trial=args.trial, rule=args.pick,
                            allow_infeasible=args.allow_infeasible)
    write_export(document, args.output)
    provenance = document["provenance"]
    fp32 = document["config"].get("approach") == "fp32"
    print(f"wrote {args.output} (trial {provenance['trial']}, {provenance['picked_by']})"
          + (": the fp32 model, no int8 config" if fp32 else ""))
    if args.model is not None:
        session = result.session
        assert session is not None
        source = session.preparation.source if session.preparation else session.model.path
        apply(args.output, source, out=args.model, calibration=session.calibration)
        measured = document["provenance"].get("quantized_model", {}).get("sha256")
        same = file_sha256(args.model) == measured
        print(f"wrote {args.model}" + (" (identical to the measured model)" if same else
                                      " (differs from the measured model: versions changed?)"))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Run ``quantuna apply``: rebuild the quantized model and print its sha256."""
    from quantuna.export import ExportedConfig, apply, file_sha256
    from quantuna.export_inputs import parse_input_map

    exported = ExportedConfig.read(args.config)
    apply(exported, args.model, out=args.output, calibration=args.calibration,
          trust_code=args.trust_code, search_path=args.search_path,
          input_map=parse_input_map(args.input_map))
    sha = file_sha256(args.output)
    measured = (exported.provenance.get("quantized_model") or {}).get("sha256")
    trial = exported.provenance.get("trial")
    same = "" if not measured else (f", identical to the model trial {trial} measured"
                                    if sha == measured else f", differs from trial {trial}'s model")
    print(f"wrote {args.output} (sha256 {sha[:12]}{same})")
    return 0


def number_ranges(numbers: list[int], most: int = 12) -> str:
    """``0-11, 14, 17-19``: trial numbers as ranges, the first ``most`` of them, then ``...``."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
    if not shown:
        return "none yet"
    return ", ".join(shown[:most]) + (f", ... ({len(numbers)} trials)" if len(shown) > most else "")
