"""Real studies on tiny models: onnxruntime quantizes and measures, Optuna searches and stores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from conftest import tiny_spec, write_spec
from onnx import TensorProto, helper, numpy_helper

import quantuna
from quantuna.errors import SpecError
from quantuna.export import export_trial, file_sha256, write_export
from quantuna.objective import weighted_ratio_score
from quantuna.study.run import load_results, run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                             "MatMulInteger", "ConvInteger") for n in model.graph.node)


def test_pareto_study_sets_directions_names_constraints_and_attrs(tiny_spec_path: Path) -> None:
    result = run_study(tiny_spec_path, n_trials=6)
    study = result.study
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["accuracy (top1)", "performance [ms]", "modelsize [MiB]"]
    baseline = study.user_attrs["baseline"]
    assert set(baseline["values"]) == {"accuracy", "performance", "modelsize"}
    assert baseline["accuracy_target"] == pytest.approx(baseline["values"]["accuracy"] - 0.2)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6
    for trial in complete:
        attrs = trial.user_attrs
        for key in ("config", "values", "relative", "constraint", "feasible", "seconds", "host"):
            assert key in attrs, key
        # Optuna 5's constraint, and the legacy list optuna-dashboard reads, agree
        assert trial.constraints["accuracy"] == pytest.approx(attrs["constraint"])
        assert trial.system_attrs["constraints"] == [attrs["constraint"]]
        assert attrs["constraint"] == pytest.approx(baseline["accuracy_target"] - attrs["values"]["accuracy"])
        assert trial.values == [attrs["values"][n] for n in ("accuracy", "performance", "modelsize")]
    # the warm start: the default int8 config, then fp32, which reuses the baseline
    assert complete[0].user_attrs["config"]["approach"] == "static"
    assert complete[1].user_attrs["config"] == {"approach": "fp32"}
    assert complete[1].user_attrs["reused_measurement_from"] == "baseline"
    assert complete[1].user_attrs["values"] == baseline["values"]
    # a real int8 model is 4x smaller on the weights
    assert complete[0].user_attrs["values"]["modelsize"] < 0.9 * baseline["values"]["modelsize"]
    assert result.pareto and all(t.feasible for t in result.pareto)


def test_a_target_beyond_the_metrics_bound_is_a_spec_error_before_any_trial(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["accuracy_criterion"] = {"relative": -0.5}  # fp32 scores 1.0: top1 >= 1.5
    with pytest.raises(SpecError, match=r"top1 >= 1.5 .*beyond top1's bound of 1"):
        run_study(write_spec(tiny_dir, spec), n_trials=3)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tiny_dir / 'tiny.db'}")
    assert study.trials == [] and "baseline" not in study.user_attrs


def _relabel(tiny_dir: Path, wrong: int) -> None:
    """Make fp32 miss ``wrong`` of the 60 evaluation labels, so a higher target is reachable."""
    data = dict(np.load(tiny_dir / "eval.npz"))
    data["y"] = data["y"].copy()
    data["y"][:wrong] = (data["y"][:wrong] + 1) % 3
    np.savez(tiny_dir / "eval.npz", **data)


def test_a_reachable_target_no_trial_meets_gives_a_fully_measured_best_effort(tiny_dir: Path) -> None:
    _relabel(tiny_dir, wrong=12)  # fp32 top1 = 0.8
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["accuracy_criterion"] = {"relative": -0.2}  # target 0.96: reachable, not met
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    assert all(t.constraints["accuracy"] > 0 for t in result.study.trials)
    assert result.study.best_trials == []
    assert result.pareto == []
    # nothing was stopped early: every trial has its accuracy and its latency
    assert [t.state for t in result.study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert all("latency" in t.user_attrs for t in result.study.trials)
    pick = result.pick()
    assert pick.feasible is False  # best effort, said so
    assert "no trial meets the accuracy target" in pick.reason
    closest = min(result.trials, key=lambda t: t.constraint)
    assert pick.trial.constraint == closest.constraint


def test_weighted_mode_value_is_the_weighted_ratio_score(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["mode"] = "weighted"
    spec["tuning"]["multi_objectives"]["weight"] = [0.6, 0.2, 0.2]
    result = run_study(write_spec(tiny_dir, spec), n_trials=5)
    study = result.study
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    base = study.user_attrs["baseline"]["values"]
    names = ["accuracy", "performance", "modelsize"]
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        values = dict(trial.user_attrs["values"])
        reference = dict(base)
        # latency enters as its ratio to fp32 timed interleaved (fp32 = 1): drift cancels
        values["performance"], reference["performance"] = trial.user_attrs["latency"]["ratio"], 1.0
        expected = weighted_ratio_score([values[n] for n in names], [reference[n] for n in names],
                                        [True, False, False], [0.6, 0.2, 0.2])
        assert trial.value == pytest.approx(expected)
        if trial.user_attrs["config"] == {"approach": "fp32"}:
            assert trial.value == pytest.approx(1.0)
    assert "constraints" in study.trials[0].system_attrs
    chosen = result.pick("weighted")
    assert chosen.trial.feasible
    assert result.pick("score").trial.number == study.best_trial.number


def test_a_second_run_resumes_and_keeps_the_baseline(tiny_spec_path: Path) -> None:
    first = run_study(tiny_spec_path, n_trials=3)
    baseline = first.study.user_attrs["baseline"]
    second = run_study(tiny_spec_path, n_trials=5)
    assert len(second.study.trials) == 5
    assert second.study.user_attrs["baseline"] == baseline
    third = run_study(tiny_spec_path, n_trials=5)  # budget spent: nothing runs
    assert len(third.study.trials) == 5


def test_mode_mismatch_with_a_stored_study_is_a_clear_error(tiny_spec_path: Path) -> None:
    run_study(tiny_spec_path, n_trials=1)
    with pytest.raises(SpecError, match="another study.name or --storage"):
        run_study(tiny_spec_path, n_trials=2, mode="weighted")


def test_ranges_are_computed_once_per_calibration_setting(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["study"]["sampler"] = "random"
    spec["space"] = {"quant_format": ["QDQ", "QOperator"], "per_channel": [False, True],
                     "calibrate_method": ["MinMax", "Entropy"], "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}}
    result = run_study(write_spec(tiny_dir, spec), n_trials=10)
    static = [t for t in result.study.trials if "calibration_reused" in t.user_attrs]
    settings = {t.user_attrs["config"]["calibrate_method"] for t in static}
    computed = [t for t in static if not t.user_attrs["calibration_reused"]]
    assert len(computed) == len(settings)
    assert len(list((tiny_dir / "tiny.quantuna" / "ranges").glob("*.json"))) == len(settings)


def test_repeated_configs_reuse_the_measurement(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["study"]["sampler"] = "random"
    spec["space"] = {"approach": ["static", "dynamic"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8"]}}
    path = write_spec(tiny_dir, spec)
    result = run_study(path, n_trials=12)  # quantuna run stops once the space is exhausted
    first = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    keys = {t.user_attrs["config_key"] for t in first}
    assert len(first) == len(keys) <= 5
    # your own loop past the space's size repeats configs: each repeat reuses the measurement
    result.study.optimize(quantuna.StudyObjective(path), n_trials=12 - len(first))
    trials = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    measured = [t for t in trials if t.user_attrs["reused_measurement_from"] is None]
    assert len(trials) == 12 and {t.user_attrs["config_key"] for t in trials} == keys
    # every distinct quantized config measured exactly once; fp32 comes from the baseline
    assert len(measured) == len(keys - {quantuna.QuantConfig().key()})
    for t in trials:
        source = t.user_attrs["reused_measurement_from"]
        if isinstance(source, int):
            assert result.study.trials[source].user_attrs["values"] == t.user_attrs["values"]


@pytest.mark.parametrize("sampler", ["auto", "random", "nsga2"])
def test_no_trial_repeats_a_config_while_the_space_has_unused_ones(tiny_dir: Path, sampler: str) -> None:
    spec = tiny_spec(tiny_dir)
    spec["study"]["sampler"] = sampler
    # fp32 + 3 sets of int8 op types x 2 formats x 2 methods static + dynamic [Conv] = 14
    # (dynamic quantization has no Gemm kernel: dynamic [Gemm] is not offered, and dynamic
    # [Conv,Gemm] is dynamic [Conv]):
    spec["space"] = {"approach": ["static", "dynamic"], "quant_format": ["QDQ", "QOperator"],
                     "calibrate_method": ["MinMax", "Percentile"], "percentile": [99.99],
                     "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    path = write_spec(tiny_dir, spec)
    from quantuna.spec import load_spec
    from quantuna.study.session import prepare

    distinct = len(prepare(load_spec(path)).space.distinct_configs())
    assert distinct == 14
    result = run_study(path, n_trials=distinct)
    keys = [t.user_attrs["config_key"] for t in result.study.trials]
    assert len(keys) == distinct and len(set(keys)) == distinct  # every config once, none twice
    # a budget past the space's size: the run stops, with nothing new to try
    more = run_study(path, n_trials=distinct + 2)
    assert len(more.study.trials) == distinct


@pytest.mark.parametrize("approach", ["static", "dynamic"])
def test_export_then_apply_rebuilds_the_measured_model_byte_for_byte(tiny_dir: Path, approach: str) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": [approach], "calibrate_method": ["Entropy"], "per_channel": [True],
                     "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}}
    spec["study"]["save_models"] = True
    path = write_spec(tiny_dir, spec)
    result = run_study(path, n_trials=2)
    trial = next(t for t in result.trials if not t.config.is_fp32)
    measured = tiny_dir / "tiny.quantuna" / "models" / f"{trial.config.key()}.onnx"
    assert file_sha256(measured) == trial.model_sha256
    document = export_trial(load_results(path), trial=trial.number)
    assert document["provenance"]["source_model"]["sha256"] == file_sha256(tiny_dir / "tiny.onnx")
    assert set(document["provenance"]["versions"]) >= {"quantuna", "onnxruntime", "optuna"}
    assert document["measured"]["objectives"] == trial.values
    exported = write_export(document, tiny_dir / "best.yaml")
    model = quantuna.apply(exported, tiny_dir / "tiny.onnx", out=tiny_dir / "again.onnx")
    assert _quantized(model)
    assert file_sha256(tiny_dir / "again.onnx") == trial.model_sha256


def _quantized_fails(model: onnx.ModelProto) -> float:
    if _quantized(model):
        raise RuntimeError("this evaluation refuses int8 models")
    return 1.0


def _quantized_nan(model: onnx.ModelProto) -> float:
    return math.nan if _quantized(model) else 1.0


@pytest.mark.parametrize("eval_func, reason", [(_quantized_fails, "refuses int8"), (_quantized_nan, "nan")])
def test_an_eval_that_raises_or_returns_nan_fails_the_trial_only(
    tiny_spec_path: Path, eval_func, reason: str
) -> None:
    result = run_study(tiny_spec_path, n_trials=3, eval_func=eval_func)
    failed = result.failed
    assert failed, "the quantized trials must fail"
    assert all(reason in t.user_attrs["fail_reason"] for t in failed)
    assert len(result.study.trials) == 3  # the study went on
    assert any(t.config.is_fp32 for t in result.trials)


def _fp16_model(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 1, (8, 3)).astype(np.float16), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm")], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "half.onnx"))
    x = rng.normal(0, 1, (20, 8)).astype(np.float32)
    np.savez(directory / "half.npz", x=x, y=(x.astype(np.float16) @ w_array(w)).argmax(1))
    return directory / "half.onnx"


def w_array(w: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(w)


def test_a_config_onnxruntime_cannot_quantize_fails_with_its_reason_or_answers_fp32(tmp_path: Path) -> None:
    _fp16_model(tmp_path)
    spec = {
        "study": {"name": "half"},
        "model": "half.onnx",
        "data": {"calibration": {"path": "half.npz", "inputs": {"x": "x"}},
                 "evaluation": {"path": "half.npz", "inputs": {"x": "x"}, "labels": "y"}},
        "tuning": {"exit_policy": {"max_trials": 3}},
        "measure": {"performance": {"warmup": 1, "iterations": 3}},
        "space": {"approach": ["static", "dynamic"], "op_types": {"MatMul": ["int8", "fp32"]}},
    }
    result = run_study(write_spec(tmp_path, spec, "half.yaml"), n_trials=3)
    for trial in result.failed:
        assert "onnxruntime" in trial.user_attrs["fail_reason"] or "failed" in trial.user_attrs["fail_reason"]
    # dynamic quantization leaves an fp16 MatMul alone: that trial is the fp32 model, said so
    dynamic = [t for t in result.study.trials if t.params.get("approach") == "dynamic"]
    assert dynamic and all(t.user_attrs.get("is_fp32") or t.state.name == "FAIL" for t in dynamic)
    for t in result.trials:
        assert t.config.is_fp32 or result.study.trials[t.number].user_attrs["int8_ops"] > 0
    assert any(t.config.is_fp32 for t in result.trials)
