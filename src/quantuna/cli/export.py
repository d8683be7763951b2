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
    export.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    export.set_defaults(handler=cmd_export)

    apply = sub.add_parser("apply", help="rebuild a quantized model from an exported config")
    apply.add_argument("config", type=Path, help="a config written by `quantuna export`")
    apply.add_argument("--model", type=Path, required=True, help="the fp32 ONNX model")
    apply.add_argument("-o", "--output", type=Path, required=True, help="the quantized model to write")
    apply.add_argument("--calibration", type=Path,
                       help="calibration .npz (default: the data named in the config)")
    apply.set_defaults(handler=cmd_apply)


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``quantuna export``: the config file, and the model when asked."""
    from quantuna.export import apply, export_trial, file_sha256, write_export
    from quantuna.study.run import load_results

    result = load_results(args.spec, storage=args.storage)
    document = export_trial(result, trial=args.trial, rule=args.pick)
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
        same = file_sha256(args.model) == document["measured"]["model_sha256"]
        print(f"wrote {args.model}" + (" (identical to the measured model)" if same else
                                      " (differs from the measured model: versions changed?)"))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """Run ``quantuna apply``: rebuild the quantized model and print its sha256."""
    from quantuna.export import apply, file_sha256

    apply(args.config, args.model, out=args.output, calibration=args.calibration)
    print(f"wrote {args.output} (sha256 {file_sha256(args.output)[:12]})")
    return 0
