"""One test per private optuna / optuna-dashboard API in ``quantuna._compat``.

Each fails loudly when a release moves what quantuna reaches for; the fix goes in ``_compat``.
"""

from __future__ import annotations

import inspect
from typing import Any

import optuna
import pytest

from quantuna import _compat


@pytest.fixture
def study() -> optuna.Study:
    return optuna.create_study(storage=optuna.storages.InMemoryStorage())


def test_study_storage_and_id(study: optuna.Study) -> None:
    storage = _compat.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert storage.get_study_id_from_name(study.study_name) == _compat.study_id(study)


def test_storage_url_of_an_rdb_study_and_none_otherwise(study: optuna.Study, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert _compat.storage_url(optuna.create_study(storage=url)) == url
    assert _compat.storage_url(study) is None


def test_trial_id_of_live_and_frozen_trials(study: optuna.Study) -> None:
    seen: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(_compat.trial_id(trial))
        return 0.0

    study.optimize(objective, n_trials=1)
    frozen = study.trials[0]
    assert _compat.trial_id(frozen) == seen[0]
    assert _compat.study_storage(study).get_trial(seen[0]).number == frozen.number


def test_stop_requested_follows_study_stop(study: optuna.Study) -> None:
    flags: list[bool] = []

    def callback(s: optuna.Study, t: Any) -> None:
        flags.append(_compat.stop_requested(s))
        s.stop()
        flags.append(_compat.stop_requested(s))

    study.optimize(lambda t: 0.0, n_trials=3, callbacks=[callback])
    assert flags == [False, True]
    assert len(study.trials) == 1


def test_legacy_constraints_are_what_the_dashboard_reads(study: optuna.Study) -> None:
    from optuna_dashboard._serializer import CONSTRAINTS_KEY

    def objective(trial: optuna.Trial) -> float:
        _compat.set_legacy_constraints(trial, [0.25])
        return 0.0

    study.optimize(objective, n_trials=1)
    assert CONSTRAINTS_KEY == "constraints"
    assert study.trials[0].system_attrs[CONSTRAINTS_KEY] == [0.25]


def test_heartbeat_base_still_has_the_hooks_the_journal_storage_fills() -> None:
    base = _compat.BaseHeartbeat
    for name in ("record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
                 "get_heartbeat_stale_trial_callback"):
        assert name in base.__dict__, f"BaseHeartbeat lost {name}: update _compat"
    assert issubclass(_compat.HeartbeatJournalStorage, base)
    assert not inspect.isabstract(_compat.HeartbeatJournalStorage)


def test_fail_stale_trials_uses_the_heartbeat_protocol() -> None:
    source = inspect.getsource(optuna.storages.fail_stale_trials)
    assert "_get_stale_trial_ids" in source, "Optuna changed how it finds stale trials"


def test_feasible_best_trials_narrows_the_dashboard_front() -> None:
    from optuna_dashboard import _app

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])

    def objective(trial: optuna.Trial) -> list[float]:
        feasible = trial.number == 0
        _compat.set_legacy_constraints(trial, [-1.0 if feasible else 1.0])
        trial.set_constraint("accuracy", -1.0 if feasible else 1.0)
        return [0.5, 2.0] if feasible else [0.9, 1.0]  # the infeasible one dominates

    study.optimize(objective, n_trials=2)
    _compat.feasible_best_trials(storage)
    front = _app.get_pareto_front_trials(study.trials, study.directions)
    assert [t.number for t in front] == [0]
    assert getattr(_app.get_pareto_front_trials, "quantuna_feasible", False)


