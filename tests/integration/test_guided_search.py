"""Sensitivity-guided fallback and early stop of hopeless trials, on real studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import tiny_spec, write_spec

from quantuna.metrics import BUILTIN_METRICS, best_reachable
from quantuna.study.budget import count_spent
from quantuna.study.run import run_study

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


def test_hopeless_trials_stop_before_the_end_and_are_infeasible(tiny_dir: Path) -> None:
    # all-zero calibration data: every range collapses and int8 answers garbage, while fp32
    # meets the target (early stop starts once a trial, or fp32, is feasible)
    np.savez(tiny_dir / "calib.npz", x=np.zeros((40, 1, 4, 4), np.float32))
    spec = tiny_spec(tiny_dir)
    spec["data"]["evaluation"]["batch_size"] = 10
    spec["tuning"]["accuracy_criterion"] = {"relative": 0.0}  # as good as fp32 (1.0): int8 cannot
    spec["study"]["sampler"] = "random"
    spec["space"] = {"approach": ["static"], "op_types": {"Conv": ["int8"], "Gemm": ["int8", "fp32"]}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=5)
    pruned = result.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(pruned) == 5
    measured = [t for t in pruned if t.user_attrs["reused_measurement_from"] is None]
    assert len(measured) == 2  # two distinct configs; repeats reuse the verdict
    for trial in pruned:
        reason = trial.user_attrs["stop_reason"]
        assert "of 60 samples" in reason and "first 60 " not in reason  # before the end
        assert trial.constraints["accuracy"] > 0 and trial.user_attrs["feasible"] is False
        assert "timing" not in trial.user_attrs["seconds"]  # the latency loop never ran
        if trial.user_attrs["reused_measurement_from"] is None:  # the partial evaluation counts
            assert trial.user_attrs["seconds"]["evaluate"] > 0
    assert count_spent(result.study) == 5


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
