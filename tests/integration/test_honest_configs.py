"""Honest configurations: a file with no int8 op is the fp32 model, byte-identical files are one
measurement, op-type sets with nothing to quantize are not proposed, failing settings are
recorded once, control-flow bodies are quantized where onnxruntime can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from conftest import tiny_spec, write_spec
from onnx import TensorProto, helper, numpy_helper

from quantuna.config import QuantConfig
from quantuna.ort.int8ops import count_int8_ops
from quantuna.spec import load_spec
from quantuna.study.run import run_study
from quantuna.study.session import prepare

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _complete(result: object) -> list[optuna.trial.FrozenTrial]:
    study = result.study  # type: ignore[attr-defined]
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_a_config_that_quantizes_nothing_is_the_fp32_model_and_equal_files_are_one_point(
    tiny_dir: Path,
) -> None:
    space = {"approach": ["dynamic"], "op_types": {"Conv": ["int8"], "Gemm": ["fp32"]},
             "first_node_fp32": [False, True], "last_node_fp32": [False, True]}
    spec = tiny_spec(tiny_dir, space=space)
    spec["tuning"]["exit_policy"] = {"max_trials": 4}
    result = run_study(write_spec(tiny_dir, spec), n_trials=4)
    trials = _complete(result)
    assert len(trials) == 4
    baseline = result.study.user_attrs["baseline"]["values"]
    as_fp32 = [t for t in trials if t.user_attrs["config"].get("first_node_fp32")]
    int8 = [t for t in trials if not t.user_attrs["config"].get("first_node_fp32")]
    # the only Conv kept in fp32: nothing is quantized, the trial is the fp32 point
    for t in as_fp32:
        assert t.user_attrs["is_fp32"] is True and t.user_attrs["int8_ops"] == 0
        assert t.user_attrs["reused_measurement_from"] == "baseline"
        assert t.user_attrs["values"] == baseline
        assert t.user_attrs["summary"].startswith("fp32 (no int8 op in dynamic")
    # last_node_fp32 excludes a Gemm this config does not quantize: the same bytes, measured once
    assert {t.user_attrs["model_sha256"] for t in int8} == {int8[0].user_attrs["model_sha256"]}
    assert sorted(str(t.user_attrs["reused_measurement_from"]) for t in int8) == sorted(
        ["None", str(min(t.number for t in int8))])
    assert all(t.user_attrs["int8_ops"] > 0 for t in int8)
    # what the results say: fp32 is fp32, and each distinct file is one point at most
    by_number = {t.number: t for t in result.trials}
    assert all(by_number[t.number].config == QuantConfig() for t in as_fp32)
    assert len(result.pareto) <= 2
    assert len({t.model_sha256 for t in result.pareto}) == len(result.pareto)
    pick = result.pick("weighted").trial
    assert pick.config.is_fp32 or by_number[pick.number].config.op_types == ("Conv",)


def test_op_type_sets_nothing_can_quantize_are_left_out_of_the_space(tiny_dir: Path) -> None:
    # dynamic quantization has no Gemm kernel: dynamic [Gemm] would only repeat fp32
    spec = tiny_spec(tiny_dir, space={"approach": ["static", "dynamic"],
                                      "quant_format": ["QOperator"],
                                      "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}})
    session = prepare(load_spec(write_spec(tiny_dir, spec)))
    configs = session.space.distinct_configs()
    dynamic = [c for c in configs if c.approach == "dynamic"]
    assert dynamic and all(c.op_types == ("Conv",) for c in dynamic)
    assert not any(c.approach == "dynamic" and "Gemm" in c.op_types for c in configs)
    # the op types onnxruntime ignores are dropped from the config: one key per file
    assert len({c.key() for c in configs}) == len(configs)


def test_a_calibration_setting_that_fails_is_recorded_once_and_never_proposed_again(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import quantuna.ort.calibrate as calibrate

    real = calibrate.compute_ranges

    def entropy_fails(model_path, config, *args, **kwargs):  # type: ignore[no-untyped-def]
        if config.calibrate_method == "Entropy":
            raise ValueError("supplied range of [-inf, inf] is not finite")
        return real(model_path, config, *args, **kwargs)

    monkeypatch.setattr(calibrate, "compute_ranges", entropy_fails)
    space = {"approach": ["static"], "quant_format": ["QDQ", "QOperator"],
             "calibrate_method": ["MinMax", "Entropy"],
             "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    spec = tiny_spec(tiny_dir, space=space)
    result = run_study(write_spec(tiny_dir, spec), n_trials=12)
    study = result.study
    failed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.FAIL]
    entropy = [t for t in study.get_trials() if t.params.get("calibrate_method") == "Entropy"]
    assert len(failed) == 1 and len(entropy) == 1  # tried once, never again
    stored = [v for k, v in study.user_attrs.items() if k.startswith("failed_setting:")]
    assert len(stored) == 1 and stored[0]["setting"]["calibrate_method"] == "Entropy"
    assert "not finite" in stored[0]["reason"] and stored[0]["trial"] == failed[0].number


def _if_model(path: Path) -> Path:
    """The whole compute inside an If: then/else bodies each hold a MatMul over a weight."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 8)).astype(np.float32), n)
               for n in ("w_then", "w_else")]

    def body(name: str) -> onnx.GraphProto:
        node = helper.make_node("MatMul", ["x", f"w_{name}"], [f"y_{name}"], name=f"mm_{name}")
        out = helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, ["b", 8])
        return helper.make_graph([node], name, [], [out])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=body("then"),
                         else_branch=body("else")),
    ]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    graph = helper.make_graph(nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
                              [*weights, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _if_spec(directory: Path, approach: list[str]) -> Path:
    model = _if_model(directory / "if.onnx")
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (40, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez(directory / "if_calib.npz", x=x[:20])
    np.savez(directory / "if_eval.npz", x=x, y=y)
    spec = tiny_spec(directory, model="if.onnx", accuracy={"metric": "cosine"},
                     space={"approach": approach})
    spec["data"] = {"calibration": {"path": "if_calib.npz", "inputs": {"x": "x"}, "batch_size": 10},
                    "evaluation": {"path": "if_eval.npz", "inputs": {"x": "x"}, "labels": "y",
                                   "batch_size": 20}}
    spec["tuning"]["accuracy_criterion"] = {"absolute": 0.5}
    return write_spec(directory, spec, "if.yaml")


def test_compute_inside_if_bodies_is_quantized_dynamically(tmp_path: Path) -> None:
    result = run_study(_if_spec(tmp_path, ["static", "dynamic"]), n_trials=3)
    int8 = [t for t in _complete(result) if t.user_attrs.get("int8_ops")]
    assert int8 and all(t.user_attrs["config"]["approach"] == "dynamic" for t in int8)
    assert "MatMulInteger" in int8[0].user_attrs["int8_op_types"]


def test_static_only_on_if_bodies_says_so_once_and_answers_fp32(tmp_path: Path) -> None:
    spec = _if_spec(tmp_path, ["static"])
    session = prepare(load_spec(spec))
    assert [n for n in session.space.notes if "nothing quantizable outside control-flow subgraphs" in n]
    assert session.space.distinct_configs() == [QuantConfig()]
    result = run_study(spec, n_trials=2)
    assert all(t.user_attrs["reused_measurement_from"] == "baseline" for t in _complete(result))
    assert result.pick("weighted").trial.config.is_fp32


def test_int8_ops_are_counted_from_the_graph_alone(tiny_dir: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    out = tiny_dir / "dyn.onnx"
    quantize_dynamic(tiny_dir / "tiny.onnx", out, op_types_to_quantize=["Conv"])
    ops = count_int8_ops(out)
    assert ops.get("ConvInteger") == 1 and ops.get("DynamicQuantizeLinear", 0) >= 1
    assert count_int8_ops(tiny_dir / "tiny.onnx") == {}


def _masked_attention(path: Path) -> Path:
    """A BERT-style score path: MatMul + an attention mask of -inf, Softmax, MatMul."""
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 8), np.float32)
    mask[0, 5:] = -np.inf
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 8)).astype(np.float32), "wq"),
             numpy_helper.from_array(mask, "mask"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 3)).astype(np.float32), "wo")]
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["s"], name="scores"),
             helper.make_node("Add", ["s", "mask"], ["masked"], name="mask_add"),
             helper.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "wo"], ["logits"], name="out")]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_every_calibration_method_handles_activations_with_non_finite_values(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = _masked_attention(tmp_path / "attn.onnx")
    x = np.random.default_rng(1).normal(0, 1, (40, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez(tmp_path / "attn.npz", x=x, y=y.argmax(1))
    spec = tiny_spec(tmp_path, model="attn.onnx", space={
        "approach": ["static"], "calibrate_method": ["Percentile", "Entropy", "MinMax"],
        "op_types": {"MatMul": ["int8"], "Gemm": ["int8"]}})  # MatMul+Add fuse into Gemm
    spec["data"] = {"calibration": {"path": "attn.npz", "inputs": {"x": "x"}, "batch_size": 10},
                    "evaluation": {"path": "attn.npz", "inputs": {"x": "x"}, "labels": "y"}}
    spec["tuning"]["accuracy_criterion"] = {"absolute": 0.99}  # every trial measured in full
    result = run_study(write_spec(tmp_path, spec, "attn.yaml"), n_trials=3)
    assert not result.failed
    methods = {t.config.calibrate_method for t in result.trials}
    assert methods == {"Percentile", "Entropy", "MinMax"}
    assert all(result.study.trials[t.number].user_attrs["int8_ops"] > 0 for t in result.trials)
    # MinMax kept a range of [-inf, x] before, and the int8 model agreed with fp32 on 7.5 %
    assert all(t.values["accuracy"] >= 0.8 for t in result.trials)
    import json

    for ranges in (tmp_path / "attn.quantuna" / "ranges").glob("*.json"):
        low = json.loads(ranges.read_text())["data"]["masked"]["lowest"]
        assert np.all(np.isfinite(low["data"] if isinstance(low, dict) else low)), ranges.name


def test_clip_non_finite_keeps_finite_values_and_clips_the_rest() -> None:
    from quantuna.ort.calibrate import clip_non_finite

    a = np.array([-np.inf, -2.0, 1.0, np.inf, np.nan], np.float32)
    assert clip_non_finite(a).tolist() == [-2.0, -2.0, 1.0, 1.0, 0.0]
    finite = np.array([1.0, 2.0], np.float32)
    assert clip_non_finite(finite) is finite


def test_a_quantizer_that_rejects_an_op_type_is_narrowed_to_it_and_never_asked_again(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import quantuna.study.measuring as trial_module
    from quantuna.errors import TrialError

    real = trial_module.quantize

    def gemm_rejected(model, config, out, **kwargs):  # type: ignore[no-untyped-def]
        if "Gemm" in config.op_types:
            raise TrialError(f"onnxruntime cannot quantize {config.summary()}: The truth value ...")
        return real(model, config, out, **kwargs)

    monkeypatch.setattr(trial_module, "quantize", gemm_rejected)
    spec = tiny_spec(tiny_dir, space={"approach": ["static"], "quant_format": ["QDQ"],
                                      "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}})
    result = run_study(write_spec(tiny_dir, spec), n_trials=6)
    trials = result.study.get_trials()
    with_gemm = [t for t in trials if "Gemm" in t.user_attrs.get("config", {}).get("op_types", [])]
    assert len(with_gemm) == 1 and with_gemm[0].state == optuna.trial.TrialState.FAIL
    stored = [v for k, v in result.study.user_attrs.items() if k.startswith("failed_setting:")]
    assert [s["setting"]["op_type"] for s in stored] == ["Gemm"]  # Conv quantizes alone: not blamed
    assert stored[0]["setting"]["quant_format"] == "QDQ" and stored[0]["trial"] == with_gemm[0].number


def test_op_types_that_only_follow_a_quantized_neighbour_are_not_offered_alone(tiny_dir: Path) -> None:
    # Flatten is a direct-8-bit op for onnxruntime: quantized only after a quantized input
    spec = tiny_spec(tiny_dir, space={"approach": ["static"], "quant_format": ["QOperator", "QDQ"],
                                      "op_types": {"Flatten": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}})
    session = prepare(load_spec(write_spec(tiny_dir, spec)))
    sets = {c.op_types for c in session.space.distinct_configs()}
    assert ("Flatten",) not in sets and ("Flatten", "Gemm") in sets and () in sets
