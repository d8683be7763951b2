"""graph_optimization: the fused model's op types as knobs, static never fused, keys stable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
