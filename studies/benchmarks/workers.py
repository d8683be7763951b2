"""Trials per hour with 1, 2 and 3 local workers on the shipped digits study, and the kill test.

    python studies/benchmarks/workers.py [--trials 24] [--jobs 1 2 3] [--storage URL]

Each worker count runs ``quantuna run studies/digits.yaml --trials N --jobs J`` once, in a fresh
copy of the example (its own SQLite file and range cache, so no run reuses another's
calibration); the rate counts the trial phase only, from the first trial's start to the last
trial's end (the baseline and process start-up are printed apart). Then the kill test: one
worker is killed with SIGKILL mid-trial, and a restart finishes the study; the trial counts before
and after are printed. The figures go to section 5 of RESULTS.md.

``--storage`` takes a PostgreSQL URL or ``redis://`` instead of SQLite; ``{name}`` in it is
replaced by a fresh name per run (a Redis key prefix, say: ``redis://127.0.0.1:6379/0?prefix={name}``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

STUDIES = C.STUDIES
FAST_HEARTBEAT = {"QUANTUNA_HEARTBEAT_INTERVAL": "1", "QUANTUNA_HEARTBEAT_GRACE": "3"}


def copy_example(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, folder / sub)
    text = (STUDIES / "digits.yaml").read_text().replace("name: digits-int8", f"name: {name}")
    (folder / "digits.yaml").write_text(text)
    return folder / "digits.yaml"


def storage_for(template: str | None, spec: Path, name: str) -> str:
    if template is None:
        return f"sqlite:///{spec.with_suffix('.db')}"
    return template.replace("{name}", name)


def load(url: str, name: str) -> optuna.Study:
    from quantuna.study.storage import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(url))


def quantuna(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "quantuna.cli", *map(str, args)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def rate(jobs: int, trials: int, root: Path, template: str | None) -> tuple[float, float, float, int]:
    """(trials per hour in the trial phase, its seconds, the whole command's seconds, how many
    trials measured a config rather than reusing a measurement)."""
    name = f"bench-workers-{jobs}-{uuid.uuid4().hex[:6]}"
    spec = copy_example(root, name)
    url = storage_for(template, spec, name)
    start = time.perf_counter()
    proc = quantuna("run", spec, "--trials", trials, "--jobs", jobs, "--no-progress", "--storage", url)
    _, err = proc.communicate()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"quantuna run --jobs {jobs} failed:\n{err}")
    study = load(url, name)
    done = [t for t in study.trials if t.state.is_finished()]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    measured = sum(1 for t in done if t.user_attrs.get("reused_measurement_from") is None)
    return len(done) / span * 3600, span, total, measured


def kill_test(trials: int, root: Path, template: str | None) -> str:
    """Kill a lone worker mid-trial, restart, and describe the trial counts before and after."""
    name = f"bench-kill-{uuid.uuid4().hex[:6]}"
    spec = copy_example(root, name)
    url = storage_for(template, spec, name)
    worker = quantuna("run", spec, "--trials", trials, "--no-progress", "--storage", url, env=FAST_HEARTBEAT)
    study = None
    while True:
        if worker.poll() is not None:
            sys.exit(f"the worker ended before it could be killed:\n{worker.communicate()[1]}")
        try:
            study = study or load(url, name)
        except KeyError:
            study = None
        if study is not None:
            states = [t.state for t in study.get_trials(deepcopy=False)]
            if states.count(optuna.trial.TrialState.COMPLETE) >= trials // 3 and \
                    optuna.trial.TrialState.RUNNING in states:
                break
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    before = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    killed = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    time.sleep(4)  # past the grace period: the restart fails and retries the killed trial
    restart = quantuna("run", spec, "--trials", trials, "--no-progress", "--storage", url, env=FAST_HEARTBEAT)
    _, err = restart.communicate()
    if restart.returncode != 0:
        sys.exit(f"the restart failed:\n{err}")
    study = load(url, name)
    complete = {t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    retried = [t.number for t in study.trials if t.system_attrs.get("failed_trial") in killed]
    lost = sorted(before - complete)
    return (
        f"kill test (budget {trials}): before the kill {len(before)} complete, trial(s) {killed} "
        f"running; after the restart {len(complete)} complete, failed {failed} (the killed one), "
        f"retried as trial(s) {retried}; completed trials lost: {len(lost)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="the budget of every run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--storage", help="a storage URL template (default: SQLite per run)")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill test")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; budget {args.trials} trials per run; storage "
          f"{'SQLite' if args.storage is None else args.storage.split(':')[0]}", flush=True)
    kind = "SQLite" if args.storage is None else args.storage.split(":")[0]
    rows, kill = [], ""
    with tempfile.TemporaryDirectory(prefix="quantuna-bench-workers-") as tmp:
        rates = {}
        for jobs in args.jobs:
            per_hour, span, total, measured = rate(jobs, args.trials, Path(tmp), args.storage)
            rates[jobs] = per_hour
            print(f"{jobs} worker(s): {per_hour:7.0f} trials/hour (trial phase {span:.1f} s, "
                  f"whole command {total:.1f} s, {measured} of {args.trials} trials measured, "
                  "the rest reused)", flush=True)
            rows.append([jobs, f"{per_hour:.0f}", f"**{per_hour / rates[args.jobs[0]]:.2f}x**",
                         f"{span:.1f}", f"{total:.1f}", f"{measured} / {args.trials}"])
        first = rates[args.jobs[0]]
        print("ratios: " + ", ".join(f"{j} workers {r / first:.2f}x" for j, r in rates.items()))
        if not args.no_kill:
            kill = kill_test(args.trials, Path(tmp), args.storage)
            print(kill)
    body = (
        f"`quantuna run studies/digits.yaml --trials {args.trials} --jobs J` on {kind}, one run per "
        "worker count, each in a fresh copy of the example (no shared range cache). Rate = trials "
        "/ the trial phase (first trial start to last trial end); the whole command adds start-up "
        "and the fp32 baseline. Latency timing is serialised per host, so a 2-core machine gains "
        "from the second worker (accuracy, calibration and quantization overlap) and not from a "
        "third.\n\n"
        + C.table(["workers", "trials/hour", "vs 1 worker", "trial phase s", "whole command s",
                   "measured / trials"], rows)
        + (f"\n\n{kill[0].upper() + kill[1:]}." if kill else "")
    )
    C.update_results(f"workers-{kind.lower()}", f"5. Local workers ({kind})", body)


if __name__ == "__main__":
    main()
