"""``quantuna run``: run or resume a study, with a progress bar and the summary at the end."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from quantuna.cli._common import configure_logging, dispatch, non_negative_float, positive_int
from quantuna.cli.progress import PhaseLines, Progress

__all__ = ["Progress", "add_parser", "cmd_run", "worker_main"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``run SPEC [--trials N] [--timeout S] [--storage URL] [--mode M] [--jobs N]``."""
    run = sub.add_parser("run", help="run or resume a study", description=(
        "Run the study a spec describes. Running it again resumes it: finished trials count "
        "toward the budget (tuning.exit_policy.max_trials, or --trials)."))
    _add_arguments(run)
    run.set_defaults(handler=cmd_run)
    return run


def _add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("spec", type=Path, help="the study spec (YAML)")
    run.add_argument("--trials", type=positive_int, metavar="N",
                     help="the study's total trial budget, >= 1 (overrides the spec)")
    run.add_argument("--timeout", type=non_negative_float, metavar="S",
                     help="stop starting trials after this many seconds (0: no limit)")
    run.add_argument("--storage", help="Optuna storage URL (default: SQLite beside the spec)")
    run.add_argument("--mode", choices=["pareto", "weighted"], help="override tuning.mode")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                     help="run N local worker processes on the study (default 1); other machines "
                          "may join with the same command and --storage (see docs/scaling.md)")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a --jobs child


def worker_main(argv: list[str]) -> int:
    """Entry point of a ``--jobs`` worker process: ``quantuna run``'s arguments, no progress."""
    parser = argparse.ArgumentParser(prog="quantuna run")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose, optuna_too=True)
    return dispatch(cmd_run, args)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    argv = ["-v"] * args.verbose + [str(args.spec), "--worker", "--no-progress"]
    for flag, value in (("--trials", args.trials), ("--timeout", args.timeout),
                        ("--storage", args.storage), ("--mode", args.mode)):
        argv += [] if value is None else [flag, str(value)]
    return argv


def _run(args: argparse.Namespace, progress: Progress) -> tuple[Any, list[int | None]]:
    from quantuna.study.workers import run_jobs, run_worker

    if args.jobs > 1:
        def advance(study: Any, spent: int) -> None:  # other processes ran these trials
            for _ in range(spent):
                progress(study, None)

        return run_jobs(
            args.spec, jobs=args.jobs, entry=worker_main, argv=_worker_argv(args),
            n_trials=args.trials, storage=args.storage, mode=args.mode,
            on_ready=progress.ready, on_progress=advance,
        )
    result = run_worker(
        args.spec, n_trials=args.trials, timeout=args.timeout, storage=args.storage,
        mode=args.mode, callbacks=[progress], on_ready=progress.ready, check_hosts=not args.worker,
        on_lock_wait=progress.lock_wait, confirm=not args.worker,
    )
    return result, []


def cmd_run(args: argparse.Namespace) -> int:
    """Run ``quantuna run``: the study, then its summary (workers print nothing)."""
    from quantuna.summary import summarize

    progress = Progress(enabled=not args.no_progress and not args.worker)
    try:
        with PhaseLines(progress):
            result, codes = _run(args, progress)
    except KeyboardInterrupt:
        if args.worker:  # the parent reports the interruption once
            return 130
        raise
    finally:
        progress.close()
    if args.worker:
        return 0
    print(summarize(result).to_text(shutil.get_terminal_size().columns))
    stopped = [(i, code) for i, code in enumerate(codes) if code]
    if stopped:
        listing = ", ".join(f"worker {i}: " + (f"signal {-c}" if c < 0 else f"exit {c}")
                            for i, c in stopped)
        print(f"quantuna: {len(stopped)} of {len(codes)} workers stopped early ({listing}); "
              "run the same command to finish the study", file=sys.stderr)
        return 1
    return 0
