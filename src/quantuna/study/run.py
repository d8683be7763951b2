"""``run_study()``: a spec's study opened, prepared once (baseline, sensitivity, warm start) and
run until its budget is spent or its space is exhausted; ``load_results()`` reads it back without
running a trial."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from quantuna._compat import experimental_quiet, storage_url, study_storage
from quantuna._secrets import redact_url
from quantuna._util import check_own_dir, check_writable_dir
from quantuna.errors import SpecError, TrialError
from quantuna.ort.latency import LockWaitHook
from quantuna.phases import announce, phase
from quantuna.results import TuneResult, collect_results
from quantuna.spec import StudySpec, load_spec
from quantuna.study import attrs
from quantuna.study.artifacts import reserve_glance, write_study_note
from quantuna.study.baseline import ensure_baseline
from quantuna.study.budget import count_spent
from quantuna.study.confirm import confirm_front
from quantuna.study.exhaustion import SpaceWatch
from quantuna.study.interrupt import Interrupt
from quantuna.study.sampler import DistinctSampler, make_sampler
from quantuna.study.sensitivity import enqueue_warm_start, ensure_sensitivity
from quantuna.study.session import Session, prepare
from quantuna.study.storage import make_storage, require_existing, sqlite_file
from quantuna.study.trial import make_objective
from quantuna.study.worker_sampler import WorkerSampler

logger = logging.getLogger(__name__)
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
SpecSource = str | Path | dict[str, Any] | StudySpec


def worker_sampler(session: Session, seed: int | None,
                   sampler: optuna.samplers.BaseSampler | None = None) -> WorkerSampler:
    """The spec's sampler (or ``sampler``, an instance) over ``session.space``, wrapped by the
    distinct-config guard; the spec's is seeded per worker from its first trial."""
    if sampler is not None:
        instance = sampler
        return WorkerSampler(lambda s: DistinctSampler(instance, session.space, s), seed)
    build = functools.partial(make_sampler, session.spec.study.sampler, space=session.space)
    return WorkerSampler(build, seed)


