"""Every private API of optuna and optuna-dashboard quantuna relies on, in one place.

- ids and internals of studies and trials (``_storage``, ``_study_id``, ``_trial_id``,
  ``_stop_flag``, the per-trial read ``_get_trials(use_cache=True)`` that
  :func:`trials_of_this_trial` and :func:`sharing_trial_read` share; :func:`study_view` replaces
  ``_get_trials`` with one read already made), and the RDB storage behind
  Optuna's cache (``_CachedStorage._backend``);
- :class:`HeartbeatJournalStorage`: Optuna's journal storage with the heartbeat protocol of
  ``optuna.storages._heartbeat.BaseHeartbeat`` (its private ``_get_stale_trial_ids`` hook);
- :func:`feasible_best_trials`: optuna-dashboard's ``_app.get_pareto_front_trials``;
- :func:`set_user_attrs`: several trial user attrs in one RDB transaction
  (``optuna.storages._rdb.storage._create_scoped_session``,
  ``RDBStorage._set_trial_attr_without_commit``, ``Trial._cached_frozen_trial``), and
  :func:`deferred_user_attrs`: a trial's attrs kept until its end, then written that way, with
  its constraint (:func:`set_constraint`: ``optuna.study._constrained_optimization._CONSTRAINTS_KEY``),
  on SQLite and PostgreSQL as one upsert per attr table (``optuna.storages._rdb.models``'
  ``TrialModel.find_or_raise_by_id``, ``TrialUserAttributeModel``, ``TrialSystemAttributeModel``),
  and its params (``Trial._suggest`` writes them through the trial's ``storage`` attribute; one
  insert of ``TrialParamModel`` rows).

Each function here has a test in ``tests/unit/test_compat.py`` that fails loudly (never a silent
no-op) when a new release moves or renames what it reaches for; ``pyproject.toml`` pins the upper
bounds of both packages. Nothing else in quantuna may use a name that starts with ``_`` from
optuna or optuna_dashboard (``tests/unit/test_layering.py`` checks it).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
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
    "set_constraint",
    "set_legacy_constraints",
    "set_user_attrs",
    "sharing_trial_read",
    "stop_requested",
    "storage_url",
    "study_id",
    "study_storage",
    "study_view",
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
    deferred: _Deferred | None = vars(trial).get(_DEFERRED)
    if deferred is not None and not now:
        deferred.user.update(values)
        trial._cached_frozen_trial.user_attrs.update(values)
        return
    _write_attrs(trial, values, {}, deferred.take_params() if deferred is not None else [])


def set_constraint(trial: optuna.Trial, name: str, value: float) -> None:
    """``trial.set_constraint(name, value)`` (Optuna 5's named constraint, the system attr
    ``constraints:<name>``) and the legacy list the dashboard reads (:func:`set_legacy_constraints`);
    inside :func:`deferred_user_attrs`, written with the trial's attrs at the block's end."""
    deferred: _Deferred | None = vars(trial).get(_DEFERRED)
    if deferred is None:
        trial.set_constraint(name, value)
        set_legacy_constraints(trial, [value])
        return
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    value = float(value)
    if math.isnan(value):
        raise ValueError(f"Attempted to set a constraint for {name!r}, but NaN is not allowed.")
    system = {f"{_CONSTRAINTS_KEY}:{name}": value, "constraints": [value]}
    deferred.system.update(system)
    trial._cached_frozen_trial.system_attrs.update(system)


Param = tuple[str, float, Any]  # name, internal value, distribution


def _write_attrs(trial: optuna.Trial, user: dict[str, Any], system: dict[str, Any],
                 params: Sequence[Param] = ()) -> None:
    storage = study_storage(trial.study)
    backend = getattr(storage, "_backend", storage)
    bulk = isinstance(backend, optuna.storages.RDBStorage) and _bulk_dialect(backend)
    if not bulk:
        for name, value, distribution in params:
            storage.set_trial_param(trial._trial_id, name, value, distribution)
    if not isinstance(backend, optuna.storages.RDBStorage):
        for key, value in user.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        for key, value in system.items():
            storage.set_trial_system_attr(trial._trial_id, key, value)
    elif user or system or (bulk and params):
        _check_params(trial, params if bulk else ())
        _write_rdb_attrs(backend, trial._trial_id, user, system, params if bulk else ())
    trial._cached_frozen_trial.user_attrs.update(user)
    trial._cached_frozen_trial.system_attrs.update(system)


def _bulk_dialect(backend: optuna.storages.RDBStorage) -> bool:
    import sqlite3

    dialect = backend.engine.name
    return dialect == "postgresql" or (dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0))


def _write_rdb_attrs(backend: optuna.storages.RDBStorage, trial_id: int, user: dict[str, Any],
                     system: dict[str, Any], params: Sequence[Param] = ()) -> None:
    """One transaction; on SQLite and PostgreSQL one upsert statement per table (the trial
    checked once) and one insert of the params (checked first: :func:`_check_params`), else ``RDBStorage._set_trial_attr_without_commit``
    per attr (a lookup of the trial and an upsert each: two statements per attr)."""
    import json

    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    tables = ((models.TrialUserAttributeModel, user), (models.TrialSystemAttributeModel, system))
    dialect = backend.engine.name
    with _create_scoped_session(backend.scoped_session, True) as session:
        if not _bulk_dialect(backend):
            for model, values in tables:
                for key, value in values.items():
                    backend._set_trial_attr_without_commit(session, model, trial_id, key, value)
            return
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.dialects import sqlite as sqlite_dialect

        insert = postgresql.insert if dialect == "postgresql" else sqlite_dialect.insert
        row = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, row.state)  # type: ignore[arg-type]
        session.add_all([models.TrialParamModel(
            trial_id=trial_id, param_name=name, param_value=value,
            distribution_json=distribution_to_json(distribution)) for name, value, distribution in params])
        for model, values in tables:
            if values:
                stmt = insert(model).values([{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                             for k, v in values.items()])
                session.execute(stmt.on_conflict_do_update(
                    index_elements=[model.trial_id, model.key],
                    set_={"value_json": stmt.excluded.value_json}))


def _check_params(trial: optuna.Trial, params: Sequence[Param]) -> None:
    """What ``set_trial_param`` checks (a name keeps its distribution in a study), against the
    trials of this trial's read (:func:`trials_of_this_trial`), not a query per param."""
    from optuna.distributions import check_distribution_compatibility

    pending = {name: distribution for name, _, distribution in params}
    for other in trials_of_this_trial(trial.study, tuple(TrialState)):
        for name in [n for n in pending if n in other.distributions]:
            check_distribution_compatibility(other.distributions[name], pending.pop(name))
        if not pending:
            return


