"""Values the schema used to let through and the run rejected late: refused before any write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, tiny_spec, write_spec

from quantuna.errors import SpecError
from quantuna.spec import load_spec
from quantuna.study.run import run_study
from quantuna.study.session import prepare


def _refused(tiny_dir: Path, spec: dict[str, Any], match: str) -> str:
    with pytest.raises(SpecError, match=match) as info:
        prepare(load_spec(write_spec(tiny_dir, spec)))
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    assert not (tiny_dir / "tiny.db").exists() and not (tiny_dir / "tiny.quantuna").exists()
    return message


def _tuning(tiny_dir: Path, **changes: Any) -> dict[str, Any]:
    tuning = tiny_spec(tiny_dir)["tuning"]
    tuning.update(changes)
    return tuning


@pytest.mark.parametrize(("criterion", "match"), [
    ({"relative": 1.5}, "relative 1.5 must be a fraction"),
    ({"relative": 1.0}, "relative"),
    ({"absolute": float("nan")}, "finite"),
    ({"absolute": 1.0}, "every model would meet it"),
])
def test_absurd_accuracy_criteria(tiny_dir: Path, criterion: dict[str, Any], match: str) -> None:
    _refused(tiny_dir, tiny_spec(tiny_dir, tuning=_tuning(tiny_dir, accuracy_criterion=criterion)), match)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_seed_out_of_range(tiny_dir: Path, seed: int) -> None:
    _refused(tiny_dir, tiny_spec(tiny_dir, study={"name": "tiny", "seed": seed}), "study.seed")


@pytest.mark.parametrize(("options", "match"), [
    ({"n_trials": -5}, "n_trials"), ({"timeout": -5.0}, "timeout"), ({"timeout": float("nan")}, "timeout"),
])
def test_api_budget_values(tiny_dir: Path, options: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        run_study(write_spec(tiny_dir, tiny_spec(tiny_dir)), **options)
    assert not (tiny_dir / "tiny.db").exists()


def _npz(tiny_dir: Path, name: str, **arrays: np.ndarray) -> str:
    np.savez(tiny_dir / name, **arrays)
    return name


@pytest.mark.parametrize(("which", "arrays", "match"), [
    ("evaluation", {"x": np.zeros((0, 1, 4, 4), np.float32), "y": np.zeros(0, np.int64)}, "0 samples"),
    ("calibration", {"x": np.zeros((0, 1, 4, 4), np.float32)}, "0 samples"),
    ("evaluation", {"x": np.full((10, 1, 4, 4), np.nan, np.float32), "y": np.zeros(10, np.int64)}, "NaN"),
    ("calibration", {"x": np.full((10, 1, 4, 4), np.inf, np.float32)}, "NaN or Inf"),
    ("evaluation", {"x": np.zeros((10, 1, 4, 4), np.float32), "y": np.array(["cat"] * 10)}, "numeric labels"),
    ("evaluation", {"x": np.zeros((10, 1, 4, 4), np.float32), "y": np.eye(3)[np.zeros(10, int)]}, "one class"),
    ("evaluation", {"x": np.zeros((10, 1, 4, 4), np.float32), "y": np.full(10, 0.5)}, "whole class"),
    ("evaluation", {"x": np.zeros((10, 1, 4, 4), np.float32), "y": np.arange(1, 11) % 4}, "run from 0 to 3"),
])
def test_bad_data(tiny_dir: Path, which: str, arrays: dict[str, np.ndarray], match: str) -> None:
    spec = tiny_spec(tiny_dir)
    source = spec["data"][which]
    source["path"] = _npz(tiny_dir, f"bad_{which}.npz", **arrays)
    source.pop("size", None)
    spec["space"]["calibration_size"] = [1] if which == "calibration" else None
    if spec["space"]["calibration_size"] is None:
        del spec["space"]["calibration_size"]
    _refused(tiny_dir, spec, match)


METRICS = """
import numpy as np
def none(outputs, labels):
    return None
def array(outputs, labels):
    return np.zeros(3)
def text(outputs, labels):
    return "0.9"
def one_argument(outputs):
    return 1.0
def nan(outputs, labels):
    return float("nan")
def fine(outputs, labels):
    return np.float32(0.5)
"""


@pytest.mark.parametrize(("name", "match"), [
    ("none", "returned NoneType, not a number"),
    ("array", "returned an array of shape \\(3,\\)"),
    ("text", "returned str"),
    ("one_argument", "raised TypeError on the fp32 outputs of one batch"),
    ("nan", "not a finite number"),
])
def test_a_metric_is_called_once_before_anything_is_written(tiny_dir: Path, name: str, match: str) -> None:
    (tiny_dir / "my_metrics.py").write_text(METRICS)
    spec = tiny_spec(tiny_dir, accuracy={"metric": f"my_metrics.py:{name}"})
    _refused(tiny_dir, spec, match)


def test_a_good_custom_metric_passes_the_probe(tiny_dir: Path) -> None:
    (tiny_dir / "my_metrics.py").write_text(METRICS)
    prepare(load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir, accuracy={"metric": "my_metrics.py:fine"}))))


@pytest.mark.parametrize(("spec_changes", "match"), [
    ({"multi_objectives": {"objective": ["accuracy", "performance"], "higher_is_better": [False, False]}},
     r"higher_is_better\[0\]: False contradicts accuracy \(top1\)"),
    ({"multi_objectives": {"objective": ["accuracy", "performance"], "higher_is_better": [True, True]}},
     r"higher_is_better\[1\]: True contradicts performance"),
])
def test_directions_that_contradict_a_builtin(tiny_dir: Path, spec_changes: dict[str, Any], match: str) -> None:
    _refused(tiny_dir, tiny_spec(tiny_dir, tuning=_tuning(tiny_dir, **spec_changes)), match)


def test_accuracy_direction_that_contradicts_a_builtin_metric(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir, accuracy={"metric": "top1", "higher_is_better": False})
    _refused(tiny_dir, spec, "accuracy.higher_is_better: False contradicts top1")


@pytest.mark.parametrize("argv", [["--trials", "0"], ["--trials", "-5"], ["--timeout", "-5"]])
def test_cli_budget_values_one_line_exit_2_nothing_written(tiny_dir: Path, argv: list[str]) -> None:
    spec = write_spec(tiny_dir, tiny_spec(tiny_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "quantuna.cli", "run", str(spec), *argv], capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tiny_dir / "tiny.db").exists() and not (tiny_dir / "tiny.quantuna").exists()


def test_an_opset_onnxruntime_cannot_run_is_refused_before_anything_is_written(tiny_dir: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_dir / "tiny.onnx"))
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 1  # onnx.checker accepts it
    onnx.save(model, str(tiny_dir / "tiny.onnx"))
    _refused(tiny_dir, tiny_spec(tiny_dir), "onnxruntime cannot run tiny.onnx")


def test_a_custom_metric_minimised_in_the_objectives_needs_its_own_direction(tiny_dir: Path) -> None:
    (tiny_dir / "my_metrics.py").write_text(METRICS)
    tuning = _tuning(tiny_dir, multi_objectives={"objective": ["accuracy", "performance"],
                                                 "higher_is_better": [False, False]})
    spec = tiny_spec(tiny_dir, accuracy={"metric": "my_metrics.py:fine"}, tuning=tuning)
    _refused(tiny_dir, spec, "set accuracy.higher_is_better: false")
    spec["accuracy"]["higher_is_better"] = False  # both say lower is better: the constraint agrees
    session = prepare(load_spec(write_spec(tiny_dir, spec)))
    assert session.higher_is_better[0] is False and session.metric.higher_is_better is False
