"""Calibration memory: estimated from inferred shapes, refused up front in one line, peak measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_spec
from tiny_transformer import HIDDEN, build_tiny_transformer, token_spec, write_token_data

from quantuna.errors import SpecError
from quantuna.ort import calib_memory
from quantuna.ort.calib_memory import (
    PeakMemory,
    check_fits,
    estimate_bytes,
    tensor_bytes_per_sample,
)
from quantuna.spec import load_spec
from quantuna.study.session import prepare


def test_the_estimate_counts_the_calibrated_activations_at_the_datas_shapes(tmp_path: Path) -> None:
    model = build_tiny_transformer(tmp_path / "block.onnx")
    shapes = {"input_ids": (32, 8), "token_type_ids": (32, 8)}
    per_sample = tensor_bytes_per_sample(model, ["LayerNormalization"], shapes)
    # three LayerNorms, each with an input and an output of [1, 8, HIDDEN] fp32, all distinct
    assert per_sample == 6 * 8 * HIDDEN * 4
    longer = tensor_bytes_per_sample(model, ["LayerNormalization"], dict.fromkeys(shapes, (32, 16)))
    assert longer == 2 * per_sample  # the sequence length of the data, not of the declaration
    assert estimate_bytes(per_sample, "Entropy", 100) > estimate_bytes(per_sample, "MinMax", 100)


def test_a_setting_beyond_the_machines_memory_is_refused_in_one_line() -> None:
    check_fits(1000, [("Entropy", 10)], where="s.yaml", available=10**9)  # fits
    with pytest.raises(SpecError) as info:
        check_fits(10**6, [("MinMax", 10), ("Entropy", 500)], where="s.yaml", available=10**8)
    message = str(info.value)
    assert "Entropy on 500 samples" in message and "MiB available" in message
    assert "\n" not in message and len(message) < 300


def test_a_study_whose_calibration_cannot_fit_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_token_data(tmp_path, build_tiny_transformer(tmp_path / "tiny_transformer.onnx"))
    space = {"approach": ["static"], "calibrate_method": ["MinMax", "Entropy"],
             "op_types": {"MatMul": ["int8", "fp32"]}}
    path = write_spec(tmp_path, token_spec(space), "big.yaml")
    per_sample = tensor_bytes_per_sample(tmp_path / "tiny_transformer.onnx", ["MatMul"],
                                         {"input_ids": (32, 8), "token_type_ids": (32, 8)})
    room = estimate_bytes(per_sample, "MinMax", 32) + 1  # MinMax fits, Entropy does not
    monkeypatch.setattr(calib_memory, "available_bytes", lambda: room)
    with pytest.raises(SpecError, match="Entropy on 32 samples would hold about"):
        prepare(load_spec(path))
    assert not (tmp_path / "big.quantuna").exists()


def test_peak_memory_sees_an_allocation_inside_the_block() -> None:
    with PeakMemory(interval=0.005) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block.sum()
        del block
    assert memory.added_bytes > 32 * 2**20
