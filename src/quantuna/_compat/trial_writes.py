"""Trial writes in one transaction (see :mod:`quantuna._compat`): user and system attrs, the
constraint and the params of a trial, on the RDB storage behind Optuna's cache."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from quantuna._compat.internals import study_storage, trial_id, trials_of_this_trial

if TYPE_CHECKING:
    from optuna.storages import BaseStorage


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


def set_attrs_now(trial: optuna.Trial, user: dict[str, Any], system: dict[str, Any]) -> None:
    """User and system attrs (and the trial's pending params) written at once, in one
    transaction on an ``RDBStorage``, also inside :func:`deferred_user_attrs`."""
    deferred: _Deferred | None = vars(trial).get(_DEFERRED)
    _write_attrs(trial, user, system, deferred.take_params() if deferred is not None else [])


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
