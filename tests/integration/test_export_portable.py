"""An exported config is a file a team commits: it applies from any checkout, byte for byte."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
import yaml
from conftest import ROOT, build_tiny_cnn, tiny_spec, write_spec, write_tiny_data
from onnx import numpy_helper

import quantuna
from quantuna.errors import SpecError
from quantuna.export import export_trial, file_sha256, write_export
from quantuna.study.run import load_results, run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A finished tiny study (one static config) in ``project/``: (spec path, trial, sha256)."""
    project = tmp_path_factory.mktemp("project")
    write_tiny_data(project, build_tiny_cnn(project / "tiny.onnx"))
    spec = tiny_spec(project)
    spec["space"] = {"approach": ["static"], "calibrate_method": ["Entropy"],
                     "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}}
    path = write_spec(project, spec)
    result = run_study(path, n_trials=2)
    trial = next(t for t in result.trials if not t.config.is_fp32)
    assert trial.model_sha256
    return path, trial.number, trial.model_sha256


def _export(study: tuple[Path, int, str], out: Path) -> Path:
    path, number, _ = study
    return write_export(export_trial(load_results(path), trial=number), out)


def _copy_project(source: Path, target: Path, calibration: Path | None = None) -> Path:
    """The export (in ``exports/``), the model and the calibration file in a new folder."""
    (target / "exports").mkdir(parents=True)
    shutil.copy(source / "exports" / "best.yaml", target / "exports" / "best.yaml")
    shutil.copy(source / "tiny.onnx", target / "tiny.onnx")
    shutil.copy(source / "calib.npz", calibration or target / "calib.npz")
    return target / "exports" / "best.yaml"


def test_the_export_is_portable_and_two_exports_are_the_same_bytes(study: tuple[Path, int, str]) -> None:
    project = study[0].parent
    first = _export(study, project / "exports" / "best.yaml")
    again = _export(study, project / "exports" / "again.yaml")
    assert first.read_bytes() == again.read_bytes()  # no timestamp, nothing that changes
    text = first.read_text()
    assert str(project) not in text and "exported" not in text
    document = yaml.safe_load(text)
    assert document["quantuna_config"] == 2
    assert document["calibration"]["path"] == "../calib.npz"
    assert document["calibration"]["sha256"] == file_sha256(project / "calib.npz")
    provenance = document["provenance"]
    assert provenance["storage"] == "sqlite:///../tiny.db"
    assert provenance["source_model"] == {"name": "tiny.onnx", "path": "../tiny.onnx",
                                          "sha256": file_sha256(project / "tiny.onnx")}
    assert provenance["quantized_model"]["sha256"] == study[2]
    assert (provenance["study"], provenance["trial"]) == ("tiny", study[1])
    assert set(provenance["versions"]) >= {"quantuna", "onnxruntime", "onnx", "optuna"}
    assert provenance["host"]["cpu"] and isinstance(provenance["host"]["cpu_isa"], list)
    assert provenance["host"]["threads"]["latency"] == 1
    measured = document["measured"]
    assert measured["units"] == {"accuracy": "top1", "performance": "ms", "modelsize": "MiB"}
    assert measured["model_bytes"] > 0 and measured["latency"]["ms"] > 0


def test_a_copy_in_another_folder_applies_to_the_same_bytes(study: tuple[Path, int, str],
                                                            tmp_path: Path) -> None:
    project = study[0].parent
    _export(study, project / "exports" / "best.yaml")
    config = _copy_project(project, tmp_path / "elsewhere")
    out = tmp_path / "again.onnx"
    # the CLI, from an unrelated folder, with no --model: the config's source model, found
    run = subprocess.run([sys.executable, "-m", "quantuna.cli", "apply", str(config), "-o", str(out)],
                         cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 0, run.stderr
    assert file_sha256(out) == study[2]
    assert f"identical to the model trial {study[1]} measured" in run.stdout


def test_a_moved_calibration_file_is_found_on_the_search_path_by_sha256(
        study: tuple[Path, int, str], tmp_path: Path) -> None:
    project = study[0].parent
    _export(study, project / "exports" / "best.yaml")
    moved = tmp_path / "data"
    moved.mkdir()
    config = _copy_project(project, tmp_path / "elsewhere", calibration=moved / "renamed.npz")
    with pytest.raises(SpecError) as info:
        quantuna.apply(config, out=tmp_path / "x.onnx")
    message = str(info.value)
    assert "\n" not in message and "calib.npz" in message and "--search-path" in message
    assert file_sha256(moved / "renamed.npz") in message and str(config.parent.parent) in message
    quantuna.apply(config, out=tmp_path / "again.onnx", search_path=[moved])
    assert file_sha256(tmp_path / "again.onnx") == study[2]


def _renamed_input(source: Path, out: Path, new: str) -> Path:
    model = onnx.load(str(source))
    old = model.graph.input[0].name
    model.graph.input[0].name = new
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    onnx.save(model, str(out))
    return out


def _numbers(path: Path) -> list[bytes]:
    """The initializers' values (scales, zero points, weights), whatever their names."""
    return sorted(numpy_helper.to_array(t).tobytes() for t in onnx.load(str(path)).graph.initializer)


def test_renamed_inputs_are_mapped_with_input_map(study: tuple[Path, int, str], tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    project = study[0].parent
    config = _export(study, project / "exports" / "best.yaml")
    renamed = _renamed_input(project / "tiny.onnx", tmp_path / "renamed.onnx", "input.1")
    quantuna.apply(config, project / "tiny.onnx", out=tmp_path / "same.onnx")
    quantuna.apply(config, renamed, out=tmp_path / "mapped.onnx", input_map={"x": "input.1"})
    mapped = onnx.load(str(tmp_path / "mapped.onnx"))
    assert [i.name for i in mapped.graph.input] == ["input.1"]
    assert _numbers(tmp_path / "mapped.onnx") == _numbers(tmp_path / "same.onnx")  # same ranges
    with caplog.at_level(logging.WARNING):  # one input, one array: mapped, and said
        quantuna.apply(config, renamed, out=tmp_path / "implicit.onnx")
    assert "'x' fed to the model's only input 'input.1'" in caplog.text
    assert _numbers(tmp_path / "implicit.onnx") == _numbers(tmp_path / "same.onnx")
    with pytest.raises(SpecError, match=r"no input 'y' .*'x'.*'input.1'"):
        quantuna.apply(config, renamed, out=tmp_path / "bad.onnx", input_map={"y": "input.1"})
    with pytest.raises(SpecError, match=r"no input 'z' .*'input.1'.*'x'"):
        quantuna.apply(config, renamed, out=tmp_path / "bad.onnx", input_map={"x": "z"})


def _format_1(document: dict[str, Any], project: Path) -> dict[str, Any]:
    """The document as quantuna wrote it before format 2: absolute paths, a timestamp."""
    calibration = dict(document["calibration"])
    calibration["path"] = str(project / "calib.npz")
    calibration["sha256"] = calibration.pop("data_sha256")
    provenance = dict(document["provenance"])
    quantized = provenance.pop("quantized_model")
    provenance.pop("host")
    provenance["source_model"] = {"path": str(project / "tiny.onnx"),
                                  "sha256": provenance["source_model"]["sha256"]}
    provenance["exported"] = "2026-11-30T10:00:00+00:00"
    measured = {**document["measured"], "model_sha256": quantized["sha256"]}
    return {**document, "quantuna_config": 1, "calibration": calibration,
            "provenance": provenance, "measured": measured}


def test_format_1_exports_with_absolute_paths_still_apply(study: tuple[Path, int, str],
                                                         tmp_path: Path) -> None:
    project = study[0].parent
    document = export_trial(load_results(study[0]), trial=study[1])
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(_format_1(document, project), sort_keys=False))
    quantuna.apply(old, project / "tiny.onnx", out=tmp_path / "again.onnx")
    assert file_sha256(tmp_path / "again.onnx") == study[2]
    # moved: found by name in the search path (format 1 recorded no file sha256)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(project / "calib.npz", moved / "calib.npz")
    data = yaml.safe_load(old.read_text())
    data["calibration"]["path"] = "/nowhere/calib.npz"
    old.write_text(yaml.safe_dump(data, sort_keys=False))
    quantuna.apply(old, project / "tiny.onnx", out=tmp_path / "moved.onnx", search_path=[moved])
    assert file_sha256(tmp_path / "moved.onnx") == study[2]


def test_the_committed_example_export_applies_from_the_repository(tmp_path: Path) -> None:
    example = ROOT / "docs" / "example-export.yaml"
    text = example.read_text()
    assert "/work" not in text and "exported" not in text and str(ROOT) not in text
    document = yaml.safe_load(text)
    out = tmp_path / "digits.int8.onnx"
    quantuna.apply(example, out=out)  # the model and data it names, relative to docs/
    from quantuna.export import versions

    if document["provenance"]["versions"] == versions():  # same versions: the same bytes
        assert file_sha256(out) == document["provenance"]["quantized_model"]["sha256"]
