"""Footprint off Linux, tested on Linux: each method the OS may offer (the kernel's reset peak,
a peak counter that cannot be reset, a sampling monitor) is forced in a fresh process and must
measure a known 200 MiB allocation, freed before ``end()``, as the exact Linux method does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantuna.objective import Footprint
from quantuna.objective._memory import METHODS, PeakProbe, choose_method

linux_exact = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                 reason="the exact reference needs Linux /proc/self/clear_refs")

REGION = r"""
import json, sys, time
import numpy as np
from quantuna.objective import Footprint, _memory

method, reader = sys.argv[1], sys.argv[2]
if method == "peak_wset":  # Windows' counter, stood in for by a counter of the same kind
    _memory.COUNTERS["peak_wset"] = _memory.maxrss_kib
if reader == "psutil":  # the reader of every OS without /proc
    _memory.rss_kib = _memory.psutil_rss_kib
footprint = Footprint(None if method == "auto" else method)
footprint.start()
block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
time.sleep(0.05)
del block  # gone before end(): the peak must count, not the end
footprint.end()
print(json.dumps([footprint.result(), footprint.method]))
"""


# Linux starts an exec'd process's ru_maxrss at its parent's resident size: a small launcher
# in between gives the region a fresh process whose peak is its own, as on the OSes simulated
LAUNCH = "import subprocess, sys; raise SystemExit(subprocess.call([sys.executable, *sys.argv[1:]]))"


def region(method: str, reader: str = "proc") -> tuple[float, str]:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    out = subprocess.run([sys.executable, "-c", LAUNCH, "-c", REGION, method, reader],
                         capture_output=True, text=True, check=True, env=env)
    mib, name = json.loads(out.stdout)
    return float(mib), str(name)


@linux_exact
def test_every_method_measures_a_200_mib_peak_as_the_exact_one_does() -> None:
    exact, name = region("auto")
    assert name == "vmhwm" and exact >= 190
    for method, reader in (("ru_maxrss", "proc"), ("peak_wset", "psutil"), ("sampled", "psutil"),
                           ("sampled", "proc")):
        mib, measured_by = region(method, reader)
        assert measured_by == method, (method, reader)
        assert mib >= 190 and mib == pytest.approx(exact, abs=10), (method, reader, mib, exact)


def test_the_method_is_a_function_of_the_platform(tmp_path: Path) -> None:
    writable = tmp_path / "clear_refs"
    writable.write_text("")
    assert choose_method("linux", clear_refs=str(writable)) == "vmhwm"
    assert choose_method("linux", clear_refs=str(tmp_path / "missing")) == "ru_maxrss"
    assert choose_method("darwin") == "ru_maxrss" and choose_method("freebsd14") == "ru_maxrss"
    assert choose_method("win32") == "peak_wset"
    assert set(METHODS) == {"vmhwm", "peak_wset", "ru_maxrss", "sampled"}
    with pytest.raises(ValueError, match="use one of"):
        Footprint("tracemalloc")


def test_a_counter_that_did_not_move_falls_back_to_the_sampled_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantuna.objective import _memory

    readings = iter([1000, 1000])  # the process's peak stays above anything the region does
    monkeypatch.setitem(_memory.COUNTERS, "ru_maxrss", lambda: next(readings))
    rss = iter([100, 100, 150, 120, 110, 110, 110, 110, 110, 110])
    monkeypatch.setattr(_memory, "rss_kib", lambda: next(rss, 110))
    probe = PeakProbe("ru_maxrss")
    assert probe.finish() == (50, "sampled")  # 150 KiB seen - 100 KiB at the start


def test_nothing_to_read_records_zero_and_says_so(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from quantuna.objective import _memory

    monkeypatch.setattr(_memory, "rss_kib", lambda: None)
    monkeypatch.setitem(_memory.COUNTERS, "peak_wset", lambda: None)
    with caplog.at_level("WARNING", logger="quantuna.objective"):
        assert PeakProbe("peak_wset").finish() == (0, "none")
    assert "install psutil" in caplog.text
