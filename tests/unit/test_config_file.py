"""A config file is data, maybe from someone else: typed, bounded, and it runs no code unasked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from quantuna._util import read_yaml
from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.export import ExportedConfig, apply

STATIC = {
    "approach": "static", "quant_format": "QDQ", "types": "U8S8", "per_channel": False,
    "reduce_range": False, "activation_symmetric": False, "weight_symmetric": True,
    "calibrate_method": "MinMax", "calibration_size": 40, "op_types": ["Conv", "Gemm"],
}


def _document(tiny_dir: Path, **calibration: Any) -> dict[str, Any]:
    return {
        "quantuna_config": 1,
        "config": dict(STATIC),
        "calibration": {"path": str(tiny_dir / "calib.npz"), "inputs": {"x": "x"}, "batch_size": 8,
                        **calibration},
    }


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"types": "U8S9"}, "types"),
        ({"calibrate_method": "Bogus"}, "calibrate_method"),
        ({"per_channel": "maybe"}, "per_channel"),
        ({"per_channel": 1}, "per_channel"),
        ({"calibration_size": 0}, "calibration_size"),
        ({"calibration_size": "40"}, "calibration_size"),
        ({"percentile": 99.9}, "percentile"),
        ({"op_types": "Conv"}, "op_types"),
        ({"op_types": []}, "op_types"),
        ({"approach": "int4"}, "approach"),
        ({"approach": "dynamic"}, "applies to static quantization only"),
        ({"bogus": 1}, "unknown key"),
        ({"exclude_nodes": ["a" * 5000]}, "not an op type or node name"),
    ],
)
def test_tampered_config_values_are_one_line_spec_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        QuantConfig.from_dict({**STATIC, **change}, where="best.yaml: config")
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_a_config_round_trips_through_the_schema() -> None:
    config = QuantConfig.from_dict(STATIC)
    assert QuantConfig.from_dict(config.to_dict()) == config
    assert QuantConfig.from_dict({}) == QuantConfig()
    dynamic = {"approach": "dynamic", "types": "U8U8", "op_types": ["MatMul"], "per_channel": True}
    assert QuantConfig.from_dict(dynamic).approach == "dynamic"


def test_node_names_exported_from_pytorch_round_trip() -> None:
    """torch.onnx names nodes ``/features/features.2/Conv``: an ``auto`` fallback keeps them fp32."""
    config = QuantConfig.from_dict({**STATIC, "exclude_nodes": ["/classifier/classifier.1/Gemm"]})
    assert QuantConfig.from_dict(config.to_dict()) == config


def test_op_types_unknown_to_onnxruntime_and_the_model_are_refused(tiny_dir: Path) -> None:
    doc = _document(tiny_dir)
    doc["config"]["op_types"] = ["Conv", "NotAnOp"]
    with pytest.raises(SpecError, match="NotAnOp"):
        apply(_write(tiny_dir / "best.yaml", doc), tiny_dir / "tiny.onnx", out=tiny_dir / "o.onnx")
    assert not (tiny_dir / "o.onnx").exists()


def test_calibration_size_larger_than_the_data_is_refused(tiny_dir: Path) -> None:
    doc = _document(tiny_dir)
    doc["config"]["calibration_size"] = 5000
    with pytest.raises(SpecError, match="5000 samples asked"):
        apply(_write(tiny_dir / "best.yaml", doc), tiny_dir / "tiny.onnx", out=tiny_dir / "o.onnx")


@pytest.mark.parametrize(("section", "value"), [
    ("calibration", {"sha256": "0000"}),
    ("provenance", {"source_model": {"sha256": "0000"}}),
    ("measured", {"model_sha256": "xyz"}),
    ("calibration", {"batch_size": "8"}),
])
def test_hashes_and_sizes_in_other_sections_are_checked(tiny_dir: Path, section: str, value: Any) -> None:
    doc = _document(tiny_dir)
    if section == "calibration":
        doc["calibration"].update(value)
    else:
        doc[section] = value
    with pytest.raises(SpecError, match=section):
        ExportedConfig.read(_write(tiny_dir / "best.yaml", doc))


EVIL = """
from pathlib import Path
Path(__file__).with_name("ran.txt").write_text("code ran")
def f():
    import numpy as np
    return [{"x": np.zeros((40, 1, 4, 4), np.float32)}]
"""


def test_apply_never_runs_a_loader_the_config_names_unless_trusted(tiny_dir: Path) -> None:
    (tiny_dir / "evil.py").write_text(EVIL)
    doc = _document(tiny_dir)
    doc["calibration"] = {"loader": str(tiny_dir / "evil.py") + ":f", "batch_size": 8}
    config = _write(tiny_dir / "best.yaml", doc)
    with pytest.raises(SpecError, match="--trust-code") as info:
        apply(config, tiny_dir / "tiny.onnx", out=tiny_dir / "o.onnx")
    assert "trust_code=True" in str(info.value)
    assert not (tiny_dir / "ran.txt").exists() and not (tiny_dir / "o.onnx").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "quantuna.cli", "apply", str(config), "--model", str(tiny_dir / "tiny.onnx"),
         "-o", str(tiny_dir / "o.onnx")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 2 and "--trust-code" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tiny_dir / "ran.txt").exists() and not (tiny_dir / "o.onnx").exists()
    apply(config, tiny_dir / "tiny.onnx", out=tiny_dir / "o.onnx", trust_code=True)
    assert (tiny_dir / "ran.txt").exists() and (tiny_dir / "o.onnx").is_file()


def test_an_unwritable_output_is_refused_before_any_work(tiny_dir: Path) -> None:
    config = _write(tiny_dir / "best.yaml", _document(tiny_dir))
    for out in (Path("/proc/x.onnx"), tiny_dir):
        with pytest.raises(SpecError, match="cannot write|is a directory"):
            apply(config, tiny_dir / "missing.onnx", out=out)  # the model is not even looked at


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("config:\n  approach: static\n  approach: fp32\n")
    with pytest.raises(SpecError, match="line 3.*duplicate key 'approach'"):
        read_yaml(path, what="a quantuna config")
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n")  # a merge key may be overridden
    assert read_yaml(path, what="x")["c"] == {"b": 2}


def test_a_billion_laughs_file_is_refused_quickly_in_one_short_line(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("model: *i")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(SpecError, match="aliases expand") as info:
        read_yaml(path, what="a study spec")
    assert time.perf_counter() - start < 2.0
    assert len(str(info.value)) < 300
    path.write_text("a: &x [1, 2]\nb: *x\n")  # a few aliases are fine
    assert read_yaml(path, what="x")["b"] == [1, 2]


@pytest.mark.parametrize("text", ["a: " + "[" * 20000 + "]" * 20000, "a: " + "[" * 400 + "]" * 400,
                                  "a: &x [*x]"])
def test_deep_or_recursive_yaml_is_one_line_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpecError, match="nested deeper|aliases expand"):
        read_yaml(path, what="a study spec")