def open_study(session: Session, *, sampler_seed: int | None = None,
               sampler: optuna.samplers.BaseSampler | None = None,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the spec's study (in ``storage``, default: the spec's, opened now),
    checking that an existing one was made the same way."""
    spec = session.spec
    seed = spec.study.seed if sampler_seed is None else sampler_seed
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage if storage is not None else make_storage(spec.storage),
            directions=session.directions,
            sampler=worker_sampler(session, seed, sampler),
            pruner=optuna.pruners.NopPruner(),  # quantuna's loop stops hopeless trials itself
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SpecError(
            f"{spec.where}: study {spec.name!r} exists in the storage with other directions "
            f"({exc}); give this run another study.name or --storage"
        ) from None
    record_setup(study, session, fix="give this run another study.name or --storage")
    return study


def record_setup(study: optuna.Study, session: Session, *, fix: str) -> None:
    """Store how quantuna measures the study (mode, objectives, metric names, the spec's path) on
    its first use; on a later one, check that the session measures it the same way (an error
    ends with ``fix``, what the caller can do about it).

    Raises:
        SpecError: the study's directions or stored setup differ from the session's.
    """
    spec = session.spec
    directions = [d.name.lower() for d in study.directions]
    if directions != session.directions:
        raise SpecError(
            f"{spec.where}: study {study.study_name!r} has directions {directions}, the spec's "
            f"{session.mode} mode with objectives {session.objective_names} needs "
            f"{session.directions}; {fix}"
        )
    setup = {"mode": session.mode, "objectives": session.objective_names}
    stored = study.user_attrs.get(attrs.SETUP)
    if stored is None:
        reserve_glance(study)  # first in the dashboard's study attrs table, filled in at the end
        study.set_user_attr(attrs.SETUP, {**setup, "higher_is_better": session.higher_is_better})
        with experimental_quiet():
            study.set_metric_names(session.metric_names)
    elif {k: stored.get(k) for k in setup} != setup:
        raise SpecError(
            f"{spec.where}: study {study.study_name!r} was created with {stored}, this run asks "
            f"for {setup}; {fix}"
        )
    if spec.path is not None and attrs.SPEC_PATH not in study.user_attrs:
        study.set_user_attr(attrs.SPEC_PATH, str(spec.path))


def run_study(
    spec: SpecSource,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    mode: str | None = None,
    storage: str | None = None,
    callbacks: Sequence[Callback] = (),
    eval_func: Callable[[Any], float] | None = None,
    objectives: Sequence[Any] | None = None,
    on_ready: Callable[[optuna.Study, int], None] | None = None,
    calibration: Any = None,
    evaluation: Any = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    on_lock_wait: LockWaitHook | None = None,
    confirm: bool = True,
) -> TuneResult:
    """Run (or resume) the study a spec describes until its trial budget is spent, or until
    every distinct config of its space has a finished trial (it says so, on the
    ``quantuna.phase`` logger: configs, trials spent, budget left unused).

    Args:
        spec: a spec path, mapping or ``StudySpec``.
        n_trials: the study's total trial budget (default ``tuning.exit_policy.max_trials``);
            finished trials of an earlier run count, so a second run resumes.
        timeout: stop starting new trials after this many seconds (default: the spec's, 0 = none).
        mode: ``pareto`` or ``weighted``, overriding ``tuning.mode``.
        storage: an Optuna storage URL overriding the spec's.
        callbacks: Optuna callbacks called after each trial (the CLI's progress bar is one).
        eval_func: ``eval_func(onnx.ModelProto) -> float`` replacing the spec's metric.
        objectives: objective instances or names replacing the spec's objectives.
        on_ready: called with the study and the number of trials about to run (not called
            when the space is already exhausted: the run says so instead).
        calibration: batches replacing the spec's calibration data.
        evaluation: ``(batch, labels)`` pairs replacing the spec's evaluation data.
        sampler: an Optuna sampler instance replacing the spec's ``study.sampler`` (wrapped by
            the distinct-config guard; it is not reseeded per worker).
        on_lock_wait: called with the holder (``pid N, study S``) when a trial starts waiting
            for the per-host latency lock, and with None when it has it (a progress bar).
        confirm: run the confirm phase at the end (``measure.confirm``; workers of ``--jobs``
            leave it to the parent).

    Returns:
        A :class:`TuneResult` with the study, the baseline and the feasible Pareto trials.

    Raises:
        SpecError: the spec, model or data is invalid (checked before any calibration).
    """
    check_budget(n_trials, timeout)
    spec = load_spec(spec, storage=storage)
    with phase("checking the spec, the model and the data"):
        session = prepare(spec, mode=mode, eval_func=eval_func, objectives=objectives,
                          calibration=calibration, evaluation=evaluation)
    if session.timing is not None and on_lock_wait is not None:
        session = replace(session, timing=replace(session.timing, on_wait=on_lock_wait))
    check_writable_dir(spec.workdir, where=f"{spec.where}: the study's folder")  # before the study
    check_own_dir(spec.workdir, where=f"{spec.where}: the study's folder")
    database = sqlite_file(spec.storage)
    if database is not None:
        check_writable_dir(database.parent, where=f"{spec.where}: study.storage")
    study = open_study(session, sampler=sampler)
    spec.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # caches: the user's alone
    record_preparation(study, session)
    baseline = ensure_baseline(study, session)
    with phase("ranking node sensitivity") if spec.space.exclude_sensitive_nodes else nullcontext():
        session = ensure_sensitivity(study, session)
    study.sampler = worker_sampler(session, spec.study.seed, sampler)  # the space with its node knobs
    budget = n_trials if n_trials is not None else spec.tuning.exit_policy.max_trials
    spent = count_spent(study)
    remaining = max(0, budget - spent)
    watch = SpaceWatch(session.space, budget)
    exhausted = bool(remaining) and watch.exhausted(study, spent)
    if exhausted:  # a resumed study with nothing new to try
        announce(watch.line(spent))
    else:
        enqueue_warm_start(study, session, remaining)
        if on_ready is not None:
            on_ready(study, remaining)
    if remaining and not exhausted:
        limit = (timeout if timeout is not None else spec.tuning.exit_policy.timeout) or None
        _optimize(study, session, baseline, (budget, remaining, watch), limit, callbacks)
    result = collect_results(study, session)
    if confirm:
        result = confirm_front(study, session, result)
    write_study_note(result)
    return result


def check_budget(n_trials: int | None, timeout: float | None) -> None:
    """Refuse a trial budget below 0 or a timeout that is not a number of seconds >= 0."""
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int)
                                 or n_trials < 0):
        raise SpecError(f"n_trials: {str(n_trials)[:40]} is not a whole number >= 0")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 <= timeout < float("inf")):
        raise SpecError(f"timeout: {str(timeout)[:40]} is not a number of seconds >= 0 (0: none)")


def record_preparation(study: optuna.Study, session: Session) -> None:
    """Store what model preparation applied (once per study) and say the session's notes."""
    if session.preparation is not None and attrs.PREPARATION not in study.user_attrs:
        study.set_user_attr(attrs.PREPARATION,
                            {**session.preparation.provenance(), "notes": list(session.notes)})
    for note in session.notes:
        logger.warning("%s", note)


def _optimize(study: optuna.Study, session: Session, baseline: dict[str, Any],
              plan: tuple[int, int, SpaceWatch], limit: float | None,
              callbacks: Sequence[Callback]) -> None:
    budget, remaining, watch = plan

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        spent = count_spent(study)  # other workers count toward the same budget
        if spent >= budget:
            study.stop()
        elif watch.after_trial(study, trial, spent):
            study.stop()
            announce(watch.line(spent))

    interrupt = Interrupt()
    with interrupt.installed():
        study.optimize(
            interrupt.wrap(make_objective(study, session, baseline)),
            n_trials=remaining,
            timeout=limit,
            catch=(TrialError,),
            callbacks=[stop, interrupt.callback, *callbacks],
            gc_after_trial=False,
        )
    if interrupt.requested:
        raise KeyboardInterrupt


def load_results(spec: SpecSource | optuna.Study, study_spec: SpecSource | None = None, *,
                 storage: str | None = None, mode: str | None = None,
                 cpu: str | None = None) -> TuneResult:
    """Read a study's results without running a trial (for pick, export, apply, show, report).

    Args:
        spec: a spec (its study is opened from the spec's storage), or an ``optuna.Study`` you
            made and ran with :class:`quantuna.StudyObjective`.
        study_spec: with a study, its spec (default: the spec path kept in the study's
            ``spec`` user attr).
        storage: an Optuna storage URL overriding the spec's (a spec only).
        mode: ``pareto`` or ``weighted`` (default: the mode the study was made with).
        cpu: the CPU whose trials the front and the pick compare (an id or a part of its label,
            as the summary names them); default: the rule of :mod:`quantuna.study.cpus`.

    Nothing is created: a missing SQLite file or study is a :class:`SpecError`.

    Raises:
        SpecError: no such study, no trial yet, or a study made another way than the spec says.

    Example:
        >>> result = quantuna.load_results(study)  # doctest: +SKIP
        >>> result.best().config.to_yaml()  # doctest: +SKIP
    """
    if isinstance(spec, optuna.Study):
        return _results_of_study(spec, study_spec, mode, cpu)
    spec = load_spec(spec, storage=storage)
    require_existing(spec.storage, where=spec.where)
    opened = make_storage(spec.storage)  # once: its study's mode is read before the session
    session = prepare(spec, mode=mode or _stored_mode(spec, opened))
    study = open_study(session, storage=opened)
    if attrs.BASELINE not in study.user_attrs:
        raise SpecError(f"{spec.where}: study {spec.name!r} has no trial yet; run `quantuna run` first")
    return collect_results(study, session, cpu)


def _results_of_study(study: optuna.Study, spec: SpecSource | None, mode: str | None,
                      cpu: str | None) -> TuneResult:
    if spec is None:
        spec = study.user_attrs.get(attrs.SPEC_PATH)
        if spec is None:
            raise SpecError(
                f"study {study.study_name!r} keeps no spec path (it was made from a mapping or "
                "not by quantuna): pass the spec, load_results(study, spec)"
            )
    loaded = load_spec(spec)
    session = prepare(loaded, mode=mode or (study.user_attrs.get(attrs.SETUP) or {}).get("mode"))
    record_setup(study, session, fix="pass the spec the study was made with")
    if attrs.BASELINE not in study.user_attrs:
        raise SpecError(f"{loaded.where}: study {study.study_name!r} has no quantuna trial yet")
    return collect_results(study, as_the_users_study(session, study), cpu)


def as_the_users_study(session: Session, study: optuna.Study) -> Session:
    """The session with the name and storage of a study the user made (the summary and the
    export's provenance name it, not the spec's own study)."""
    url = storage_url(study) or f"{type(study_storage(study)).__name__.lstrip('_')} (not a URL)"
    return replace(session, spec=replace(session.spec, name=study.study_name, storage=url))


def _stored_mode(spec: StudySpec, storage: optuna.storages.BaseStorage) -> str | None:
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        raise SpecError(
            f"{spec.where}: no study {spec.name!r} in {redact_url(spec.storage)}; "
            "run `quantuna run` first"
        ) from None
    return (study.user_attrs.get(attrs.SETUP) or {}).get("mode")
