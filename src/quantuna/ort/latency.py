"""Latency as a measurement with an error bar: rounds interleaved with the fp32 reference.

A shared machine drifts (frequency, other processes, cache pressure) on the scale of seconds, so
a latency timed alone says little about a ratio to a baseline timed minutes earlier. Here every
timed model runs in ``rounds``; in each round a block of its runs and a block of the fp32
reference's runs (the reference session is kept open for the whole study) are timed back to back,
in an order that rotates from round to round. Drift is common to both blocks of a round and
cancels in the per-round ratio of medians; the spread of those ratios gives a 95 % interval
(a seeded bootstrap of their median).

The per-host latency lock lives here too: local workers never time at once; the holder (pid and
study) is written into the lock file, a waiting process says who holds it, and the wait is
returned so that it is recorded apart from every timing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantuna._util import lock_path, open_lock_file
from quantuna.objective import Performance
from quantuna.ort.session import open_session

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
LockWaitHook = Callable[["str | None"], None]
"""Called with the holder's description when a wait for the lock starts, and None when it ends."""


@dataclass(frozen=True)
class LatencyStats:
    """One model's latency against the fp32 reference timed in the same rounds.

    Attributes:
        ms: the median of every timed run of the model (milliseconds per batch).
        fp32_ms: the median of the reference's runs in the same rounds.
        ratio: the median over rounds of (model's block median / reference's block median).
        low: lower end of the ratio's 95 % interval.
        high: upper end of the ratio's 95 % interval.
        rounds: rounds timed.
        runs: timed runs of the model per round (the reference ran as many).
    """

    ms: float
    fp32_ms: float
    ratio: float
    low: float
    high: float
    rounds: int
    runs: int

    def to_dict(self) -> dict[str, float | int]:
        """The figures as a flat dict (a trial user attr)."""
        return asdict(self)


def _bootstrap(values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """The 95 % percentile interval of ``statistic`` over seeded resamples of ``values`` (axis 0)."""
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))
    stats = statistic(values[index])
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def latency_stats(model_rounds: Sequence[Sequence[float]],
                  reference_rounds: Sequence[Sequence[float]]) -> LatencyStats:
    """The ratio to the reference with its 95 % interval, from per-round timings (ms).

    With three rounds or more the interval is a bootstrap of the median of the per-round ratios
    (so it holds the between-round noise the ratio does not cancel); with fewer, a bootstrap of
    the ratio of medians over the runs themselves.

    Raises:
        ValueError: the two sides have different rounds, or a round is empty.
    """
    if len(model_rounds) != len(reference_rounds) or not model_rounds:
        raise ValueError("the model and the reference need the same, non-zero number of rounds")
    if any(not block for block in [*model_rounds, *reference_rounds]):
        raise ValueError("every round needs at least one run of each model")
    ratios = np.array([np.median(m) / np.median(r) for m, r in zip(model_rounds, reference_rounds)])
    every_model = np.concatenate([np.asarray(m, float) for m in model_rounds])
    every_ref = np.concatenate([np.asarray(r, float) for r in reference_rounds])
    if len(ratios) >= 3:
        low, high = _bootstrap(ratios, lambda s: np.median(s, axis=1))
    else:
        size = min(len(every_model), len(every_ref))
        pairs = np.stack([every_model[:size], every_ref[:size]], axis=1)
        low, high = _bootstrap(pairs, lambda s: np.median(s[:, :, 0], axis=1) / np.median(s[:, :, 1], axis=1))
    ratio = float(np.median(ratios))
    return LatencyStats(
        ms=float(np.median(every_model)), fp32_ms=float(np.median(every_ref)), ratio=ratio,
        low=min(low, ratio), high=max(high, ratio), rounds=len(ratios),
        runs=min(len(m) for m in model_rounds),
    )


def interleaved_rounds(runners: Sequence[Callable[[], Any]], timers: Sequence[Sequence[Performance]],
                       *, rounds: int, runs: int) -> list[list[list[float]]]:
    """Time every runner ``runs`` times per round for ``rounds`` rounds, blocks interleaved.

    Each run is wrapped in its timers' ``start()``/``end()`` (Neural Compressor's Performance
    API; the first timer's new entries are the round's timings), so every model pays the same
    timing overhead. The order of the blocks rotates by one each round.

    Returns:
        Per runner, per round, the milliseconds of each run.
    """
    timed: list[list[list[float]]] = [[] for _ in runners]
    count = len(runners)
    for r in range(rounds):
        for i in ((j + r) % count for j in range(count)):
            objectives, run = timers[i], runners[i]
            before = len(objectives[0].result_list())
            for _ in range(runs):
                for obj in objectives:
                    obj.start()
                run()
                for obj in objectives:
                    obj.end()
            timed[i].append(list(objectives[0].result_list()[before:]))
    return timed


class Reference:
    """The fp32 reference session, opened on first use and kept open for the study."""

    def __init__(self, path: Path, threads: int) -> None:
        """Refer to the fp32 model at ``path``; nothing is loaded until :meth:`run` is called."""
        self.path = path
        self.threads = threads
        self._session: Any = None
        self.timer = Performance()

    @property
    def session(self) -> Any:
        """The onnxruntime session (opened now if it is not yet)."""
        if self._session is None:
            self._session = open_session(self.path, self.threads)
        return self._session

    def run(self, batch: dict[str, np.ndarray]) -> Any:
        """One run of the reference on ``batch``."""
        return self.session.run(None, batch)


@dataclass(frozen=True)
class Timing:
    """How a study times latency: its fp32 reference, who it is (for the lock), who to tell."""

    reference: Reference
    holder: str = ""
    on_wait: LockWaitHook | None = None


def latency_lock_path() -> Path:
    """The per-host, per-user lock that serialises the latency loops of local workers."""
    return lock_path("latency")


def _holder_of(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another quantuna process"


@contextlib.contextmanager
def latency_lock(holder: str, on_wait: LockWaitHook | None = None,
                 path: Path | None = None) -> Iterator[float]:
    """Hold the latency lock; yields the seconds spent waiting for it (never part of a timing).

    The lock file is opened without following symlinks; while held it names ``holder``
    (``pid N, study S``). A process that finds it taken calls ``on_wait(holder text)``, waits,
    then calls ``on_wait(None)``.
    """
    path = path or latency_lock_path()
    fd = open_lock_file(path)
    try:
        start = time.perf_counter()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder_of(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
            if on_wait is not None:
                on_wait(None)
        waited = time.perf_counter() - start
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {holder}".encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
