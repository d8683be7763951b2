"""The ResNet-18-shaped example (studies/resnet18_like.py), built small: its graph is what the
spec says, it is deterministic, and a quantuna study on it runs end to end.

The 224x224 model of studies/resnet18_like.yaml takes a minute to build and its speed-ups are a
benchmark's business (studies/benchmarks/speedups.py); here the same builder makes a 32x32 one.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import onnx
import pytest

import quantuna

STUDIES = Path(__file__).resolve().parents[2] / "studies"
sys.path.insert(0, str(STUDIES))
import resnet18_like as R  # noqa: E402

SMALL = f"""\
import sys
from pathlib import Path
sys.path.insert(0, {str(STUDIES)!r})
import resnet18_like as R

MODEL = Path(__file__).with_name("small.onnx")

def build(path):
    R.build(path, size=32, num_classes=10)

def calibration():
    return list(R.calibration_batches(MODEL, count=16, batch=8))

def evaluation():
    return list(R.evaluation_batches(MODEL, count=32, batch=8))
"""


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return R.build(tmp_path_factory.mktemp("resnet") / "small.onnx", size=32, num_classes=10)


def test_the_graph_is_resnet18_shaped_with_batch_norm_folded(small_model: Path) -> None:
    model = onnx.load(str(small_model))
    ops = collections.Counter(node.op_type for node in model.graph.node)
    assert ops["Conv"] == 20
    assert ops["Gemm"] == 1
    assert ops["BatchNormalization"] == 0
    assert ops["Add"] >= 8  # the eight residual shortcuts
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 32, 32]
    names = [node.name for node in model.graph.node]
    assert len(set(names)) == len(names) and all(names)


def test_the_builder_is_deterministic(small_model: Path, tmp_path: Path) -> None:
    again = R.build(tmp_path / "again.onnx", size=32, num_classes=10)
    assert again.read_bytes() == small_model.read_bytes()
    other = R.build(tmp_path / "other.onnx", size=32, num_classes=10, seed=1)
    assert other.read_bytes() != small_model.read_bytes()


def test_a_study_builds_the_model_on_first_use_and_measures_u8s8_and_s8s8(tmp_path: Path) -> None:
    (tmp_path / "small.py").write_text(SMALL)
    spec = {
        "study": {"name": "resnet-small", "sampler": "grid", "seed": 0},
        "model": {"path": "small.onnx", "build": "small.py:build"},
        "data": {"calibration": {"loader": "small.py:calibration"},
                 "evaluation": {"loader": "small.py:evaluation"}},
        "accuracy": {"metric": "top1"},
        "tuning": {"multi_objectives": {"objective": ["accuracy", "performance", "modelsize"],
                                        "higher_is_better": [True, False, False]},
                   "mode": "pareto", "accuracy_criterion": {"absolute": 0.5},
                   "exit_policy": {"max_trials": 2, "timeout": 0}},
        "measure": {"performance": {"batch_size": 1, "warmup": 1, "iterations": 3, "threads": 1}},
        "space": {"quant_format": ["QDQ"], "types": ["U8S8", "S8S8"],
                  "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}},
    }
    import yaml

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert not (tmp_path / "small.onnx").exists()

    result = quantuna.tune(path, n_trials=2)

    assert (tmp_path / "small.onnx").is_file()
    base = result.baseline["values"]
    assert base["accuracy"] == 1.0  # the labels are the fp32 model's own top-1
    measured = {t.config.types: t.values for t in result.trials}
    assert set(measured) == {"U8S8", "S8S8"}
    for values in measured.values():
        assert base["modelsize"] / values["modelsize"] > 3.5  # int8 weights: about 4x smaller
        assert 0.0 <= values["accuracy"] <= 1.0