def test_feasible_best_trial_of_a_single_objective_study() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        trial.set_constraint("accuracy", -1.0 if trial.number == 0 else 1.0)
        return float(trial.number)

    study.optimize(objective, n_trials=3)
    _compat.feasible_best_trials(storage)
    assert storage.get_best_trial(_compat.study_id(study)).number == 0


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_set_user_attrs_writes_every_attr_once_per_trial(tmp_path: Any, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'a.db'}" if kind == "sqlite" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    _compat.set_user_attrs(trial, {"config_key": "k", "values": {"accuracy": 0.5}, "feasible": True})
    _compat.set_user_attrs(trial, {"feasible": False})  # an existing attr is replaced
    want = {"config_key": "k", "values": {"accuracy": 0.5}, "feasible": False}
    assert trial.user_attrs == want  # the live trial sees them, as set_user_attr gives
    assert study.get_trials()[0].user_attrs == want  # and so does the storage
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):  # a finished trial is not updatable, as with set_user_attr
        _compat.set_user_attrs(trial, {"late": 1})


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_deferred_user_attrs_wait_for_the_block_end_even_when_it_raises(tmp_path: Any, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'a.db'}" if kind == "sqlite" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with pytest.raises(ValueError), _compat.deferred_user_attrs(trial):
        trial.set_user_attr("seconds", {"evaluate": 0.1})
        _compat.set_user_attrs(trial, {"values": {"accuracy": 0.5}})
        assert trial.suggest_categorical("types", ["U8S8", "S8S8"]) in ("U8S8", "S8S8")
        if kind == "sqlite":
            assert study.get_trials()[0].params == {}  # the param waits for the config key
        _compat.set_user_attrs(trial, {"config_key": "k"}, now=True)  # what other workers read
        assert study.get_trials()[0].params == trial.params  # written with it
        trial.suggest_categorical("reduce_range", [False, True])
        _compat.set_constraint(trial, "accuracy", 0.25)
        (tmp_path / "config.yaml").write_text("approach: fp32\n")
        store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
        optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "config.yaml"),
                                         study_or_trial=trial)
        assert trial.user_attrs == {"seconds": {"evaluate": 0.1}, "values": {"accuracy": 0.5},
                                    "config_key": "k"}  # the trial itself sees them all
        if kind == "sqlite":  # (in memory, the live trial's attrs are the storage's own dict)
            assert study.get_trials()[0].user_attrs == {"config_key": "k"}  # only now=True yet
        raise ValueError("the trial failed")
    want = {"seconds": {"evaluate": 0.1}, "values": {"accuracy": 0.5}, "config_key": "k"}
    stored = study.get_trials()[0]
    assert stored.user_attrs == want
    assert set(stored.params) == {"types", "reduce_range"}  # a late param at the block's end
    assert stored.distributions == trial.distributions
    metas = optuna.artifacts.get_all_artifact_meta(stored, storage=_compat.study_storage(study))
    assert [m.filename for m in metas] == ["config.yaml"]  # the artifact's record, at the end
    at_once = study.ask()  # the same constraint written outside the block, at once
    _compat.set_constraint(at_once, "accuracy", 0.25)
    assert stored.constraints == study.get_trials()[1].constraints  # Optuna's named constraint
    assert stored.system_attrs["constraints"] == [0.25]  # and the dashboard's list
    trial.set_user_attr("after", 1)  # outside the block, Optuna's own method again
    assert study.get_trials()[0].user_attrs == {**want, "after": 1}
    assert study.get_trials()[1].constraints["accuracy"] == 0.25
    other = study.ask()
    with pytest.raises(ValueError, match="dynamic value space"), _compat.deferred_user_attrs(other):
        other.suggest_categorical("types", ["U8U8"])  # a name keeps its choices, as in Optuna
    if kind == "sqlite":  # nothing of the refused param is stored
        assert "types" not in study.get_trials()[2].params


def _counted_reads(study: optuna.Study) -> list[int]:
    """A list that gets one item per read of the study's trials from its storage."""
    storage = _compat.study_storage(study)
    reads: list[int] = []
    real = storage.get_all_trials

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real(*args, **kwargs)

    storage.get_all_trials = counted  # type: ignore[method-assign]
    return reads


