"""The reported front: Pareto dominance that treats latency as a measurement with an interval.

Rules (DESIGN §3, issue 14):

- two points whose latencies lie within each other's interval (each one's ratio to fp32 inside
  the other's 95 % interval) are equal on latency; the other objectives compare exactly;
- a point dominates another when it is no worse on every objective and better on one;
- byte-identical models (same sha256) are one point, and points equal on every objective are one
  point of the reported front: the simpler config wins (fewer quantized op types and nodes, then
  the smaller file, then the earlier trial).

Pure functions over :class:`Point`; :mod:`quantuna.results` builds the points from trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Interval = tuple[float, float]


@dataclass(frozen=True)
class Point:
    """One trial as the front sees it.

    Attributes:
        key: the trial number.
        values: one value per objective (latency as its ratio to fp32: drift cancels in it).
        intervals: per objective, the value's 95 % interval, or None when it is exact.
        identity: the model's sha256 (byte-identical models are one point), or None.
        simplicity: sorts simpler configs first.
    """

    key: int
    values: tuple[float, ...]
    intervals: tuple[Interval | None, ...]
    identity: str | None
    simplicity: tuple[Any, ...]


def equal_within_noise(a: float, a_interval: Interval | None, b: float, b_interval: Interval | None) -> bool:
    """True when ``a`` and ``b`` lie within each other's interval (exact values: equal)."""
    if a_interval is None or b_interval is None:
        return a == b
    return a_interval[0] <= b <= a_interval[1] and b_interval[0] <= a <= b_interval[1]


def _compare(a: Point, b: Point, i: int, higher: bool) -> int:
    """+1 when ``a`` is better on objective ``i``, -1 when worse, 0 when equal within noise."""
    x, y = a.values[i], b.values[i]
    if equal_within_noise(x, a.intervals[i], y, b.intervals[i]):
        return 0
    better = x > y if higher else x < y
    return 1 if better else -1


def dominates(a: Point, b: Point, higher: Sequence[bool]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one (noise-aware)."""
    signs = [_compare(a, b, i, h) for i, h in enumerate(higher)]
    return all(s >= 0 for s in signs) and any(s > 0 for s in signs)


def equal_points(a: Point, b: Point, higher: Sequence[bool]) -> bool:
    """Equal on every objective (latency within noise): one point of the reported front."""
    return all(_compare(a, b, i, h) == 0 for i, h in enumerate(higher))


def reported_front(points: Sequence[Point], higher: Sequence[bool]) -> list[Point]:
    """The non-dominated points, one per model file and one per group of equal points.

    Returns the kept points, simplest first within equal groups, in trial order.
    """
    by_identity: dict[Any, Point] = {}
    for p in sorted(points, key=lambda p: p.simplicity):
        by_identity.setdefault(p.identity if p.identity is not None else ("trial", p.key), p)
    pool = list(by_identity.values())
    survivors = [p for p in pool if not any(dominates(o, p, higher) for o in pool if o is not p)]
    if not survivors and pool:  # ties that are not transitive can, in theory, leave nothing
        survivors = pool
    kept: list[Point] = []
    for p in sorted(survivors, key=lambda p: p.simplicity):
        if not any(equal_points(p, k, higher) for k in kept):
            kept.append(p)
    return sorted(kept, key=lambda p: p.key)