_DEFERRED = "_quantuna_deferred"  # the trial's instance attribute while its attrs wait


class _Deferred:
    """What a trial has set and not written yet; as its ``storage``, the params of its suggest
    calls (``Trial._suggest``) and the system attrs written through it (an artifact's record)."""

    def __init__(self, storage: BaseStorage) -> None:
        self.storage = storage
        self.user: dict[str, Any] = {}
        self.system: dict[str, Any] = {}
        self.params: list[Param] = []

    def set_trial_param(self, trial_id: int, name: str, value: float, distribution: Any) -> None:
        self.params.append((name, value, distribution))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.system[key] = value  # an artifact's record (optuna.artifacts.upload_artifact)

    def take_params(self) -> list[Param]:
        params, self.params = self.params, []
        return params

    def __getattr__(self, name: str) -> Any:  # every other call goes to the storage
        return getattr(self.storage, name)


@contextlib.contextmanager
def deferred_user_attrs(trial: optuna.Trial) -> Iterator[None]:
    """Inside the block, ``trial.set_user_attr``, :func:`set_user_attrs` and :func:`set_constraint`
    keep what they set in memory (the trial itself sees it at once) and the block's end writes it
    all in one transaction, also when the block raises: one commit per trial instead of one per
    attr. Only the trial's own process sees them before that (the claim and the config key,
    which other workers read, are written at once). The params of its ``suggest`` calls wait
    for the next ``set_user_attrs(..., now=True)``: the config key goes with the params that
    made it, in one insert instead of a transaction per knob."""
    deferred = _Deferred(trial.storage)

    def keep(key: str, value: Any) -> None:
        set_user_attrs(trial, {key: value})

    setattr(trial, _DEFERRED, deferred)
    trial.set_user_attr = keep  # type: ignore[method-assign]
    trial.storage = deferred  # type: ignore[assignment]
    try:
        yield
    finally:
        trial.storage = deferred.storage
        delattr(trial, "set_user_attr")
        delattr(trial, _DEFERRED)
        _write_attrs(trial, deferred.user, deferred.system, deferred.take_params())


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
