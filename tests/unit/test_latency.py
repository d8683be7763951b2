"""Latency as a measurement with an error bar, on synthetic timings (never wall-clock thresholds)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from quantuna._util import lock_dir
from quantuna.errors import QuantunaError
from quantuna.objective import Performance
from quantuna.ort.latency import interleaved_rounds, latency_lock, latency_stats


def _rounds(ratio: float, drift: np.ndarray, noise: float, runs: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = 0.05  # ms: a digits-sized model
    ref = [list(base * d * (1 + noise * rng.standard_normal(runs))) for d in drift]
    model = [list(ratio * base * d * (1 + noise * rng.standard_normal(runs))) for d in drift]
    return model, ref


def test_drift_common_to_a_round_cancels_in_the_ratio() -> None:
    drift = np.array([1.0, 2.5, 1.2, 3.0, 1.0, 1.8, 2.2, 1.1, 2.9, 1.4])  # the machine slows 3x
    model, ref = _rounds(1.2, drift, noise=0.01)
    stats = latency_stats(model, ref)
    assert stats.ratio == pytest.approx(1.2, rel=0.01)
    assert stats.low <= 1.2 <= stats.high and stats.high - stats.low < 0.03
    assert (stats.rounds, stats.runs) == (10, 20)
    # the median ms is what Performance reports: the model's own runs, drift included
    assert stats.ms == pytest.approx(float(np.median(np.concatenate(model))))
    # what timing apart would have said: the model's rounds against the reference's later ones
    apart = np.median(np.concatenate(model[:5])) / np.median(np.concatenate(ref[5:]))
    assert abs(apart - 1.2) > 0.1


def test_the_interval_holds_the_truth_and_widens_with_noise() -> None:
    drift = np.ones(10)
    quiet = latency_stats(*_rounds(0.8, drift, noise=0.02))
    noisy = latency_stats(*_rounds(0.8, drift, noise=0.30, runs=3))
    assert quiet.low <= 0.8 <= quiet.high
    assert noisy.low <= 0.8 <= noisy.high
    assert noisy.high - noisy.low > 3 * (quiet.high - quiet.low)


def test_the_same_model_against_itself_straddles_one() -> None:
    stats = latency_stats(*_rounds(1.0, np.linspace(1, 2, 10), noise=0.05))
    assert stats.low <= 1.0 <= stats.high


def test_two_rounds_or_fewer_bootstrap_the_runs() -> None:
    stats = latency_stats(*_rounds(1.5, np.ones(2), noise=0.05, runs=50))
    assert stats.rounds == 2 and stats.low < 1.5 < stats.high


def test_mismatched_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        latency_stats([[1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="at least one run"):
        latency_stats([[1.0], []], [[1.0], [1.0]])


def test_blocks_interleave_in_a_rotating_order_through_the_performance_api() -> None:
    log: list[str] = []
    timers = [[Performance()], [Performance()], [Performance()]]
    runners = [lambda name=name: log.append(name) for name in "abc"]
    timed = interleaved_rounds(runners, timers, rounds=3, runs=2)
    assert log == list("aabbcc" "bbccaa" "ccaabb")
    assert [len(r) for r in timed[0]] == [2, 2, 2]
    # INC's API: one start()/end() per run, the result is the median of them
    assert len(timers[0][0].result_list()) == 6
    assert timed[0][1] == timers[0][0].result_list()[2:4]


def test_the_lock_names_its_holder_and_hands_back_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "latency.lock"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with latency_lock("study other", path=path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    assert path.read_text() == f"pid {os.getpid()}, study other"
    seen: list[str | None] = []

    def on_wait(who: str | None) -> None:
        seen.append(who)
        if who is not None:
            release.set()

    with latency_lock("study mine", on_wait, path=path) as waited:
        assert path.read_text() == f"pid {os.getpid()}, study mine"
    thread.join()
    assert seen == [f"pid {os.getpid()}, study other", None]
    assert waited > 0
    assert path.read_text() == ""  # released: nobody named


def test_no_wait_no_hook(tmp_path: Path) -> None:
    seen: list[str | None] = []
    with latency_lock("study s", seen.append, path=tmp_path / "l.lock") as waited:
        pass
    assert seen == [] and waited >= 0


def test_the_lock_refuses_a_symlink_and_lives_in_a_private_directory(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "latency.lock"
    link.symlink_to(target)
    with pytest.raises(QuantunaError, match="symlink"), latency_lock("study s", path=link):
        pass
    assert target.read_text() == "keep"
    assert oct(os.stat(lock_dir()).st_mode & 0o777) == oct(0o700)
