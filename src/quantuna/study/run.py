"""``run_study()``: a spec's study opened, prepared once (baseline, sensitivity, warm start) and
run until its budget is spent; ``load_results()`` reads it back without running a trial."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from quantuna._compat import experimental_quiet
from quantuna.errors import SpecError, TrialError
from quantuna.results import TuneResult, collect_results
from quantuna.spec import StudySpec, load_spec, redact_url
from quantuna.study import attrs
from quantuna.study.artifacts import write_study_note
from quantuna.study.baseline import ensure_baseline
from quantuna.study.interrupt import Interrupt
from quantuna.study.sampler import WorkerSampler, make_sampler
from quantuna.study.sensitivity import enqueue_warm_start, ensure_sensitivity
from quantuna.study.session import Session, prepare
from quantuna.study.storage import make_storage
from quantuna.study.trial import make_objective

logger = logging.getLogger(__name__)
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
SpecSource = str | Path | dict[str, Any] | StudySpec


def worker_sampler(session: Session, seed: int | None) -> WorkerSampler:
    """The spec's sampler over ``session.space``, seeded per worker from its first trial."""
    build = functools.partial(make_sampler, session.spec.study.sampler, space=session.space)
    return WorkerSampler(build, seed)


def open_study(session: Session, *, sampler_seed: int | None = None) -> optuna.Study:
    """Create or load the spec's study, checking that an existing one was made the same way."""
    spec = session.spec
    seed = spec.study.seed if sampler_seed is None else sampler_seed
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=make_storage(spec.storage),
            directions=session.directions,
            sampler=worker_sampler(session, seed),
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SpecError(
            f"{spec.where}: study {spec.name!r} exists in the storage with other directions "
            f"({exc}); give this run another study.name or --storage"
        ) from None
    setup = {"mode": session.mode, "objectives": session.objective_names}
    stored = study.user_attrs.get(attrs.SETUP)
    if stored is None:
        study.set_user_attr(attrs.SETUP, {**setup, "higher_is_better": session.higher_is_better})
        with experimental_quiet():
            study.set_metric_names(session.metric_names)
    elif {k: stored.get(k) for k in setup} != setup:
        raise SpecError(
            f"{spec.where}: study {spec.name!r} was created with {stored}, this run asks for "
            f"{setup}; give this run another study.name or --storage"
        )
    return study


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
) -> TuneResult:
    """Run (or resume) the study a spec describes until its trial budget is spent.

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
        on_ready: called with the study and the number of trials about to run.
        calibration: batches replacing the spec's calibration data.
        evaluation: ``(batch, labels)`` pairs replacing the spec's evaluation data.

    Returns:
        A :class:`TuneResult` with the study, the baseline and the feasible Pareto trials.

    Raises:
        SpecError: the spec, model or data is invalid (checked before any calibration).
    """
    spec = load_spec(spec, storage=storage)
    session = prepare(spec, mode=mode, eval_func=eval_func, objectives=objectives,
                      calibration=calibration, evaluation=evaluation)
    study = open_study(session)
    record_preparation(study, session)
    baseline = ensure_baseline(study, session)
    session = ensure_sensitivity(study, session)
    study.sampler = worker_sampler(session, spec.study.seed)  # the space with its node knobs
    budget = n_trials if n_trials is not None else spec.tuning.exit_policy.max_trials
    remaining = max(0, budget - attrs.count_spent(study))
    enqueue_warm_start(study, session)
    if on_ready is not None:
        on_ready(study, remaining)
    if remaining:
        limit = timeout if timeout is not None else (spec.tuning.exit_policy.timeout or None)
        _optimize(study, session, baseline, budget, remaining, limit, callbacks)
    result = collect_results(study, session)
    write_study_note(result)
    return result


def record_preparation(study: optuna.Study, session: Session) -> None:
    """Store what model preparation applied (once per study) and say the session's notes."""
    if session.preparation is not None and attrs.PREPARATION not in study.user_attrs:
        study.set_user_attr(attrs.PREPARATION,
                            {**session.preparation.provenance(), "notes": list(session.notes)})
    for note in session.notes:
        logger.warning("%s", note)


def _optimize(study: optuna.Study, session: Session, baseline: dict[str, Any], budget: int,
              remaining: int, limit: float | None, callbacks: Sequence[Callback]) -> None:
    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if attrs.count_spent(study) >= budget:  # other workers count toward the same budget
            study.stop()

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


def load_results(spec: SpecSource, *, storage: str | None = None,
                 mode: str | None = None) -> TuneResult:
    """Open a spec's existing study without running a trial (for export, show, report)."""
    spec = load_spec(spec, storage=storage)
    session = prepare(spec, mode=mode or _stored_mode(spec))
    study = open_study(session)
    if attrs.BASELINE not in study.user_attrs:
        raise SpecError(f"{spec.where}: study {spec.name!r} has no trial yet; run `quantuna run` first")
    return collect_results(study, session)


def _stored_mode(spec: StudySpec) -> str | None:
    try:
        study = optuna.load_study(study_name=spec.name, storage=make_storage(spec.storage))
    except KeyError:
        raise SpecError(
            f"{spec.where}: no study {spec.name!r} in {redact_url(spec.storage)}; "
            "run `quantuna run` first"
        ) from None
    return (study.user_attrs.get(attrs.SETUP) or {}).get("mode")
