"""onnxruntime's side effects stay out of the user's working directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as h
import pytest
from onnx import TensorProto

from quantuna.ort._capture import scratch_cwd
from quantuna.ort.prepare import PrepareSettings, _preprocess


def _incomplete_shapes_model() -> onnx.ModelProto:
    """A MatMul feeding an op onnxruntime's symbolic shape inference knows nothing of: it gives
    up ("Incomplete symbolic shape inference") after saving sym_shape_infer_temp.onnx in the cwd."""
    x = h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = h.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             h.make_node("Foo", ["m"], ["y"], name="foo", domain="custom")]
    graph = h.make_graph(nodes, "g", [x], [y], [w])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("custom", 1)])


def test_pre_processing_leaves_nothing_in_the_working_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(work)
    notes: list[str] = []
    _preprocess(_incomplete_shapes_model(), PrepareSettings(preprocess="auto"), Path("../scratch"),
                [], notes, "model.onnx")
    assert os.listdir(work) == []  # no sym_shape_infer_temp.onnx, no <uuid>.data
    assert Path.cwd() == work


def test_the_scratch_directory_is_left_even_when_the_block_raises(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), scratch_cwd("t-"):
        Path("stray.onnx").write_bytes(b"x")
        raise RuntimeError("boom")
    assert Path.cwd() == tmp_path and os.listdir(tmp_path) == []
