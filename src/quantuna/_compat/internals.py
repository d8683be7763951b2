"""Optuna's study, trial and storage internals quantuna reaches for (see :mod:`quantuna._compat`):
ids, the per-trial read, the RDB storage's COUNT of spent trials, the journal storage's heartbeat,
optuna-dashboard's Pareto front."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the base RDBStorage's heartbeat uses
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

HEARTBEAT_ATTR = "quantuna:heartbeat"


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object of a study (Optuna keeps it as ``Study._storage``)."""
    return study._storage


def storage_url(study: optuna.Study) -> str | None:
    """The URL of a study's RDB storage (``Study._storage``, a ``_CachedStorage`` whose
    ``_backend`` is the ``RDBStorage``), or None for other storages."""
    storage = study_storage(study)
    backend = getattr(storage, "_backend", storage)
    url = getattr(backend, "url", None) if isinstance(backend, optuna.storages.RDBStorage) else None
    return str(url) if url is not None else None


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study (``Study._study_id``)."""
    return study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (``Trial._trial_id`` / ``FrozenTrial._trial_id``)."""
    return trial._trial_id


def trials_of_this_trial(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """The study's trials in ``states`` from Optuna's per-trial read (``Study._get_trials`` with
    ``use_cache``: one storage read after each ``ask``, shared with TPE's), not a read of its own."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def prime_trial_read(study: optuna.Study, trial: FrozenTrial) -> None:
    """Start a new trial's shared read (:func:`trials_of_this_trial`) from what its ``ask`` has
    just read (``ask`` reads the study's trials to pop a waiting one; Optuna's ``_CachedStorage``
    keeps them) plus the trial itself, instead of the second read the trial's first lookup would
    make. Trials other workers wrote in between are seen by the measurement claim's read. A
    no-op for another storage class or a study subclass (Hyperband's bracket study)."""
    storage = study_storage(study)
    if type(study) is not optuna.Study or not isinstance(storage, optuna.storages._CachedStorage):
        return
    with storage._lock:
        info = storage._studies.get(study_id(study))
        if info is None:
            return
        trials = dict(info.trials)
    trials[trial.number] = trial
    study._thread_local.cached_all_trials = [trials[n] for n in sorted(trials)]


def share_trial_read(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """Make ``trials`` (a fresh ``get_trials(deepcopy=False)``) this trial's shared read: what
    :func:`trials_of_this_trial` returns until Optuna's next ``ask`` or ``tell`` clears it."""
    study._thread_local.cached_all_trials = trials


def study_view(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """A shallow copy of ``study`` whose trial reads return ``trials`` (one read already made),
    filtered by state as Optuna filters them."""
    view = copy.copy(study)

    def _get_trials(deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> Any:
        chosen = [t for t in trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    view._get_trials = _get_trials  # type: ignore[method-assign]
    return view


def sharing_trial_read(study: optuna.Study) -> optuna.Study:
    """``study`` as Optuna's per-trial read saw it (:func:`trials_of_this_trial`), for the base
    sampler's proposal: TPE's search-space inference reads the storage again otherwise."""
    return study_view(study, trials_of_this_trial(study, tuple(TrialState)))


def stop_requested(study: optuna.Study) -> bool:
    """True once ``study.stop()`` was called in this process's optimize loop (``_stop_flag``)."""
    return bool(study._stop_flag)



@contextlib.contextmanager
def experimental_quiet() -> Iterator[None]:
    """Optuna's ``ExperimentalWarning`` silenced for features quantuna chose on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def feasible_best_trials(storage: Any) -> None:
    """Make optuna-dashboard's "Best Trials" honour the trials' constraints.

    optuna-dashboard 0.21 computes them without constraints (its Pareto chart and infeasible
    filter do read the legacy ``constraints`` attribute). It offers no extension point for this,
    so its module-level ``_app.get_pareto_front_trials`` is narrowed to feasible trials, and
    ``storage`` gets a ``get_best_trial`` that prefers the best feasible trial. A study without
    constraints is unchanged.

    Raises:
        RuntimeError: this optuna-dashboard has no such function (the pin is wrong).
    """
    from optuna_dashboard import _app

    original = getattr(_app, "get_pareto_front_trials", None)
    if original is None:
        raise RuntimeError("optuna_dashboard._app.get_pareto_front_trials is gone: update _compat")
    if not getattr(original, "quantuna_feasible", False):

        def feasible_front(trials: Any, directions: Any) -> Any:
            return original([t for t in trials if _is_feasible(t)], directions)

        feasible_front.quantuna_feasible = True  # type: ignore[attr-defined]
        _app.get_pareto_front_trials = feasible_front
    storage.get_best_trial = _feasible_best(storage, storage.get_best_trial)


def _feasible_best(storage: Any, unconstrained: Callable[[int], Any]) -> Callable[[int], Any]:
    def get_best_trial(study_id: int) -> optuna.trial.FrozenTrial:
        complete = storage.get_all_trials(
            study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        )
        feasible = [t for t in complete if _is_feasible(t)]
        directions = storage.get_study_directions(study_id)
        if not feasible or len(directions) != 1:
            return unconstrained(study_id)
        sign = 1 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
        return max(feasible, key=lambda t: (sign * t.value, -t.number))

    return get_best_trial


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's ``JournalStorage`` with the heartbeat ``RDBStorage`` has.

    Optuna's optimize loop records a heartbeat for the running trial every ``heartbeat_interval``
    seconds and, before each trial, fails the running trials whose heartbeat is older than
    ``grace_period`` and hands them to ``stale_trial_callback`` (a retry). The heartbeat is the
    trial system attr ``quantuna:heartbeat`` = ``[trial_id, redis server time]``; a trial that
    never beat is never stale (as in ``RDBStorage``).
    """

    def __init__(
        self,
        backend: Any,
        *,
        clock: Any,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def _now(self) -> float:
        seconds, micros = self._clock.time()
        return float(seconds) + micros / 1e6

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, [trial_id, self._now()])
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # another worker already failed it as stale

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = self._now()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            # a retried trial inherits its predecessor's attrs: only its own beat counts
            if beat and beat[0] == t._trial_id and now - beat[1] > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_trial_callback


def count_rdb_trials(storage: BaseStorage, study: optuna.Study,
                     states: tuple[TrialState, ...], failed_with_attr: str) -> int | None:
    """One ``COUNT`` statement on the RDB storage behind ``storage``: the study's trials in
    ``states``, plus its failed trials that have the user attr ``failed_with_attr``
    (``optuna.storages._rdb``'s models and ``_create_scoped_session``); None for another
    storage (the caller counts over ``get_trials``)."""
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import and_, exists, func, or_, select

    trial, attr = models.TrialModel, models.TrialUserAttributeModel
    reason = exists().where(and_(attr.trial_id == trial.trial_id, attr.key == failed_with_attr))
    query = select(func.count()).select_from(trial).where(
        trial.study_id == study_id(study),
        or_(trial.state.in_(list(states)), and_(trial.state == TrialState.FAIL, reason)))
    with _create_scoped_session(backend.scoped_session) as session:
        return int(session.execute(query).scalar_one())
