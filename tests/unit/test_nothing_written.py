"""A command that fails leaves nothing behind: no empty .db, no study, no half a file."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, tiny_spec, write_spec

import quantuna._util
from quantuna.cli._common import dispatch
from quantuna.errors import SpecError
from quantuna.study.run import load_results, run_study


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantuna.cli", *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("command", [
    ["show"], ["export", "-o", "best.yaml"], ["report", "-o", "r.html"], ["export", "-o", "/proc/x.yaml"],
])
def test_reading_commands_on_a_missing_study_create_nothing(tiny_dir: Path, command: list[str]) -> None:
    spec = write_spec(tiny_dir, tiny_spec(tiny_dir))
    before = _listing(tiny_dir)
    proc = _cli(command[0], str(spec), *command[1:], cwd=tiny_dir)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _listing(tiny_dir) == before


def test_load_results_never_creates_a_sqlite_file(tiny_dir: Path) -> None:
    spec = write_spec(tiny_dir, tiny_spec(tiny_dir))
    with pytest.raises(SpecError, match="no study storage"):
        load_results(spec, mode="pareto")
    assert not (tiny_dir / "tiny.db").exists()


def test_an_unwritable_spec_folder_is_refused_before_the_study_exists(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("db")
    spec = write_spec(tiny_dir, tiny_spec(tiny_dir, study={"name": "tiny", "storage": f"sqlite:///{elsewhere}/s.db"}))
    real_access = os.access
    monkeypatch.setattr(quantuna._util.os, "access",  # root ignores modes: pretend the folder is read-only
                        lambda p, mode: False if Path(p) == tiny_dir else real_access(p, mode))
    before = _listing(tiny_dir)
    with pytest.raises(SpecError, match="cannot write in"):
        run_study(spec, n_trials=1)
    assert _listing(tiny_dir) == before and not (elsewhere / "s.db").exists()


def test_an_os_error_in_a_command_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise PermissionError(13, "Permission denied", "/root/secret/out.onnx")

    assert dispatch(handler, argparse.Namespace()) == 2
    err = capsys.readouterr().err
    assert err.strip() == "quantuna: error: /root/secret/out.onnx: Permission denied"


@pytest.mark.parametrize("planted", ["world-writable", "symlink"])
def test_a_planted_cache_folder_is_refused_before_the_study_exists(tiny_dir: Path, planted: str) -> None:
    spec = write_spec(tiny_dir, tiny_spec(tiny_dir))
    workdir = tiny_dir / "tiny.quantuna"
    if planted == "symlink":
        (tiny_dir / "theirs").mkdir()
        workdir.symlink_to(tiny_dir / "theirs")
    else:
        workdir.mkdir()
        os.chmod(workdir, 0o777)
    with pytest.raises(SpecError, match="not a folder of yours"):
        run_study(spec, n_trials=1)
    assert not (tiny_dir / "tiny.db").exists()
