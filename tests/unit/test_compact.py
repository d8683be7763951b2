"""Quantized files are compacted losslessly, and a Relu after a quantized node is folded into it
unless folding would change the function."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantuna.config import QuantConfig
from quantuna.data import Dataset
from quantuna.model import inspect_model
from quantuna.ort.calibrate import compute_ranges
from quantuna.ort.compact import compact
from quantuna.ort.options import calibrated_op_types
from quantuna.ort.quantize import quantize

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 1, 6, 6)).astype(np.float32)


def _conv_model(path: Path, *, fan_out: bool) -> Path:
    """Conv -> Relu -> Flatten -> Gemm; with ``fan_out`` the Conv's output also feeds an Add with
    the Relu's (y = relu(c) + c: dropping the Relu would give 2c)."""
    w = numpy_helper.from_array(RNG.normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    g = numpy_helper.from_array(RNG.normal(size=(3, 64)).astype(np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    if fan_out:
        nodes.append(helper.make_node("Add", ["c", "r"], ["s"], name="add"))
    nodes += [helper.make_node("Flatten", ["s" if fan_out else "r"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "g"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [w, b, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(model: Path | onnx.ModelProto, x: np.ndarray = X) -> np.ndarray:
    data = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def _static(fmt: str, **changes: object) -> QuantConfig:
    config = QuantConfig(approach="static", quant_format=fmt, types="U8S8", per_channel=False,
                         reduce_range=False, activation_symmetric=False, weight_symmetric=True,
                         calibrate_method="MinMax", calibration_size=64, op_types=("Conv", "Gemm"))
    return replace(config, **changes)  # type: ignore[arg-type]


def _quantized(tmp_path: Path, model: Path, config: QuantConfig, name: str = "q") -> Path:
    ranges = tmp_path / f"{name}-ranges.json"
    compute_ranges(model, config, Dataset({"x": X}, None, "x"), 16, ranges,
                   op_types=calibrated_op_types(config.op_types))
    return quantize(inspect_model(model), config, tmp_path / f"{name}.onnx", ranges=ranges)


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_a_relu_after_a_quantized_conv_is_folded_into_it(tmp_path: Path, fmt: str) -> None:
    model = _conv_model(tmp_path / "m.onnx", fan_out=False)
    out = _quantized(tmp_path, model, _static(fmt))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Relu" not in ops
    assert _relative_error(_run(out), _run(model)) < 0.05
    # symmetric activations: onnxruntime folds nothing, the Relu stays
    kept = _quantized(tmp_path, model, _static(fmt, activation_symmetric=True), "sym")
    assert "Relu" in [n.op_type for n in onnx.load(str(kept)).graph.node]


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_a_relu_whose_input_feeds_another_node_is_kept_and_the_function_with_it(tmp_path: Path, fmt: str) -> None:
    model = _conv_model(tmp_path / "m.onnx", fan_out=True)
    out = _quantized(tmp_path, model, _static(fmt, op_types=("Conv",)))
    assert "Relu" in [n.op_type for n in onnx.load(str(out)).graph.node]
    # folded, QOperator would read the Conv's quantized output as the Relu's: y = 2c
    assert _relative_error(_run(out), _run(model)) < 0.05


def _padded_model() -> onnx.ModelProto:
    """y = (x * a) * b + c with a, b equal, c a graph input with a default equal to them too,
    an initializer nobody reads, a stale value_info and two opset domains nobody uses."""
    ones = np.full((2, 3), 0.5, np.float32)
    inits = [numpy_helper.from_array(ones, n) for n in ("a", "b", "c", "unused")]
    nodes = [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "b"], ["n"]),
             helper.make_node("Add", ["n", "c"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("x", "c")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits,
        value_info=[helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("m", "gone")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3),
                                                     helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def test_compact_stores_equal_initializers_once_and_drops_what_nothing_reads() -> None:
    model = _padded_model()
    before = model.SerializeToString()
    compacted = compact(model)
    onnx.checker.check_model(compacted)
    assert [t.name for t in compacted.graph.initializer] == ["a", "c"]  # c: a caller may feed it
    assert [n.input[1] for n in compacted.graph.node] == ["a", "a", "c"]
    assert [v.name for v in compacted.graph.value_info] == ["m"]
    assert [o.domain for o in compacted.opset_import] == [""]
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    original = onnx.load_from_string(before)
    for feed in ({"x": x}, {"x": x, "c": x}):
        run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
               for m in (original, compacted)]
        assert np.array_equal(run[0], run[1])  # lossless: the same values, bit for bit
    assert len(compacted.SerializeToString()) < len(before)
    assert compact(onnx.load_from_string(compacted.SerializeToString())) == compacted  # nothing left


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_a_quantized_file_is_compact_and_rebuilt_byte_for_byte(tmp_path: Path, fmt: str) -> None:
    model = _conv_model(tmp_path / "m.onnx", fan_out=False)
    out = _quantized(tmp_path, model, _static(fmt))
    written = onnx.load(str(out))
    tensors = [numpy_helper.to_array(t) for t in written.graph.initializer]
    keys = [(a.dtype.str, a.shape, a.tobytes()) for a in tensors]
    assert len(set(keys)) == len(keys)  # onnxruntime writes one zero point per tensor, all 0 here
    used = {n.domain for n in written.graph.node} | {""}
    assert {o.domain for o in written.opset_import} <= used | {"ai.onnx"}
    again = _quantized(tmp_path, model, _static(fmt), "again")
    assert again.read_bytes() == out.read_bytes()  # what quantuna apply relies on


def test_a_control_flow_body_reads_the_merged_name_and_keeps_its_own_shadowing_one() -> None:
    """y = If(cond, then: x * a2 (an outer copy of a), else: x * b with b the body's own, equal
    to the outer b): a2 is read as a inside the body; the outer b is never merged into."""
    half = np.full((2,), 0.5, np.float32)
    then = helper.make_graph([helper.make_node("Mul", ["x", "a2"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Mul", ["x", "b"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(half * 4, "b")])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Mul", ["m", "b"], ["n"]),
         helper.make_node("If", ["cond"], ["i"], then_branch=then, else_branch=other),
         helper.make_node("Add", ["n", "i"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(half, n) for n in ("a", "a2", "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    before = model.SerializeToString()
    compacted = compact(model)
    assert [t.name for t in compacted.graph.initializer] == ["a", "b"]
    bodies = {a.name: a.g for a in compacted.graph.node[2].attribute}
    assert bodies["then_branch"].node[0].input[1] == "a"  # the body reads the kept copy
    assert bodies["else_branch"].node[0].input[1] == "b"  # its own b, not the outer one
    x = np.array([1.0, -2.0], np.float32)
    for cond in (True, False):
        feed = {"x": x, "cond": np.array(cond)}
        run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)[0]
               for m in (before, compacted.SerializeToString())]
        assert np.array_equal(run[0], run[1])
