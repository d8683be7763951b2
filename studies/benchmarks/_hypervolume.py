"""Hypervolume for figure 3 (``search_quality.py``): exact slicing volume, the boxes, and the
latency credit that follows quantuna's dominance with tolerance.

All vectors are minimisation vectors (accuracy negated). Latency is a ratio to fp32 with an
interval; :func:`credited_latency` applies issue 14's rule, as :mod:`quantuna.front` does: two
latencies that lie within each other's interval are equal, so a point is credited with the best
latency it cannot be told apart from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quantuna.front import Interval, equal_within_noise


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume (minimisation) of ``points`` below ``ref``."""
    pts = points[np.all(points < ref, axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    volume, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(volume)


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume (minimisation) of 2-D or 3-D ``points`` below ``ref``, by slicing."""
    points = np.asarray(points, dtype=float).reshape(-1, len(ref))
    points = points[np.all(points < ref, axis=1)]
    if not len(points):
        return 0.0
    if len(ref) == 2:
        return _hv2(points, ref)
    if len(ref) != 3:
        raise ValueError("hypervolume: 2 or 3 objectives")
    zs = np.unique(points[:, 2])
    volume = 0.0
    for i, z in enumerate(zs):
        top = zs[i + 1] if i + 1 < len(zs) else ref[2]
        volume += _hv2(points[points[:, 2] <= z][:, :2], ref[:2]) * (top - z)
    return float(volume)


class Normaliser:
    """Minimisation vectors scaled so that ``ideal`` maps to 0 and ``worst`` to 1, per objective;
    the hypervolume is taken below ``ref`` (in scaled units)."""

    def __init__(self, ideal: np.ndarray, worst: np.ndarray, ref: float) -> None:
        self.low = np.asarray(ideal, dtype=float)
        span = np.asarray(worst, dtype=float) - self.low
        self.flat = span <= 0  # nothing beats fp32 on this objective (e.g. no int8 speed-up)
        self.span = np.where(self.flat, 1.0, span)
        self.ref = np.full(len(self.low), ref)

    def scaled(self, points: np.ndarray) -> np.ndarray:
        """Points in box units, clipped to the box: a point worse than the reference on some
        objective (e.g. an int8 config slower than fp32 on a CPU without fast int8) lies on the
        box's face and adds no volume, as it adds nothing over fp32. On a flat objective (the
        best value is fp32's) a point at the best value is 0, any other on the face."""
        points = np.asarray(points, dtype=float)
        scaled = (points - self.low) / self.span
        scaled = np.where(self.flat & (points > self.low), self.ref, scaled)
        return np.minimum(scaled, self.ref)

    def hv(self, points: np.ndarray) -> float:
        if not len(points):
            return 0.0
        return hypervolume(self.scaled(points), self.ref)


def credited_latency(ratios: Sequence[float], intervals: Sequence[Interval | None]) -> list[float]:
    """Per point, the lowest latency ratio among the points it is equal to within noise (itself
    included): the latency quantuna's tolerance dominance cannot tell it from.

    The relation is not transitive (a ~ b and b ~ c need not give a ~ c), so only direct ties
    count; a point is never credited with less than the fastest point it ties with.
    """
    credit = []
    for r, interval in zip(ratios, intervals):
        tied = [o for o, oi in zip(ratios, intervals) if equal_within_noise(r, interval, o, oi)]
        credit.append(min([r, *tied]))
    return credit
