"""Shared fixtures: tiny ONNX models built with onnx.helper, seeded data, spec files in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "studies"


def build_tiny_cnn(path: Path, seed: int = 0) -> Path:
    """Conv -> Relu -> Flatten -> Gemm -> Relu -> Gemm: a 4x4 single-channel classifier."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (8,)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (64, 128)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (64,)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (3, 64)).astype(np.float32)
    b3 = np.zeros(3, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Flatten", ["r1"], ["f1"], name="flatten"),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "w3", "b3"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in
         [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_tiny_data(directory: Path, model_path: Path, seed: int = 0) -> None:
    """Calibration and evaluation arrays whose labels are the fp32 model's own predictions."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    calib = rng.normal(0, 1, (40, 1, 4, 4)).astype(np.float32)
    x = rng.normal(0, 1, (60, 1, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0].argmax(axis=1).astype(np.int64)
    np.savez(directory / "calib.npz", x=calib)
    np.savez(directory / "eval.npz", x=x, y=y)


def tiny_spec(directory: Path, **overrides: Any) -> dict[str, Any]:
    """A small spec dict over the tiny model; sections in ``overrides`` replace the defaults."""
    spec: dict[str, Any] = {
        "study": {"name": "tiny", "seed": 0},
        "model": "tiny.onnx",
        "data": {
            "calibration": {"path": "calib.npz", "inputs": {"x": "x"}, "size": 40, "batch_size": 8},
            "evaluation": {"path": "eval.npz", "inputs": {"x": "x"}, "labels": "y", "batch_size": 30},
        },
        "accuracy": {"metric": "top1"},
        "tuning": {
            "multi_objectives": {
                "objective": ["accuracy", "performance", "modelsize"],
                "higher_is_better": [True, False, False],
            },
            "mode": "pareto",
            "accuracy_criterion": {"absolute": 0.2},
            "exit_policy": {"max_trials": 6},
        },
        "measure": {"performance": {"batch_size": 1, "warmup": 2, "iterations": 10, "threads": 1}},
        "space": {
            "approach": ["static", "dynamic"],
            "quant_format": ["QDQ", "QOperator"],
            "calibrate_method": ["MinMax", "Entropy", "Percentile"],
            "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]},
        },
    }
    spec.update(overrides)
    return spec


@pytest.fixture()
def tiny_dir(tmp_path: Path) -> Path:
    """A folder with tiny.onnx, calib.npz and eval.npz."""
    model = build_tiny_cnn(tmp_path / "tiny.onnx")
    write_tiny_data(tmp_path, model)
    return tmp_path


def write_spec(directory: Path, spec: dict[str, Any], name: str = "tiny.yaml") -> Path:
    """Write a spec dict as YAML in ``directory``."""
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture()
def tiny_spec_path(tiny_dir: Path) -> Path:
    """The default tiny spec written as tiny.yaml."""
    return write_spec(tiny_dir, tiny_spec(tiny_dir))


@pytest.fixture()
def digits_copy(tmp_path: Path) -> Path:
    """The shipped digits example copied to tmp_path, so its SQLite file lands there."""
    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, tmp_path / sub)
    shutil.copy(STUDIES / "digits.yaml", tmp_path / "digits.yaml")
    return tmp_path / "digits.yaml"
