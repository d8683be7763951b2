"""``StudyObjective``: quantuna's trial as the objective of a study you made yourself.

``quantuna run`` makes its own study and runs its own loop. A :class:`StudyObjective` is the same
trial (:func:`quantuna.study.trial.make_objective`: the constraint, the attrs, the range cache,
the reuse of measured configs, the early stop, the artifacts) as a callable you give to
``study.optimize``, with the sampler, pruner, storage, ``n_jobs`` and callbacks you chose.
Several processes on one storage share the baseline and the measurements as with ``quantuna run``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna

from quantuna.errors import SpecError, TrialError
from quantuna.results import TuneResult, collect_results
from quantuna.space import SearchSpace
from quantuna.spec import StudySpec, load_spec
from quantuna.study import attrs
from quantuna.study.artifacts import write_study_note
from quantuna.study.baseline import ensure_baseline
from quantuna.study.run import as_the_users_study, record_setup
from quantuna.study.sampler import DistinctSampler
from quantuna.study.sensitivity import enqueue_warm_start, ensure_sensitivity
from quantuna.study.session import Session, prepare
from quantuna.study.trial import Objective, make_objective, with_own_objectives

logger = logging.getLogger(__name__)
_FIX = ("create the study with directions=objective.directions (and the spec's mode and "
        "objectives), or use another study")


class StudyObjective:
    """The objective of your own Optuna study: every trial is a quantuna trial of ``spec``.

    Args:
        spec: a spec path, mapping or ``StudySpec`` (its ``study.storage`` and ``study.sampler``
            are not used: the study is yours).
        mode: ``pareto`` or ``weighted``, overriding ``tuning.mode``.
        eval_func: ``eval_func(onnx.ModelProto) -> float`` replacing the spec's metric.
        objectives: objective instances or names besides the spec's.
        calibration: batches replacing the spec's calibration data.
        evaluation: ``(batch, labels)`` pairs replacing the spec's evaluation data.
        warm_start: :meth:`prepare` enqueues the warm-start configs (the default int8 config,
            sensitive nodes in fp32, fp32) on a study that has no trial yet.
        catch: a config onnxruntime cannot quantize or run fails its trial (the reason in its
            ``fail_reason`` attr) and the study goes on, as in ``quantuna run``; with False the
            ``TrialError`` reaches ``study.optimize`` (which stops unless you pass ``catch``).

    Raises:
        SpecError: the spec, the model or the data is invalid (checked here, before any trial).

    Example (from the repository's root; it runs in the tests):
        >>> import optuna, quantuna
        >>> objective = quantuna.StudyObjective("studies/digits.yaml")
        >>> objective.directions
        ['maximize', 'minimize', 'minimize']
        >>> study = optuna.create_study(directions=objective.directions)
        >>> objective.prepare(study)
        >>> study.optimize(objective, n_trials=4)
        >>> quantuna.load_results(study).best().feasible
        True
    """

    def __init__(
        self,
        spec: str | Path | dict[str, Any] | StudySpec,
        *,
        mode: str | None = None,
        eval_func: Callable[[Any], float] | None = None,
        objectives: Sequence[Any] | None = None,
        calibration: Iterable[Any] | None = None,
        evaluation: Iterable[Any] | None = None,
        warm_start: bool = True,
        catch: bool = True,
    ) -> None:
        self.spec = load_spec(spec)
        self.session: Session = prepare(
            self.spec, mode=mode, eval_func=eval_func, objectives=objectives,
            calibration=None if calibration is None else list(calibration),
            evaluation=None if evaluation is None else list(evaluation),
        )
        self.warm_start = warm_start
        self.catch = catch
        self._lock = threading.Lock()
        self._studies: dict[int, tuple[optuna.Study, Session, dict[str, Any]]] = {}
        self._local = threading.local()

    @property
    def directions(self) -> list[str]:
        """The directions to create the study with (pareto: one per objective; weighted: one)."""
        return list(self.session.directions)

    @property
    def metric_names(self) -> list[str]:
        """The study's metric names with units (set on the study by :meth:`prepare`)."""
        return list(self.session.metric_names)

    @property
    def space(self) -> SearchSpace:
        """The search space (after :meth:`prepare`, with the sensitive nodes' knobs)."""
        with self._lock:
            prepared = list(self._studies.values())
        return prepared[-1][1].space if prepared else self.session.space

    def prepare(self, study: optuna.Study) -> None:
        """Make ``study`` a quantuna study before its first trial (optional: the first trial
        does it otherwise, without the warm start).

        Checks the study's directions, stores the mode, objectives, metric names and the spec's
        path, measures the fp32 baseline into the study's user attrs (once per study, whatever the
        number of workers), ranks the sensitive nodes when the spec asks for it, and enqueues the
        warm start on an empty study.

        Raises:
            SpecError: the study was made with other directions or another setup.
        """
        self._prepared(study, warm_start=self.warm_start)

    def sampler(self, base: optuna.samplers.BaseSampler, seed: int | None = None) -> DistinctSampler:
        """``base`` wrapped so that no trial repeats a config while the space has unused ones
        (what ``quantuna run`` does to the spec's sampler); optional."""
        return DistinctSampler(base, lambda: self.space, seed)

    def results(self, study: optuna.Study) -> TuneResult:
        """The study's results (pick, export, apply), read with this objective's session.

        Raises:
            SpecError: the study was made another way, or has no quantuna trial yet.
        """
        record_setup(study, self.session, fix=_FIX)
        if attrs.BASELINE not in study.user_attrs:
            raise SpecError(f"{self.spec.where}: study {study.study_name!r} has no quantuna trial yet")
        return collect_results(study, as_the_users_study(self.session, study))

    def write_note(self, study: optuna.Study) -> None:
        """Save the study's summary as its optuna-dashboard note (baseline, target, the feasible
        Pareto set, the pick), as ``quantuna run`` does at the end of a run; skipped when
        optuna-dashboard is not installed. Call it after ``study.optimize``, or from a callback."""
        write_study_note(self.results(study))

    def __call__(self, trial: optuna.Trial) -> Sequence[float] | float:
        """One quantuna trial; its Optuna values (pareto: one per objective; weighted: the score)."""
        try:
            return self._objective(trial.study)(trial)
        except TrialError as exc:
            if not self.catch:
                raise
            logger.warning("trial %d failed: %s", trial.number, exc)
            nan = float("nan")  # Optuna fails a trial that returns NaN, and goes on
            return [nan] * len(self.session.directions) if self.session.mode == "pareto" else nan

    def _prepared(self, study: optuna.Study,
                  warm_start: bool) -> tuple[optuna.Study, Session, dict[str, Any]]:
        with self._lock:
            known = self._studies.get(id(study))
            if known is not None:
                return known
            record_setup(study, self.session, fix=_FIX)
            baseline = ensure_baseline(study, self.session)
            session = ensure_sensitivity(study, self.session)
            if warm_start:
                enqueue_warm_start(study, session)
            self._studies[id(study)] = (study, session, baseline)
            return self._studies[id(study)]

    def _objective(self, study: optuna.Study) -> Objective:
        """This thread's objective function for ``study`` (objective instances are per thread:
        they collect their results while a trial measures, so ``n_jobs`` threads never share one)."""
        made: dict[int, Objective] = self._local.__dict__.setdefault("made", {})
        if id(study) not in made:
            _, session, baseline = self._prepared(study, warm_start=False)
            made[id(study)] = make_objective(study, with_own_objectives(session), baseline)
        return made[id(study)]

