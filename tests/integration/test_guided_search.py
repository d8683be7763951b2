"""Sensitivity-guided fallback and early stop of hopeless trials, on real studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import tiny_spec, write_spec

from quantuna.metrics import BUILTIN_METRICS, best_reachable
from quantuna.study.budget import count_spent
from quantuna.study.run import load_results, run_study
from quantuna.study.trial import find_measured
from quantuna.summary import show_payload, summarize

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_best_reachable_is_the_bound_of_a_per_sample_mean() -> None:
    top1 = BUILTIN_METRICS["top1"]
    assert best_reachable(top1, partial=0.5, seen=10, total=40) == pytest.approx((5 + 30) / 40)
    mse = BUILTIN_METRICS["mse"]
    assert best_reachable(mse, partial=2.0, seen=10, total=40) == pytest.approx(20 / 40)
    # brute force: no completion of the remaining samples beats the bound
    rng = np.random.default_rng(0)
    seen = rng.integers(0, 2, 10)
    for rest in (np.ones(30), rng.integers(0, 2, 30)):
        assert np.concatenate([seen, rest]).mean() <= best_reachable(top1, seen.mean(), 10, 40) + 1e-12


def test_hopeless_trials_stop_before_the_end_and_complete_as_infeasible(tiny_dir: Path) -> None:
    # all-zero calibration data: every range collapses and int8 answers garbage, while fp32
    # meets the target (early stop starts once a trial of the study is feasible: fp32's)
    np.savez(tiny_dir / "calib.npz", x=np.zeros((40, 1, 4, 4), np.float32))
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["batch_size"] = 10
    spec["tuning"]["accuracy_criterion"] = {"relative": 0.0}  # as good as fp32 (1.0): int8 cannot
    spec["study"]["sampler"] = "random"
    spec["space"] = {"approach": ["static"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    trials = result.study.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)  # none PRUNED
    fp32 = next(t.number for t in trials if t.user_attrs["Role"] == "fp32")
    stopped = [t for t in trials if "stop_reason" in t.user_attrs]
    assert stopped and all(t.number > fp32 for t in stopped)  # before any feasible trial: full
    full = [t for t in trials if t.number < fp32]
    assert full and all(t.user_attrs["feasible"] is False and "stopped_early" not in t.user_attrs
                        for t in full)
    for trial in stopped:
        record = trial.user_attrs["stopped_early"]
        assert record["of"] == 60 and 0 < record["samples"] < 60  # before the end
        assert "first 60 " not in trial.user_attrs["stop_reason"]
        values = trial.user_attrs["values"]
        assert values["accuracy"] == pytest.approx(record["accuracy"])  # the partial metric
        assert trial.values == [values[n] for n in ("accuracy", "performance", "modelsize")]
        assert trial.constraints["accuracy"] > 0 and trial.user_attrs["feasible"] is False
        assert trial.user_attrs["Feasible"].startswith("no: stopped early")
        assert trial.user_attrs["latency"]["rounds"] == 3 < 10  # a short, honest latency loop
        if trial.user_attrs.get("reused_measurement_from") is None:  # (a byte-identical model reuses)
            assert trial.user_attrs["seconds"]["evaluate"] > 0 and trial.user_attrs["seconds"]["timing"] > 0
    assert sorted(t.number for t in result.stopped_early) == [t.number for t in stopped]
    # export refuses a stopped trial, saying why, and writes it only when asked
    from quantuna.errors import QuantunaError
    from quantuna.export import export_trial

    with pytest.raises(QuantunaError, match="stopped early") as refused:
        export_trial(result, trial=stopped[0].number)
    assert "--allow-infeasible" in str(refused.value)
    document = export_trial(result, trial=stopped[0].number, allow_infeasible=True)
    assert document["measured"]["feasible"] is False and "stopped early" in document["measured"]["reason"]
    assert not {t.number for t in stopped} & {t.number for t in result.pareto}
    assert result.pick().feasible and result.pick().trial.number == fp32
    assert count_spent(result.study) == 4
    payload = show_payload(result)
    assert payload["trials"] == {"COMPLETE": 4} and payload["stopped_early"] == len(stopped)
    assert f"{len(stopped)} stopped early as hopeless" in summarize(result).facts["trials"]


def test_in_weighted_mode_a_stopped_trial_has_its_score_and_is_never_the_best(tiny_dir: Path) -> None:
    np.savez(tiny_dir / "calib.npz", x=np.zeros((40, 1, 4, 4), np.float32))
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["batch_size"] = 10
    spec["tuning"]["mode"] = "weighted"
    spec["tuning"]["accuracy_criterion"] = {"relative": 0.0}
    spec["space"] = {"approach": ["static"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    stopped = [t for t in result.study.trials if "stop_reason" in t.user_attrs]
    assert stopped
    for trial in stopped:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == pytest.approx(trial.user_attrs["weighted_ratio_score"])
        assert trial.constraints["accuracy"] > 0
    assert result.study.best_trial.user_attrs["feasible"] is True  # Optuna's best: feasible only
    assert result.pick("score").trial.number not in {t.number for t in stopped}


def test_a_repeat_of_a_stopped_trial_reuses_its_verdict(tiny_dir: Path) -> None:
    from quantuna.study.trial import make_objective

    np.savez(tiny_dir / "calib.npz", x=np.zeros((40, 1, 4, 4), np.float32))
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["batch_size"] = 10
    spec["tuning"]["accuracy_criterion"] = {"relative": 0.0}
    spec["space"] = {"approach": ["static"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    study = result.study
    first = next(t for t in study.trials if "stop_reason" in t.user_attrs)
    study.enqueue_trial(first.params)
    study.optimize(make_objective(study, result.session, study.user_attrs["baseline"]), n_trials=1)
    again = study.trials[-1]
    assert again.state == optuna.trial.TrialState.COMPLETE
    assert again.user_attrs["reused_measurement_from"] == first.number
    assert again.values == first.values and again.constraints["accuracy"] > 0
    assert again.user_attrs["stopped_early"] == first.user_attrs["stopped_early"]
    assert again.number in {t.number for t in load_results(write_spec(tiny_dir, spec)).stopped_early}


def test_a_trial_an_older_quantuna_pruned_as_hopeless_still_reads_right(tiny_dir: Path) -> None:
    np.savez(tiny_dir / "calib.npz", x=np.zeros((40, 1, 4, 4), np.float32))
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["batch_size"] = 10
    spec["tuning"]["accuracy_criterion"] = {"relative": 0.0}
    spec["space"] = {"approach": ["static"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    path = write_spec(tiny_dir, spec)
    result = run_study(path, n_trials=1)  # the default int8 config, measured fully
    study = result.study
    key = next(t.user_attrs["config_key"] for t in study.trials)
    old = {"config": study.trials[0].user_attrs["config"], "config_key": key,  # as 0.1 wrote it
           "stop_reason": "stopped early: top1 0.1 on the first 10 of 60 samples", "feasible": False,
           "constraint": 0.5, "Feasible": "no: stopped early, the target is out of reach"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              params=study.trials[0].params,
                                              distributions=study.trials[0].distributions,
                                              user_attrs=old))
    number = study.trials[-1].number
    loaded = load_results(path)
    assert [t.number for t in loaded.stopped_early] == [number]  # counted, not among the complete
    assert number not in {t.number for t in loaded.trials} and count_spent(study) == 2
    assert loaded.pruned == []  # not a pruner's prune
    assert find_measured(study, key, number=99).number == 0  # the measured one is reused
    hidden = {**old, "config_key": "only-the-old-trial"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              params=study.trials[0].params,
                                              distributions=study.trials[0].distributions,
                                              user_attrs=hidden))
    assert find_measured(study, "only-the-old-trial", number=99) is None  # no values: measure again
    facts = summarize(load_results(path)).facts["trials"]
    assert facts.startswith("1 complete") and "2 stopped early as hopeless" in facts


def test_no_early_stop_when_the_target_is_reachable(tiny_spec_path: Path) -> None:
    result = run_study(tiny_spec_path, n_trials=4)
    assert not result.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))


def test_sensitive_nodes_get_a_knob_and_warm_start_the_search(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"op_types": {"Conv": ["int8"], "Gemm": ["int8"]}, "exclude_sensitive_nodes": 2}
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    ranking = result.study.user_attrs["sensitivity"]
    assert sorted(r["node"] for r in ranking) == ["conv1", "fc1", "fc2"]
    assert [r["loss"] for r in ranking] == sorted((r["loss"] for r in ranking), reverse=True)
    top = [r["node"] for r in ranking[:2]]
    trials = result.study.trials
    assert trials[0].user_attrs["config"].get("exclude_nodes") is None  # the default int8 config
    assert trials[1].user_attrs["config"]["exclude_nodes"] == [top[0]]
    assert sorted(trials[2].user_attrs["config"]["exclude_nodes"]) == sorted(top)
    assert {f"node.{n}" for n in top} <= set(trials[0].params)
    again = run_study(write_spec(tiny_dir, spec), n_trials=5)  # resumed: the ranking is kept
    assert again.study.user_attrs["sensitivity"] == ranking
