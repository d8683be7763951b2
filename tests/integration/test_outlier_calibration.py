"""Calibration data with a few outlier samples: the default space's MovingAverage keeps the
accuracy that MinMax loses, and the warm start tries it first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_spec, write_spec

from quantuna.cli.app import main
from quantuna.data import outlier_inputs
from quantuna.spec import load_spec
from quantuna.study.run import run_study
from quantuna.study.session import prepare

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _with_outliers(tiny_dir: Path) -> Path:
    """The tiny calibration set with one sample in eight scaled x50 (one per calibration batch)."""
    x = np.load(tiny_dir / "calib.npz")["x"]
    x[::8] *= 50.0
    np.savez(tiny_dir / "calib_outliers.npz", x=x)
    spec = tiny_spec(tiny_dir, space={"approach": ["static"], "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}})
    spec["data"]["calibration"]["path"] = "calib_outliers.npz"
    spec["tuning"]["accuracy_criterion"] = {"absolute": 0.99}  # every trial evaluates all its data
    return write_spec(tiny_dir, spec)


def test_moving_average_beats_minmax_on_outlier_calibration_and_comes_first(tiny_dir: Path) -> None:
    result = run_study(_with_outliers(tiny_dir), n_trials=2)
    first, second = sorted(result.study.trials, key=lambda t: t.number)
    assert first.user_attrs["config"]["calibrate_method"] == "MovingAverage"
    assert second.user_attrs["config"]["calibrate_method"] == "MinMax"
    assert first.user_attrs["values"]["accuracy"] > second.user_attrs["values"]["accuracy"]


def test_clean_calibration_keeps_minmax_first(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir, space={"approach": ["static"], "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}})
    session = prepare(load_spec(write_spec(tiny_dir, spec)))
    assert outlier_inputs(session.calibration) == {}
    result = run_study(write_spec(tiny_dir, spec), n_trials=1)
    assert result.study.trials[0].user_attrs["config"]["calibrate_method"] == "MinMax"


def test_validate_names_the_outlier_input_and_what_the_warm_start_does(
        tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_with_outliers(tiny_dir))]) == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if "outliers" in line)
    assert "x " in note and "MovingAverage calibration first" in note
