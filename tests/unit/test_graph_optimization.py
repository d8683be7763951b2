"""graph_optimization: the fused model's op types as knobs, static never fused, keys stable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_transformer import build_tiny_transformer

from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.model import inspect_model
from quantuna.space import SearchSpace
from quantuna.spec import SpaceSection


def _spaces(tmp_path: Path, **knobs: object) -> SearchSpace:
    model = inspect_model(build_tiny_transformer(tmp_path / "block.onnx"))
    fused = replace(model, op_types=("Attention", "EmbedLayerNormalization", "MatMul",
                                     "SkipLayerNormalization"))
    return SearchSpace(SpaceSection(**knobs), model, 32, fused=fused)


def test_fused_trials_search_the_fused_op_types_and_are_never_static(tmp_path: Path) -> None:
    space = _spaces(tmp_path, approach=["static", "dynamic"], graph_optimization=["none", "bert"],
                    op_types={"MatMul": ["int8", "fp32"], "Attention": ["int8", "fp32"]})
    configs = space.distinct_configs()
    fused = [c for c in configs if c.graph_optimization == "bert"]
    assert fused and all(c.approach == "dynamic" for c in fused)
    assert any("Attention" in c.op_types for c in fused)
    assert not any("Attention" in c.op_types for c in configs if c.graph_optimization is None)
    assert any(c.approach == "static" for c in configs)
    assert ("op.Attention", ["int8", "fp32"]) in space.knobs()


def test_only_static_with_fusions_or_no_fused_model_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="add one of them to space.approach"):
        _spaces(tmp_path, approach=["static"], graph_optimization=["bert"])
    model = inspect_model(build_tiny_transformer(tmp_path / "b2.onnx"))
    with pytest.raises(SpecError, match="needs the fused model"):
        SearchSpace(SpaceSection(approach=["dynamic"], graph_optimization=["bert"]), model, 32)


def test_a_fused_static_config_is_refused_and_unfused_keys_do_not_change() -> None:
    base = {"approach": "dynamic", "types": "U8S8", "op_types": ["MatMul"]}
    assert QuantConfig.from_dict(base).key() != QuantConfig.from_dict(
        {**base, "graph_optimization": "bert"}).key()
    assert "graph_optimization" not in QuantConfig.from_dict(base).to_dict()
    static = {"approach": "static", "types": "U8S8", "op_types": ["MatMul"],
              "calibrate_method": "MinMax", "calibration_size": 8, "graph_optimization": "bert"}
    with pytest.raises(SpecError, match="graph_optimization: applies to dynamic and weight_only"):
        QuantConfig.from_dict(static)


def _head_split_block(path: Path, hidden: int = 64, head: int = 16) -> Path:
    """A LayerNorm and a Reshape to [0, 0, -1, head] built by Concat, as current exporters write."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = [helper.make_node("Constant", [], [n], name=f"c_{n}", value=numpy_helper.from_array(
        np.array(v, np.int64), n)) for n, v in (("d0", [0]), ("d1", [0]), ("dm", [-1]), ("dh", [head]))]
    nodes = [*const,
             helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], name="ln", axis=-1),
             helper.make_node("Concat", ["d0", "d1", "dm", "dh"], ["shape"], name="cat", axis=0),
             helper.make_node("Reshape", ["h", "shape"], ["y"], name="split")]
    graph = helper.make_graph(
        nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
         numpy_helper.from_array(np.zeros(hidden, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_heads_and_hidden_size_are_read_off_the_graph(tmp_path: Path) -> None:
    import onnx

    from quantuna.ort.fuse import attention_shape

    model = onnx.load(str(_head_split_block(tmp_path / "split.onnx", hidden=64, head=16)))
    assert attention_shape(model) == (4, 64)
    plain = onnx.load(str(build_tiny_transformer(tmp_path / "block.onnx")))
    assert attention_shape(plain) == (0, 0)  # no head split: onnxruntime detects (or fuses none)
