"""Custom objectives reach a real study three ways, and the INC tuning forms work unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import optuna
import pytest
from conftest import tiny_spec, write_spec
from custom_objectives import BatchTimer

import quantuna
from quantuna.objective import OBJECTIVES, objective_custom_registry, weighted_ratio_score
from quantuna.study.run import run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
EVAL_BATCHES = 2  # 60 evaluation samples, batch_size 30


def _with_objectives(tiny_dir: Path, objectives: list[str], **tuning: object) -> Path:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["multi_objectives"] = {"objective": objectives}
    spec["tuning"].update(tuning)
    return write_spec(tiny_dir, spec)


def _assert_custom_values(study: optuna.Study, position: int) -> None:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete
    for trial in complete:
        value = trial.user_attrs["values"]["batchtime"]
        assert value > 0
        if study.directions and len(study.directions) > 1:
            assert trial.values[position] == value


def test_registered_custom_objective_named_in_the_spec(tiny_dir: Path) -> None:
    if "batchtime" not in OBJECTIVES:
        objective_custom_registry("batchtime", BatchTimer)
    before = BatchTimer.calls
    result = run_study(_with_objectives(tiny_dir, ["accuracy", "batchtime"]), n_trials=3)
    assert result.study.metric_names == ["accuracy (top1)", "batchtime [ms]"]
    assert result.study.directions[1] == optuna.study.StudyDirection.MINIMIZE
    _assert_custom_values(result.study, 1)
    measured = 1 + sum(1 for t in result.trials if t.reused_from is None)  # + the baseline
    assert BatchTimer.calls - before == measured * EVAL_BATCHES  # start/end wrap every batch


def test_custom_objective_by_module_reference(tiny_dir: Path) -> None:
    result = run_study(
        _with_objectives(tiny_dir, ["accuracy", "custom_objectives:BatchTimer", "modelsize"]), n_trials=3
    )
    assert result.study.metric_names == ["accuracy (top1)", "batchtime [ms]", "modelsize [MiB]"]
    _assert_custom_values(result.study, 1)


def test_custom_objective_counts_in_the_weighted_score(tiny_dir: Path) -> None:
    path = _with_objectives(tiny_dir, ["accuracy", "custom_objectives:BatchTimer"], mode="weighted")
    result = run_study(path, n_trials=3)
    base = result.baseline["values"]
    for trial in result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        values = trial.user_attrs["values"]
        expected = weighted_ratio_score(
            [values["accuracy"], values["batchtime"]], [base["accuracy"], base["batchtime"]],
            [True, False], [0.5, 0.5],
        )
        assert trial.value == pytest.approx(expected)


def test_custom_objective_instance_on_the_inc_facade(tiny_dir: Path, tiny_spec_path: Path) -> None:
    q = quantuna.Quantization(tiny_spec_path)
    q.model = tiny_dir / "tiny.onnx"
    q.objective = BatchTimer()
    best_model = q.fit(n_trials=3)
    assert isinstance(best_model, onnx.ModelProto)
    assert q.study.metric_names[-1] == "batchtime [ms]"
    _assert_custom_values(q.study, -1)


def test_facade_takes_a_calibration_loader_and_an_eval_func(tiny_dir: Path, tiny_spec_path: Path) -> None:
    import numpy as np

    calls = []

    def my_eval(model: onnx.ModelProto) -> float:
        calls.append(len(model.graph.node))
        return 0.9

    q = quantuna.Quantization(tiny_spec_path)
    q.calib_dataloader = [{"x": np.random.default_rng(i).normal(size=(8, 1, 4, 4)).astype(np.float32)}
                          for i in range(3)]
    q.eval_func = my_eval
    q.fit(n_trials=2)
    assert calls and q.result.baseline["values"]["accuracy"] == 0.9
    assert len(q.result.session.calibration) == 24


def test_inc_single_objective_form(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"] = {"objective": "performance", "accuracy_criterion": {"absolute": 0.2}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=2)
    assert result.study.directions == [optuna.study.StudyDirection.MINIMIZE]
    assert result.study.metric_names == ["performance [ms]"]
    trial = result.study.trials[0]
    assert "accuracy" in trial.user_attrs["values"] and "accuracy" in trial.constraints


def test_inc_multi_objectives_weights_default_to_equal(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"] = {"multi_objectives": {"objective": ["accuracy", "modelsize", "footprint"]},
                      "mode": "weighted", "accuracy_criterion": {"absolute": 0.2}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=2)
    assert result.weights == pytest.approx([1 / 3] * 3)
    assert result.study.metric_names == ["weighted score (fp32 = 1)"]
    assert result.baseline["values"]["footprint"] > 0
    # which method measured it is on record: exact VmHWM on Linux (docs/objectives.md per OS)
    expected = "vmhwm" if os.access("/proc/self/clear_refs", os.W_OK) else result.baseline["footprint_method"]
    assert result.baseline["footprint_method"] == expected
    measured = [t for t in result.study.trials
                if t.user_attrs.get("values") and t.user_attrs.get("reused_measurement_from") is None]
    assert measured and all(t.user_attrs["footprint_method"] == expected for t in measured)
