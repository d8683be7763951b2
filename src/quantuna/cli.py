"""``quantuna`` command line: thin commands over the Python API.

Errors in the input print one line to stderr and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from quantuna.cli_view import add_dashboard_parser, add_report_parser, cli_dashboard, cli_report

EPILOG = """\
a typical session:
  quantuna validate studies/digits.yaml           check spec, model and data; show the space
  quantuna run studies/digits.yaml                run (or resume) the study
  quantuna show studies/digits.yaml               the feasible Pareto set in the terminal
  quantuna dashboard studies/digits.yaml          optuna-dashboard on 127.0.0.1
  quantuna report studies/digits.yaml -o report.html
  quantuna export studies/digits.yaml -o best.yaml --model best.onnx
  quantuna apply best.yaml --model model.onnx -o model.int8.onnx
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantuna",
        description="Search the int8 quantization configurations of an ONNX model with Optuna.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run or resume a study", description=(
        "Run the study a spec describes. Running it again resumes it: finished trials count "
        "toward the budget (tuning.exit_policy.max_trials, or --trials)."))
    run.add_argument("spec", type=Path, help="the study spec (YAML)")
    run.add_argument("--trials", type=int, help="the study's total trial budget (overrides the spec)")
    run.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    run.add_argument("--storage", help="Optuna storage URL (default: SQLite beside the spec)")
    run.add_argument("--mode", choices=["pareto", "weighted"], help="override tuning.mode")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="run N local worker processes on the study (default 1); other machines "
                          "may join with the same command and --storage (see docs/scaling.md)")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a --jobs child

    validate = sub.add_parser("validate", help="check a spec, its model and data; print the space")
    validate.add_argument("spec", type=Path)

    export = sub.add_parser("export", help="write a trial's config (and model) with provenance")
    export.add_argument("spec", type=Path)
    export.add_argument("-o", "--output", type=Path, required=True, help="the config YAML to write")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="export this trial number")
    which.add_argument("--pick", default="weighted",
                       help="pick rule: weighted (default, Neural Compressor's), score, best:<objective>")
    export.add_argument("--model", type=Path, help="also write the quantized model here")
    export.add_argument("--storage", help="Optuna storage URL (default: the spec's)")

    apply = sub.add_parser("apply", help="rebuild a quantized model from an exported config")
    apply.add_argument("config", type=Path, help="a config written by `quantuna export`")
    apply.add_argument("--model", type=Path, required=True, help="the fp32 ONNX model")
    apply.add_argument("-o", "--output", type=Path, required=True, help="the quantized model to write")
    apply.add_argument("--calibration", type=Path,
                       help="calibration .npz (default: the data named in the config)")

    show = sub.add_parser("show", help="print a study's baseline and feasible Pareto set")
    show.add_argument("spec", type=Path)
    show.add_argument("--storage")
    show.add_argument("--format", choices=["table", "json"], default="table")
    add_dashboard_parser(sub)
    add_report_parser(sub)
    return parser


