"""Several workers on one study: local processes (``--jobs N``) and other machines.

Optuna's storages are the distributed engine; quantuna adds only what a shared trial budget and
shared measurements need:

- :func:`run_worker` runs the study as one of any number of workers. The spec's budget holds for
  the study as a whole and exactly: a worker starts a trial only while it holds the study's "ask"
  mutex and spent + running trials leave room (:class:`BudgetGate`). When no room is left but
  other workers' trials are still running, it waits: one of them may die, be failed by its
  heartbeat and need a retry.
- :class:`~quantuna.study.worker_sampler.WorkerSampler` seeds each worker's sampler differently
  (workers with one seed would propose the same configs): from the number of the first trial the
  worker runs, unique across workers and machines. Trial 0 keeps the spec's seed, so a
  single-process study is reproducible.
- :func:`run_jobs` prepares the study once (baseline, warm start), then starts N local worker
  processes and reports progress; Ctrl-C stops them all after their running trial.
- :func:`warn_mixed_cpus`: latencies measured on different CPUs are not comparable (the front
  compares one CPU's, :mod:`quantuna.study.cpus`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from quantuna._compat import experimental_quiet, stop_requested
from quantuna.phases import announce
from quantuna.results import TuneResult
from quantuna.spec import StudySpec, load_spec
from quantuna.study import attrs
from quantuna.study.artifacts import write_study_note
from quantuna.study.budget import count_spent
from quantuna.study.confirm import confirm_front
from quantuna.study.cpus import cpu_of
from quantuna.study.exhaustion import SpaceWatch
from quantuna.study.interrupt import noticing_ctrl_c, quiet_unraisable_interrupts
from quantuna.study.mutex import StudyMutex
from quantuna.study.run import check_budget, load_results, run_study
from quantuna.study.storage import heartbeat_settings
from quantuna.study.worker_sampler import WorkerSampler

logger = logging.getLogger(__name__)
Callback = Callable[[optuna.Study, FrozenTrial], None]


class BudgetGate:
    """Exactly ``budget`` trials in a study, however many workers run it.

    :meth:`admit` takes the study's "ask" mutex and keeps it when spent + running trials leave
    room; the sampler's ``trial_started`` hook releases it once the new trial is RUNNING in the
    storage, where every other worker counts it.
    """

    def __init__(self, study: optuna.Study, budget: int, deadline: float | None) -> None:
        self.study = study
        self.budget = budget
        self.deadline = deadline
        self.mutex = StudyMutex(study, "ask")
        if isinstance(study.sampler, WorkerSampler):
            study.sampler.trial_started.append(self.opened)

    def admit(self) -> bool:
        """True (mutex held) when this worker may start a trial; False when the budget is done.

        With no room left while other trials run, wait: one of them may die, be failed by its
        heartbeat and need a retry. The wait ends when none runs, at the deadline, on Ctrl-C, or
        when the running trials have not changed for a grace period plus two heartbeats (a dead
        worker's trial is failed by then; one that never beat never will be).
        """
        interval, grace = heartbeat_settings()
        last: tuple[list[int], float] = ([], time.monotonic())
        with noticing_ctrl_c() as interrupted:
            while True:
                with experimental_quiet():
                    optuna.storages.fail_stale_trials(self.study)
                self.mutex.acquire()
                # running first: a trial finishing in between is counted twice, never missed
                running = [t.number for t in self.study.get_trials(
                    deepcopy=False, states=(TrialState.RUNNING,))]
                if count_spent(self.study) + len(running) < self.budget:
                    return True
                self.mutex.release()
                now = time.monotonic()
                if running != last[0]:
                    last = (running, now)
                if (not running or interrupted or now - last[1] > grace + 2 * interval
                        or (self.deadline is not None and now > self.deadline)):
                    return False
                time.sleep(1.0)

    def opened(self, trial: FrozenTrial) -> None:
        """The new trial exists: other workers may ask."""
        self.mutex.release()

    def close(self) -> None:
        """Release the mutex if still held (the study stopped before asking)."""
        self.mutex.release()
        if isinstance(self.study.sampler, WorkerSampler) and self.opened in self.study.sampler.trial_started:
            self.study.sampler.trial_started.remove(self.opened)


class _BudgetDone(Exception):
    """No room for another trial when the worker started."""


def run_worker(
    spec: str | Path | dict[str, Any] | StudySpec,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    mode: str | None = None,
    storage: str | None = None,
    callbacks: Sequence[Callback] = (),
    on_ready: Callable[[optuna.Study, int], None] | None = None,
    check_hosts: bool = True,
    **options: Any,
) -> TuneResult:
    """Run (or resume) a study as one of any number of workers, local or on other machines.

    Every worker runs the same spec against the same storage; this one starts trials only while
    the study's budget has room (see :class:`BudgetGate`), so the budget holds exactly for the
    study as a whole. Arguments are those of :func:`quantuna.study.run.run_study`.

    Returns:
        The study's :class:`~quantuna.results.TuneResult` when this worker stops.
    """
    check_budget(n_trials, timeout)
    loaded = load_spec(spec, storage=storage)
    budget = n_trials if n_trials is not None else loaded.tuning.exit_policy.max_trials
    limit = timeout if timeout is not None else (loaded.tuning.exit_policy.timeout or None)
    deadline = None if not limit else time.monotonic() + limit
    gates: list[BudgetGate] = []
    left = [0]

    def ready(study: optuna.Study, remaining: int) -> None:
        if check_hosts:
            warn_mixed_cpus(study, joining=True)
        gates.append(BudgetGate(study, budget, deadline))
        if remaining and not gates[0].admit():
            raise _BudgetDone
        left[0] = remaining
        if on_ready is not None:
            on_ready(study, remaining)

    def next_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        left[0] -= 1
        stopping = stop_requested(study)  # set by the budget or a Ctrl-C callback
        if left[0] > 0 and not stopping and not gates[0].admit():
            study.stop()

    try:
        return run_study(
            loaded, n_trials=budget, timeout=limit, mode=mode,
            callbacks=[*callbacks, next_trial], on_ready=ready, **options,
        )
    except _BudgetDone:
        return load_results(loaded, mode=mode)
    finally:
        for gate in gates:
            gate.close()


def _job(entry: Callable[[list[str]], int], argv: list[str], stopping: Any) -> None:
    """A worker process: started with SIGINT ignored (a Ctrl-C while it boots would print a
    traceback), it takes SIGINT again once it can end cleanly, and leaves at once if the parent
    already asked the workers to stop."""
    os.setpgrp()  # Ctrl-C reaches the parent only; it stops the workers after their trial
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = 130 if stopping.is_set() else entry(argv)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while processes are spawned (they inherit it until :func:`_job` runs)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for(procs: list[Any], study: optuna.Study, spent: int,
              on_progress: Callable[[optuna.Study, int], None] | None) -> None:
    """Wait for the worker processes, telling ``on_progress`` how many more trials were spent."""
    while any(proc.is_alive() for proc in procs):
        next(p for p in procs if p.is_alive()).join(timeout=1.0)
        now = count_spent(study)
        if now > spent and on_progress is not None:
            on_progress(study, now - spent)
        spent = max(spent, now)


def run_jobs(
    spec: str | Path,
    *,
    jobs: int,
    entry: Callable[[list[str]], int],
    argv: list[str],
    n_trials: int | None = None,
    mode: str | None = None,
    storage: str | None = None,
    on_ready: Callable[[optuna.Study, int], None] | None = None,
    on_progress: Callable[[optuna.Study, int], None] | None = None,
) -> tuple[TuneResult, list[int | None]]:
    """Prepare the study once, then run ``jobs`` local worker processes on it.

    The parent measures the baseline and enqueues the warm-start trials before any worker starts;
    each worker is a spawned process running ``entry(argv)`` (the CLI's ``quantuna run``
    arguments: passed through a pipe, so no password shows in the process list).

    Args:
        spec: the spec path.
        jobs: how many worker processes (at most the trials left).
        entry: a module-level function taking ``argv`` (``quantuna.cli.app``).
        argv: the workers' arguments.
        n_trials, mode, storage: as for :func:`quantuna.study.run.run_study`.
        on_ready: called with the study and the number of trials left, before the workers start.
        on_progress: called with the study and how many more trials were spent, while they run.

    Returns:
        The study's results and the workers' exit codes (negative: killed by that signal).
    """
    check_budget(n_trials, None)
    loaded = load_spec(spec, storage=storage)
    budget = n_trials if n_trials is not None else loaded.tuning.exit_policy.max_trials
    prepared = run_study(loaded, n_trials=0, mode=mode)  # baseline and warm start, once
    study = prepared.study
    assert prepared.session is not None
    warn_mixed_cpus(study, joining=True)
    spent = count_spent(study)
    watch = SpaceWatch(prepared.session.space, budget)
    left = max(0, budget - spent)
    if left and watch.exhausted(study, spent):  # a resumed study with nothing new to try
        left = 0
        announce(watch.line(spent))
    elif on_ready is not None:
        on_ready(study, left)
    context = multiprocessing.get_context("spawn")
    stopping = context.Event()
    procs = [
        context.Process(target=_job, args=(entry, argv, stopping), name=f"quantuna-worker-{i}")
        for i in range(min(jobs, left))
    ]
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with _children_ignore_ctrl_c():
            for proc in procs:
                proc.start()
        with quiet_unraisable_interrupts():  # Ctrl-C may land in SQLAlchemy's gc callbacks
            _wait_for(procs, study, spent, on_progress)
    except BaseException:  # Ctrl-C, SIGTERM, or anything else: no worker outlives the parent
        stopping.set()  # a worker still booting leaves as soon as it can
        _stop(procs)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    spent = count_spent(study)
    if procs and spent < budget and watch.exhausted(study, spent):  # the workers stopped on it
        announce(watch.line(spent))
    result = load_results(loaded, mode=mode)  # the workers leave the confirm phase to this process
    assert result.session is not None
    confirmed = confirm_front(result.study, result.session, result)
    if confirmed is not result:
        write_study_note(confirmed)
    return confirmed, [proc.exitcode for proc in procs]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


STOP_GRACE = 5.0  # seconds the workers get to end their running trial after a Ctrl-C


def _stop(procs: list[Any], grace: float = STOP_GRACE) -> None:
    """Ask every worker to stop (SIGINT: its running trial ends, not counted); a second Ctrl-C,
    or ``grace`` seconds, kills the ones still running. Returns when none is left."""
    again: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: again.append(True))
    try:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        while any(p.is_alive() for p in procs) and not again and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()  # its running trial is failed by the heartbeat and retried
        for proc in procs:
            if proc.pid is not None:
                proc.join()
        signal.signal(signal.SIGINT, previous)


def mixed_cpus(study: optuna.Study, *, joining: bool = False) -> dict[str, list[str]]:
    """The CPUs (:mod:`quantuna.study.cpus` keys, by label) that timed a study (baseline and
    trials), each with its hosts.

    With ``joining``, this host counts too (it is about to measure).
    """
    baseline = study.user_attrs.get(attrs.BASELINE) or {}
    threads = (baseline.get(attrs.THREADS) or {}).get("latency")
    sources = [baseline] + [t.user_attrs for t in study.get_trials(deepcopy=False)]
    if joining:
        sources.append(attrs.host_facts())
    cpus: dict[str, set[str]] = {}
    for source in sources:
        cpu = cpu_of(source, threads)
        if cpu is not None:
            cpus.setdefault(cpu.label, set()).add(source.get(attrs.HOST) or "?")
    return {cpu: sorted(hosts) for cpu, hosts in sorted(cpus.items())}


def warn_mixed_cpus(study: optuna.Study, *, joining: bool = False) -> bool:
    """Log a warning when a study's latencies come from different CPUs; True if they do."""
    cpus = mixed_cpus(study, joining=joining)
    if len(cpus) < 2:
        return False
    listing = "; ".join(f"{cpu} ({', '.join(hosts)})" for cpu, hosts in cpus.items())
    logger.warning(
        "study %r is timed on different CPUs, whose latencies are not comparable: %s; the front "
        "and the pick compare the trials of one CPU only (the summary names it, --cpu shows "
        "another's)", study.study_name, listing,
    )
    return True
