"""A bad cache entry is discarded, logged once and rebuilt; files are never half-written."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from quantuna._util import atomic_write, lock_dir
from quantuna.config import QuantConfig
from quantuna.data import load_dataset
from quantuna.errors import QuantunaError, SpecError
from quantuna.model import build_model, inspect_model
from quantuna.ort.calibrate import RangeCache
from quantuna.ort.latency import latency_lock, latency_lock_path
from quantuna.ort.quantize import quantize
from quantuna.spec import DataSource

CONFIG = QuantConfig(approach="static", quant_format="QDQ", types="U8S8", calibrate_method="MinMax",
                     calibration_size=40, activation_symmetric=False, op_types=("Conv", "Gemm"))


def _cache(tiny_dir: Path) -> RangeCache:
    model = inspect_model(tiny_dir / "tiny.onnx")
    data = load_dataset(DataSource(path=tiny_dir / "calib.npz", inputs={"x": "x"}), model, where="c")
    return RangeCache(tiny_dir / "ranges", model.path, model.sha256, data, 8, op_types=["Conv", "Gemm"])


@pytest.mark.parametrize("poison", ["truncate", "garbage", "no-checksum", "edited"])
def test_a_bad_range_entry_is_rebuilt_not_trusted(tiny_dir: Path, poison: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = _cache(tiny_dir)
    first = cache.get(CONFIG)
    assert not first.reused and first.path.is_file()
    good = first.path.read_bytes()
    checksum = first.path.with_name(first.path.name + ".sha256")
    if poison == "truncate":
        first.path.write_bytes(good[: len(good) // 2])
    elif poison == "garbage":
        first.path.write_bytes(b"\x00garbage{")
    elif poison == "no-checksum":
        checksum.unlink()
    else:  # valid JSON, other ranges: only the checksum can tell
        first.path.write_bytes(good.replace(b"0", b"1", 1))
    with caplog.at_level(logging.WARNING):
        again = cache.get(CONFIG)
        assert cache.get(CONFIG).reused  # rebuilt once, then trusted
    assert not again.reused and again.path.read_bytes() == good
    warnings = [r for r in caplog.records if "discarded" in r.getMessage()]
    assert len(warnings) == 1
    model = inspect_model(tiny_dir / "tiny.onnx")
    assert quantize(model, CONFIG, tiny_dir / "q.onnx", ranges=again.path).is_file()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_write(tmp_path / "x.yaml", "old\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, "new\n" * 1000)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]  # no temporary file left


def test_locks_live_in_a_private_per_user_dir_and_never_follow_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with latency_lock("study test"):
        pass
    directory = lock_dir()
    assert directory.parent == tmp_path and stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert latency_lock_path().parent == directory
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    latency_lock_path().unlink()
    latency_lock_path().symlink_to(victim)
    with pytest.raises(QuantunaError, match="symlink"), latency_lock("study test"):
        pass
    assert victim.read_text() == "precious"
    os.chmod(directory, 0o777)
    lock_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.rename(tmp_path / "elsewhere")
    directory.symlink_to(tmp_path / "elsewhere")  # a planted symlink instead of the folder
    with pytest.raises(QuantunaError, match="not a folder owned by you"):
        lock_dir()


def test_a_failing_build_leaves_nothing_beside_the_model(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "builder.py").write_text(
        "def half(path):\n    open(path, 'wb').write(b'half')\n    raise RuntimeError('disk full')\n"
    )
    models = tmp_path / "models"
    with pytest.raises(SpecError, match="disk full"):
        build_model(models / "m.onnx", f"{tmp_path / 'builder.py'}:half", where="model.build")
    assert list(models.iterdir()) == []