def pareto_table(result: Any) -> str:
    """The feasible Pareto set as a text table, with deltas to fp32."""
    from quantuna.results import pareto_rows

    header, rows = pareto_rows(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(result: Any) -> str:
    from quantuna.results import format_value as _fmt
    from quantuna.spec import redact_url

    session = result.session
    target = result.baseline.get("accuracy_target")
    failed = result.failed
    stopped = result.stopped_early
    measured = sum(1 for t in result.trials if t.reused_from is None)
    lines = [
        f"study {session.spec.name!r} ({result.mode}): {len(result.trials)} complete trials "
        f"({measured} measured, the rest reused), {len(stopped)} stopped early as hopeless, "
        f"{len(failed)} failed; {len(result.pareto)} on the feasible Pareto front",
        f"accuracy target ({session.metric.name}): {_fmt(target)}  "
        f"(fp32 {_fmt(result.baseline.get('values', {}).get('accuracy'))})",
        "",
        pareto_table(result) if result.pareto else "no trial meets the accuracy target yet",
    ]
    reasons: dict[str, list[int]] = {}
    for t in failed:
        reason = str(t.user_attrs.get("fail_reason", "interrupted"))
        reasons.setdefault(reason[:160], []).append(t.number)
    for reason, numbers in reasons.items():
        lines.append(f"failed {', '.join(f'#{n}' for n in numbers[:8])}: {reason}")
    if result.trials:
        pick = result.pick("weighted")
        note = "" if pick.feasible else " (does not meet the accuracy target)"
        lines += ["", f"export would pick trial {pick.trial.number} by Neural Compressor's weighted rule{note}"]
    lines.append(f"stored in {redact_url(session.spec.storage)}")
    return "\n".join(lines)


class _Progress:
    """A tqdm bar over the remaining trials showing the best feasible values so far."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.higher: list[bool] = []

    def ready(self, study: Any, remaining: int) -> None:
        if not self.enabled or not remaining:
            return
        from tqdm import tqdm

        directions = study.user_attrs.get("quantuna", {}).get("higher_is_better")
        names = study.user_attrs.get("quantuna", {}).get("objectives", [])
        self.higher = directions or [n == "accuracy" for n in names]
        self.bar = tqdm(total=remaining, unit="trial", dynamic_ncols=True, file=sys.stderr,
                        desc="best feasible")

    def __call__(self, study: Any, trial: Any) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        feasible = [
            t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("feasible") and "values" in t.user_attrs
        ]
        if feasible:
            names = study.user_attrs.get("quantuna", {}).get("objectives", [])
            best = {}
            for name, higher in zip(names, self.higher):
                vals = [t.user_attrs["values"][name] for t in feasible]
                best[name] = f"{(max(vals) if higher else min(vals)):.4g}"
            self.bar.set_postfix(best, refresh=False)
        else:
            self.bar.set_postfix({"feasible": 0}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _cmd_run(args: argparse.Namespace) -> int:
    from quantuna.workers import run_jobs, run_worker, warn_mixed_cpus

    progress = _Progress(enabled=not args.no_progress and not args.worker)
    codes: list[int | None] = []

    def advance(study: Any, spent: int) -> None:  # other processes ran these trials
        for _ in range(spent):
            progress(study, None)

    try:
        if args.jobs > 1:
            argv = ["-v"] * args.verbose + ["run", str(args.spec), "--worker", "--no-progress"]
            for flag, value in (("--trials", args.trials), ("--timeout", args.timeout),
                                ("--storage", args.storage), ("--mode", args.mode)):
                argv += [] if value is None else [flag, str(value)]
            result, codes = run_jobs(
                args.spec, jobs=args.jobs, entry=main, argv=argv,
                n_trials=args.trials, storage=args.storage, mode=args.mode,
                on_ready=progress.ready, on_progress=advance,
            )
        else:
            result = run_worker(
                args.spec, n_trials=args.trials, timeout=args.timeout, storage=args.storage,
                mode=args.mode, callbacks=[progress], on_ready=progress.ready,
                check_hosts=not args.worker,
            )
    except KeyboardInterrupt:
        if args.worker:  # the parent reports the interruption once
            return 130
        raise
    finally:
        progress.close()
    if args.worker:
        return 0
    warn_mixed_cpus(result.study)
    print(_summary(result))
    stopped = [(i, code) for i, code in enumerate(codes) if code]
    if stopped:
        listing = ", ".join(f"worker {i}: " + (f"signal {-c}" if c < 0 else f"exit {c}")
                            for i, c in stopped)
        print(f"quantuna: {len(stopped)} of {len(codes)} workers stopped early ({listing}); "
              "run the same command to finish the study", file=sys.stderr)
        return 1
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from quantuna.session import prepare
    from quantuna.spec import load_spec, redact_url

    spec = load_spec(args.spec)
    session = prepare(spec)
    model = session.model
    print(f"spec      {spec.path}")
    print(f"model     {model.path} (sha256 {model.sha256[:12]}, {len(model.compute_nodes)} compute nodes)")
    for info in model.inputs:
        print(f"  input   {info.name} {list(info.shape)}")
    print(f"data      calibration {len(session.calibration)} samples, evaluation "
          f"{len(session.evaluation)} samples")
    directions = ", ".join(f"{n} ({'max' if h else 'min'})"
                           for n, h in zip(session.objective_names, session.higher_is_better))
    print(f"objectives {directions}; mode {session.mode}")
    print(f"storage   {redact_url(spec.storage)} (study {spec.name!r})")
    print("space")
    for knob, values in session.space.knobs():
        if len(values) > 1:
            print(f"  {knob:22s} {values}")
    k = spec.space.exclude_sensitive_nodes
    if k:
        print(f"  + an int8/fp32 knob for each of the {k} most sensitive nodes (ranked when the study "
              f"starts, {spec.space.sensitivity_samples} samples per node)")
    configs = session.space.distinct_configs()
    print(f"  {len(configs)} distinct configurations "
          f"({sum(1 for c in configs if c.approach == 'static')} static, "
          f"{len({json.dumps(c.calibration_setting, sort_keys=True) for c in configs if c.calibration_setting})}"
          " calibration settings)")
    print("ok")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from quantuna.export import apply, export_trial, file_sha256, write_export
    from quantuna.study import load_results

    result = load_results(args.spec, storage=args.storage)
    document = export_trial(result, trial=args.trial, rule=args.pick)
    write_export(document, args.output)
    print(f"wrote {args.output} (trial {document['provenance']['trial']}, {document['provenance']['picked_by']})")
    if args.model is not None:
        apply(args.output, result.session.model.path, out=args.model,
              calibration=result.session.calibration)
        same = file_sha256(args.model) == document["measured"]["model_sha256"]
        print(f"wrote {args.model}" + (" (identical to the measured model)" if same else
                                      " (differs from the measured model: versions changed?)"))
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from quantuna.export import apply, file_sha256

    apply(args.config, args.model, out=args.output, calibration=args.calibration)
    print(f"wrote {args.output} (sha256 {file_sha256(args.output)[:12]})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from quantuna.study import load_results

    result = load_results(args.spec, storage=args.storage)
    if args.format == "json":
        payload = {
            "study": result.session.spec.name,
            "mode": result.mode,
            "objectives": result.objective_names,
            "baseline": result.baseline,
            "pareto": [
                {"trial": t.number, "values": t.values, "relative": t.relative,
                 "config": t.config.to_dict(), "summary": t.summary}
                for t in result.pareto
            ],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(_summary(result))
    return 0


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "export": _cmd_export,
            "apply": _cmd_apply, "show": _cmd_show, "dashboard": cli_dashboard, "report": cli_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quantuna`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from quantuna import __version__

        print(f"quantuna {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.command not in ("apply", "validate"):  # the commands that open an Optuna study
        import optuna

        optuna.logging.set_verbosity(
            [optuna.logging.ERROR, optuna.logging.INFO, optuna.logging.DEBUG][min(args.verbose, 2)]
        )
    from quantuna.errors import QuantunaError, SpecError

    try:
        return COMMANDS[args.command](args)
    except SpecError as exc:
        print(f"quantuna: error: {exc}", file=sys.stderr)
        return 2
    except QuantunaError as exc:
        print(f"quantuna: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the finished trials are stored; run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
