"""Every private API of optuna and optuna-dashboard quantuna relies on, in one place.

- ids and internals of studies and trials (``_storage``, ``_study_id``, ``_trial_id``,
  ``_stop_flag``, the per-trial read ``_get_trials(use_cache=True)`` that
  :func:`trials_of_this_trial` and :func:`sharing_trial_read` share; :func:`study_view` replaces
  ``_get_trials`` with one read already made; :func:`prime_trial_read` starts it from
  ``_CachedStorage._studies`` under its ``_lock`` and :func:`share_trial_read` replaces it, both
  through ``Study._thread_local.cached_all_trials``), and the RDB storage behind Optuna's cache
  (``_CachedStorage._backend``; :func:`count_rdb_trials` counts with ``optuna.storages._rdb``'s
  models and ``_create_scoped_session``);
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

The code is in :mod:`quantuna._compat.internals` (studies, trials, storages, the dashboard) and
:mod:`quantuna._compat.trial_writes` (a trial's writes); this package re-exports it.

Each function here has a test in ``tests/unit/test_compat.py`` that fails loudly (never a silent
no-op) when a new release moves or renames what it reaches for; ``pyproject.toml`` pins the upper
bounds of both packages. Nothing else in quantuna may use a name that starts with ``_`` from
optuna or optuna_dashboard (``tests/unit/test_layering.py`` checks it).
"""

from quantuna._compat.internals import (
    HEARTBEAT_ATTR,
    BaseHeartbeat,
    HeartbeatJournalStorage,
    count_rdb_trials,
    experimental_quiet,
    feasible_best_trials,
    prime_trial_read,
    share_trial_read,
    sharing_trial_read,
    stop_requested,
    storage_url,
    study_id,
    study_storage,
    study_view,
    trial_id,
    trials_of_this_trial,
)
from quantuna._compat.trial_writes import (
    deferred_user_attrs,
    set_attrs_now,
    set_constraint,
    set_legacy_constraints,
    set_user_attrs,
)

__all__ = [
    "HEARTBEAT_ATTR",
    "BaseHeartbeat",
    "HeartbeatJournalStorage",
    "count_rdb_trials",
    "deferred_user_attrs",
    "experimental_quiet",
    "feasible_best_trials",
    "prime_trial_read",
    "set_attrs_now",
    "set_constraint",
    "set_legacy_constraints",
    "set_user_attrs",
    "share_trial_read",
    "sharing_trial_read",
    "stop_requested",
    "storage_url",
    "study_id",
    "study_storage",
    "study_view",
    "trial_id",
    "trials_of_this_trial",
]
