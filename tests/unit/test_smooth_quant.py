"""SmoothQuant (``smooth_quant``, ``smooth_quant_alpha``): a transform that keeps the fp32 function,
makes static int8 better where activations have outlier channels, and is recorded in the config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny_transformer import build_tiny_transformer

from quantuna.config import QuantConfig
from quantuna.data import Dataset
from quantuna.errors import SpecError
from quantuna.model import inspect_model
from quantuna.ort.calibrate import compute_ranges
from quantuna.ort.quantize import quantize
from quantuna.ort.smooth import SCALES_KEY, apply_smoothing, smooth_model, smooth_targets

HIDDEN = 32


def _run(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _tokens(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 64, (count, 8), dtype=np.int64),
            "token_type_ids": (np.arange(8) >= 4).astype(np.int64)[None].repeat(count, 0)}


def _outlier_model(path: Path, pre_norm: bool) -> Path:
    """x -> (LayerNorm, pre-LN style, feeding only the MatMuls) -> two MatMuls -> Add; channels
    0 and 1 of the MatMul input are 50x larger than the others (the outliers of LLM activations)."""
    rng = np.random.default_rng(0)
    gain = np.ones(HIDDEN, np.float32)
    gain[:2] = 50.0
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (HIDDEN, HIDDEN)).astype(np.float32), "w2"),
             numpy_helper.from_array(gain, "gain"),
             numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta")]
    first = (helper.make_node("LayerNormalization", ["x", "gain", "beta"], ["h"], name="norm", axis=-1)
             if pre_norm else helper.make_node("Mul", ["x", "gain"], ["h"], name="gain_mul"))
    nodes = [first,
             helper.make_node("MatMul", ["h", "w1"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["b"], name="mm2"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "outliers",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", HIDDEN])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _dataset(x: np.ndarray) -> Dataset:
    return Dataset({"x": x}, None, f"outliers-{x.shape[0]}")


def _static(smooth: bool, alpha: float = 0.5) -> QuantConfig:
    return QuantConfig(approach="static", quant_format="QDQ", types="U8S8", per_channel=True,
                       reduce_range=False, activation_symmetric=False, weight_symmetric=True,
                       calibrate_method="MinMax", calibration_size=64, op_types=("MatMul",),
                       smooth_quant=smooth, smooth_quant_alpha=alpha if smooth else None)


def test_smoothing_keeps_the_fp32_function_of_the_tiny_transformer(tmp_path: Path) -> None:
    path = build_tiny_transformer(tmp_path / "block.onnx")
    calibration = _tokens(16, 1)
    smoothed, scales = smooth_model(path, 0.5, [calibration])
    # q/k/v share h0 (one scale), o_proj, ffn_in, ffn_out; the classifier reads a Gather output
    assert {"h0", "ctx", "h1", "f1r", "pooled"} <= set(scales)
    assert any(abs(v - 1.0) > 1e-3 for v in scales["h0"])  # something moved
    feed = _tokens(32, 2)
    np.testing.assert_allclose(_run(smoothed, feed), _run(path, feed), atol=1e-4, rtol=1e-4)
    assert {n.op_type for n in smoothed.graph.node} >= {"Mul"}  # h0 also feeds the residual Add
    onnx.checker.check_model(smoothed, full_check=True)


def test_a_layernorm_that_feeds_only_matmuls_takes_the_scale_and_no_mul_is_inserted(tmp_path: Path) -> None:
    path = _outlier_model(tmp_path / "pre_ln.onnx", pre_norm=True)
    x = np.random.default_rng(1).normal(size=(64, HIDDEN)).astype(np.float32)
    smoothed, scales = smooth_model(path, 0.5, [{"x": x}])
    assert set(scales) == {"h"}
    assert [n.op_type for n in smoothed.graph.node] == ["LayerNormalization", "MatMul", "MatMul", "Add"]
    assert smoothed.graph.node[0].input[1] != "gain"
    np.testing.assert_allclose(_run(smoothed, {"x": x}), _run(path, {"x": x}), atol=1e-4, rtol=1e-4)


def test_a_weight_shared_by_two_matmuls_is_left_alone(tmp_path: Path) -> None:
    path = _outlier_model(tmp_path / "m.onnx", pre_norm=False)
    model = onnx.load(str(path))
    model.graph.node[2].input[1] = "w1"  # both MatMuls read w1: scaling it twice would be wrong
    original = model.SerializeToString()
    assert "h" not in smooth_targets(model)
    smoothed, muls = apply_smoothing(model, {"h": [2.0] * HIDDEN})
    assert muls == [] and smoothed.SerializeToString() == original


@pytest.mark.parametrize("pre_norm", [True, False])
def test_static_int8_with_smoothquant_beats_without_on_outlier_channels(tmp_path: Path, pre_norm: bool) -> None:
    path = _outlier_model(tmp_path / "m.onnx", pre_norm)
    info = inspect_model(path)
    rng = np.random.default_rng(1)
    calibration, evaluation = (rng.normal(size=(64, HIDDEN)).astype(np.float32) for _ in range(2))
    reference = _run(path, {"x": evaluation})
    errors = {}
    for smooth in (False, True):
        config = _static(smooth)
        ranges = tmp_path / f"ranges-{smooth}.json"
        compute_ranges(path, config, _dataset(calibration), 16, ranges, op_types=("MatMul",))
        assert (SCALES_KEY in json.loads(ranges.read_text())) is smooth
        out = quantize(info, config, tmp_path / f"q-{smooth}.onnx", ranges=ranges)
        errors[smooth] = float(np.sqrt(np.mean((_run(out, {"x": evaluation}) - reference) ** 2)))
        again = quantize(info, config, tmp_path / f"again-{smooth}.onnx", ranges=ranges)
        assert again.read_bytes() == out.read_bytes()  # deterministic: apply rebuilds it byte for byte
    assert errors[True] < 0.7 * errors[False], errors


def test_smooth_quant_is_a_static_knob_recorded_in_the_config() -> None:
    config = _static(True, 0.75)
    assert QuantConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["smooth_quant_alpha"] == 0.75 and "SmoothQuant(0.75)" in config.summary()
    assert config.calibration_setting != _static(True, 0.5).calibration_setting  # its own ranges
    assert "smooth_quant_alpha" not in (_static(False).calibration_setting or {})
    assert _static(False).key() == QuantConfig.from_dict({**_static(False).to_dict(),
                                                          "smooth_quant": False}).key()
    with pytest.raises(SpecError, match="smooth_quant_alpha: given exactly when smooth_quant"):
        QuantConfig.from_dict({**_static(False).to_dict(), "smooth_quant_alpha": 0.5})
    dynamic = {"approach": "dynamic", "types": "U8S8", "op_types": ["MatMul"], "smooth_quant": True}
    with pytest.raises(SpecError, match="smooth_quant: applies to static quantization only"):
        QuantConfig.from_dict(dynamic)


def test_a_graph_input_fed_straight_into_matmuls_is_smoothed_by_an_inserted_mul(tmp_path: Path) -> None:
    model = onnx.load(str(_outlier_model(tmp_path / "m.onnx", pre_norm=False)))
    for node in model.graph.node[1:3]:
        node.input[0] = "x"  # the MatMuls read the graph input itself
    del model.graph.node[0]
    onnx.save(model, str(tmp_path / "input.onnx"))
    x = np.random.default_rng(1).normal(size=(16, HIDDEN)).astype(np.float32)
    x[:, 0] *= 40.0
    smoothed, scales = smooth_model(tmp_path / "input.onnx", 0.5, [{"x": x}])
    assert set(scales) == {"x"} and [n.name for n in smoothed.graph.node][0] == "x_smooth_quant"
    np.testing.assert_allclose(_run(smoothed, {"x": x}), _run(tmp_path / "input.onnx", {"x": x}),
                               atol=1e-4, rtol=1e-4)