def test_the_per_trial_read_is_one_storage_read_shared_with_the_base_sampler(tmp_path: Any) -> None:
    from optuna.trial import TrialState

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    study.tell(study.ask(), 1.0)
    reads = _counted_reads(study)
    trial = study.ask()
    reads.clear()  # (ask reads the waiting trials)
    running = _compat.trials_of_this_trial(study, (TrialState.RUNNING,))
    shared = _compat.sharing_trial_read(study)
    done = shared.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    everything = shared._get_trials(deepcopy=False, use_cache=False)
    assert [t.number for t in running] == [trial.number] and [t.number for t in done] == [0]
    assert len(everything) == 2 and len(reads) == 1  # one read for all of them
    study.tell(trial, 2.0)
    study.ask()  # the next trial reads again, and sees the one just finished
    reads.clear()
    assert len(_compat.trials_of_this_trial(study, (TrialState.COMPLETE,))) == 2 and len(reads) == 1


def test_a_new_trials_shared_read_starts_from_its_asks_read(tmp_path: Any) -> None:
    from optuna.trial import TrialState

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}")
    study.tell(study.ask(), 1.0)
    study.enqueue_trial({"x": 1})
    trial = study.ask()  # pops the waiting trial: its read is the cache's
    frozen = _compat.study_storage(study).get_trial(_compat.trial_id(trial))
    reads = _counted_reads(study)
    _compat.prime_trial_read(study, frozen)
    running = _compat.trials_of_this_trial(study, (TrialState.RUNNING,))
    done = _compat.trials_of_this_trial(study, (TrialState.COMPLETE,))
    assert reads == []  # no storage read
    assert [t.number for t in running] == [trial.number] and [t.number for t in done] == [0]
    assert running[0].state == TrialState.RUNNING  # the popped trial as it is now, not WAITING
    bracket = optuna.create_study(pruner=optuna.pruners.HyperbandPruner())
    _compat.prime_trial_read(bracket, frozen)  # another storage: a no-op, no error


def test_a_claims_read_becomes_the_trials_shared_read(study: optuna.Study) -> None:
    from optuna.trial import TrialState

    study.tell(study.ask(), 1.0)
    study.ask()
    fresh = study.get_trials(deepcopy=False)
    _compat.share_trial_read(study, fresh)
    assert _compat.trials_of_this_trial(study, tuple(TrialState)) == fresh


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_set_attrs_now_writes_user_and_system_attrs_and_the_pending_params(tmp_path: Any, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'n.db'}" if kind == "sqlite" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with _compat.deferred_user_attrs(trial):
        trial.suggest_categorical("types", ["U8S8", "S8S8"])
        _compat.set_attrs_now(trial, {"config_key": "k"}, {"claim": {"ticket": 0}})
        stored = study.get_trials()[0]  # while the trial runs: what other workers read
        assert stored.user_attrs == {"config_key": "k"} and stored.system_attrs["claim"] == {"ticket": 0}
        assert stored.params == trial.params
        assert trial.user_attrs == {"config_key": "k"}  # the live trial sees it too


def test_the_rdb_count_is_one_statement_and_none_elsewhere(tmp_path: Any, study: optuna.Study) -> None:
    from optuna.trial import TrialState

    rdb = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}")
    rdb.tell(rdb.ask(), 1.0)
    failed = rdb.ask()
    failed.set_user_attr("why", "x")
    rdb.tell(failed, state=TrialState.FAIL)
    rdb.tell(rdb.ask(), state=TrialState.FAIL)  # no attr: not counted
    rdb.ask()  # running: not counted
    got = _compat.count_rdb_trials(_compat.study_storage(rdb), rdb, (TrialState.COMPLETE,), "why")
    assert got == 2
    assert _compat.count_rdb_trials(_compat.study_storage(study), study, (TrialState.COMPLETE,), "why") is None
