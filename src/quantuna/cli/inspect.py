"""``quantuna validate`` and ``quantuna show``: look at a spec, or at a study's results."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from quantuna.cli._common import add_cpu_argument


def add_parsers(sub: Any) -> None:
    """Add ``validate SPEC`` and ``show SPEC [--storage URL] [--format table|json]``."""
    validate = sub.add_parser("validate", help="check a spec, its model and data; print the space",
                              description="Check everything a run checks before it writes "
                              "anything (the spec's keys, the model, the data through one real "
                              "fp32 batch, the metric), then print the model's inputs, the data "
                              "sizes, the objectives and the search space with its size. Exit "
                              "status 2 and one line naming the file and key when something is "
                              "wrong; nothing is written.")
    validate.add_argument("spec", type=Path, help="the study spec (YAML)")
    validate.set_defaults(handler=cmd_validate)
    show = sub.add_parser("show", help="print a study's baseline, feasible Pareto set and pick",
                          description="The study's summary; --format json adds the pick (with "
                          "feasible and the reason when no trial meets the target), the trial "
                          "counts by state, the units and the storage.")
    show.add_argument("spec", type=Path, help="the study spec (YAML)")
    show.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    show.add_argument("--format", choices=["table", "json"], default="table",
                      help="table (default, for a terminal) or json (for scripts)")
    add_cpu_argument(show)
    show.set_defaults(handler=cmd_show)


def cmd_validate(args: argparse.Namespace) -> int:
    """Run ``quantuna validate``: prepare the study's inputs and print what was found."""
    from quantuna._secrets import redact_url
    from quantuna.spec import load_spec
    from quantuna.study.session import prepare

    spec = load_spec(args.spec)
    session = prepare(spec)
    model = session.model
    print(f"spec      {spec.path}")
    prepared = session.preparation
    source = (prepared.source, prepared.source_sha256) if prepared else (model.path, model.sha256)
    from quantuna.model import COMPUTE_OP_TYPES

    bodies = [op for op in model.subgraph_op_types if op in COMPUTE_OP_TYPES]
    inner = f"; inside control-flow bodies: {', '.join(bodies)}" if bodies else ""
    print(f"model     {source[0]} (sha256 {source[1][:12]}, opset {model.opset}, "
          f"{len(model.compute_nodes)} compute nodes{inner})")
    for info in model.inputs:
        print(f"  input   {info.name} {list(info.shape)}")
    if prepared is not None:
        print(f"prepared  {model.path} (sha256 {model.sha256[:12]}): "
              f"{'; '.join(prepared.applied) or 'nothing to do'}")
    for note in session.notes:
        print(f"note      {note}")
    print(f"data      calibration {len(session.calibration)} samples, evaluation "
          f"{len(session.evaluation)} samples")
    _print_outliers(session)
    directions = ", ".join(f"{n} ({'max' if h else 'min'})"
                           for n, h in zip(session.objective_names, session.higher_is_better))
    print(f"objectives {directions}; mode {session.mode}")
    print(f"storage   {redact_url(spec.storage)} (study {spec.name!r})")
    _print_space(session)
    print("ok")
    return 0


def _print_outliers(session: Any) -> None:
    from quantuna.data import OUTLIER_RATIO, outlier_inputs
    from quantuna.study.sensitivity import robust_calibration

    found = outlier_inputs(session.calibration)
    if not found:
        return
    default = session.space.default_int8()
    robust = robust_calibration(session, default) if default is not None else None
    shown = ", ".join(f"{name} {ratio:,.0f}x" for name, ratio in found.items())
    then = (f"the warm start tries {robust.calibrate_method} calibration first" if robust is not None
            else "add MovingAverage to space.calibrate_method: MinMax ranges will be stretched")
    print(f"note      calibration outliers: a sample's range > {OUTLIER_RATIO:g}x the median sample's "
          f"({shown}); {then}")


def _print_space(session: Any) -> None:
    spec = session.spec
    print("space")
    for knob, values in session.space.knobs():
        if len(values) > 1:
            print(f"  {knob:22s} {values}")
    k = spec.space.exclude_sensitive_nodes
    if k == "auto":
        print("  + an int8/fp32 knob for each node of the shortest ranked prefix that meets the target "
              f"and the next 2 (ranked when the study starts, {spec.space.sensitivity_samples} "
              "samples per node)")
    elif k:
        print(f"  + an int8/fp32 knob for each of the {k} most sensitive nodes (ranked when the study "
              f"starts, {spec.space.sensitivity_samples} samples per node)")
    configs = session.space.distinct_configs()
    settings = {json.dumps(c.calibration_setting, sort_keys=True) for c in configs if c.calibration_setting}
    static = sum(1 for c in configs if c.approach == "static")
    print(f"  {len(configs)} distinct configurations ({static} static, {len(settings)} calibration settings)")


def cmd_show(args: argparse.Namespace) -> int:
    """Run ``quantuna show``: the summary as a table or JSON."""
    from quantuna.study.run import load_results
    from quantuna.summary import show_payload, summarize

    result = load_results(args.spec, storage=args.storage, cpu=args.cpu)
    if args.format == "table":
        print(summarize(result).to_text(shutil.get_terminal_size().columns))
        return 0
    payload = show_payload(result)
    print(json.dumps(payload, indent=2))
    return 0
