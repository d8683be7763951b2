"""``quantuna export`` and ``quantuna apply``: a trial's config out, the same model back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    """Add ``export SPEC -o OUT [--trial N | --pick RULE] [--model M]`` and ``apply``."""
    export = sub.add_parser("export", help="write a trial's config (and model) with provenance")
    export.add_argument("spec", type=Path)
    export.add_argument("-o", "--output", type=Path, required=True, help="the config YAML to write")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="export this trial number")
    which.add_argument("--pick", default="weighted",
                       help="pick rule: weighted (default, Neural Compressor's), score, best:<objective>")
    export.add_argument("--model", type=Path, help="also write the quantized model here")
    export.add_argument("--allow-infeasible", action="store_true",
                        help="export a trial that misses the accuracy target (the best effort when "
                             "no trial meets it); without it that is an error and nothing is written")
    export.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    export.set_defaults(handler=cmd_export)

    apply = sub.add_parser("apply", help="rebuild a quantized model from an exported config")
    apply.add_argument("config", type=Path, help="a config written by `quantuna export`")
    apply.add_argument("--model", type=Path, required=True, help="the fp32 ONNX model")
    apply.add_argument("-o", "--output", type=Path, required=True, help="the quantized model to write")
    apply.add_argument("--calibration", type=Path,
                       help="calibration .npz (default: the data named in the config)")
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
    result = load_results(args.spec, storage=args.storage)
    document = export_trial(result, trial=args.trial, rule=args.pick,
                            allow_infeasible=args.allow_infeasible)
    write_export(document, args.output)
    provenance = document["provenance"]
    print(f"wrote {args.output} (trial {provenance['trial']}, {provenance['picked_by']})")
    if args.model is not None:
        assert result.session is not None
        apply(args.output, result.session.model.path, out=args.model,
              calibration=result.session.calibration)
        same = file_sha256(args.model) == document["measured"]["model_sha256"]
        print(f"wrote {args.model}" + (" (identical to the measured model)" if same else
                                      " (differs from the measured model: versions changed?)"))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Run ``quantuna apply``: rebuild the quantized model and print its sha256."""
    from quantuna.export import apply, file_sha256

    apply(args.config, args.model, out=args.output, calibration=args.calibration,
          trust_code=args.trust_code)
    print(f"wrote {args.output} (sha256 {file_sha256(args.output)[:12]})")
    return 0
