"""Every private API of optuna and optuna-dashboard quantuna relies on, in one place.

- ids and internals of studies and trials (``_storage``, ``_study_id``, ``_trial_id``,
  ``_stop_flag``, the per-trial read ``_get_trials(use_cache=True)``), and the RDB storage behind Optuna's cache (``_CachedStorage._backend``);
- :class:`HeartbeatJournalStorage`: Optuna's journal storage with the heartbeat protocol of
  ``optuna.storages._heartbeat.BaseHeartbeat`` (its private ``_get_stale_trial_ids`` hook);
- :func:`feasible_best_trials`: optuna-dashboard's ``_app.get_pareto_front_trials``;
- :func:`set_user_attrs`: several trial user attrs in one RDB transaction
  (``optuna.storages._rdb.storage._create_scoped_session``,
  ``RDBStorage._set_trial_attr_without_commit``, ``Trial._cached_frozen_trial``), and
  :func:`deferred_user_attrs`: a trial's attrs kept until its end, then written that way.

Each function here has a test in ``tests/unit/test_compat.py`` that fails loudly (never a silent
no-op) when a new release moves or renames what it reaches for; ``pyproject.toml`` pins the upper
bounds of both packages. Nothing else in quantuna may use a name that starts with ``_`` from
optuna or optuna_dashboard (``tests/unit/test_layering.py`` checks it).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the base RDBStorage's heartbeat uses
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

HEARTBEAT_ATTR = "quantuna:heartbeat"

__all__ = [
    "HeartbeatJournalStorage",
    "deferred_user_attrs",
    "experimental_quiet",
    "feasible_best_trials",
    "set_legacy_constraints",
    "set_user_attrs",
    "stop_requested",
    "storage_url",
    "study_id",
    "study_storage",
    "trial_id",
    "trials_of_this_trial",
]


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


def stop_requested(study: optuna.Study) -> bool:
    """True once ``study.stop()`` was called in this process's optimize loop (``_stop_flag``)."""
    return bool(study._stop_flag)


def set_legacy_constraints(trial: optuna.Trial, values: list[float]) -> None:
    """Write the ``constraints`` trial system attr that optuna-dashboard 0.21 reads.

    Optuna 5's ``trial.set_constraint`` stores named constraints; the dashboard's Pareto chart,
    timeline and infeasible filter read only this legacy list.
    """
    study_storage(trial.study).set_trial_system_attr(trial_id(trial), "constraints", values)


def set_user_attrs(trial: optuna.Trial, values: dict[str, Any], *, now: bool = False) -> None:
    """``trial.set_user_attr`` for each item, in one storage transaction when the study's storage
    is an ``RDBStorage`` (one commit instead of one per attr: each is a disk sync or a network
    round trip); other storages get one call per attr. The names stay flat, as the dashboard
    shows them. Inside :func:`deferred_user_attrs` they wait for the block's end, unless ``now``
    (what other workers must see while the trial runs)."""
    if not values:
        return
    if not now and _DEFERRED in vars(trial):
        for key, value in values.items():
            trial.set_user_attr(key, value)
        return
    storage = study_storage(trial.study)
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        for key, value in values.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for key, value in values.items():
            backend._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial._trial_id, key, value)
    trial._cached_frozen_trial.user_attrs.update(values)


_DEFERRED = "set_user_attr"  # the instance attribute that shadows Trial.set_user_attr


@contextlib.contextmanager
def deferred_user_attrs(trial: optuna.Trial) -> Iterator[None]:
    """Inside the block, ``trial.set_user_attr`` and :func:`set_user_attrs` keep the attrs in
    memory (the trial's own ``user_attrs`` show them at once) and the block's end writes them all
    in one transaction, also when it raises: one commit per trial instead of one per attr. Only
    the trial's own process sees them before that (the claim and the config key, which other
    workers read, are written at once)."""
    pending: dict[str, Any] = {}

    def keep(key: str, value: Any) -> None:
        pending[key] = value
        trial._cached_frozen_trial.user_attrs[key] = value

    setattr(trial, _DEFERRED, keep)
    try:
        yield
    finally:
        delattr(trial, _DEFERRED)
        set_user_attrs(trial, pending)


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
