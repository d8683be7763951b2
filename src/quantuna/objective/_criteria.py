"""The accuracy criterion and the weighted score, as pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_RELATIVE = 0.01
"""Neural Compressor's default accuracy criterion: relative 1 %."""
RATIO_FLOOR = 1e-9
"""Values below this are raised to it before a baseline ratio is taken."""
RATIO_CAP = 100.0
"""Largest baseline ratio one objective can contribute."""


def equal_weights(count: int) -> list[float]:
    """Neural Compressor's default objective weights: equal, summing to 1."""
    return [1.0 / count] * count


def accuracy_target(baseline: float, criterion: dict[str, Any]) -> float:
    """Return the accuracy a trial must reach.

    Args:
        baseline: The fp32 model's accuracy B.
        criterion: ``{"relative": g}`` or ``{"absolute": g}`` (default relative 0.01), plus
            ``"higher_is_better"`` (default True). Relative: B - |B|g (B + |B|g when lower is
            better); absolute: B - g (B + g). A negative g means "must improve".

    Raises:
        ValueError: On unknown keys, both kinds, or a relative g outside (-1, 1).
    """
    unknown = set(criterion) - {"relative", "absolute", "higher_is_better"}
    if unknown or ("relative" in criterion and "absolute" in criterion):
        raise ValueError(
            f"accuracy criterion {criterion!r}: give one of 'relative' or 'absolute' "
            "and optionally 'higher_is_better'"
        )
    higher = bool(criterion.get("higher_is_better", True))
    if "absolute" in criterion:
        margin = float(criterion["absolute"])
    else:
        goal = float(criterion.get("relative", DEFAULT_RELATIVE))
        if not -1.0 < goal < 1.0:
            raise ValueError(f"relative accuracy criterion must be in (-1, 1), got {goal}")
        margin = abs(baseline) * goal
    return baseline - margin if higher else baseline + margin


def accuracy_constraint(accuracy: float, target: float, higher_is_better: bool = True) -> float:
    """Return the Optuna constraint value: <= 0 is feasible, a trial at the target passes."""
    return target - accuracy if higher_is_better else accuracy - target


def weighted_metric(values: Sequence[float], weights: Sequence[float]) -> float:
    """Return sum(w_i * m_i) / sum(w_i) (INC uses mean(w_i * m_i), which shrinks the target)."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(values),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one weight >= 0 per metric, with a positive sum; got {weights}")
    return float(np.dot(w, np.asarray(values, dtype=float)) / w.sum())


def weighted_ratio_score(
    values: Sequence[float],
    baseline: Sequence[float],
    higher_is_better: Sequence[bool],
    weights: Sequence[float] | None = None,
) -> float:
    """Return the weighted mode's per-trial value: sum_i w_i r_i / sum(w); the baseline scores 1.

    r_i is trial/baseline when higher is better, baseline/trial otherwise. Both numbers are first
    raised to :data:`RATIO_FLOOR`, so a zero or negative value counts as "practically zero", and
    r_i is capped at :data:`RATIO_CAP` so one objective cannot swamp the others.

    Raises:
        ValueError: On mismatched lengths or a non-finite value.
    """
    n = len(values)
    weights = [1.0] * n if weights is None else weights
    if not len(baseline) == len(higher_is_better) == len(weights) == n:
        raise ValueError("values, baseline, higher_is_better and weights must have one entry each")
    if not all(math.isfinite(v) for v in [*values, *baseline]):
        raise ValueError(f"cannot score non-finite values {list(values)} against {list(baseline)}")
    ratios = []
    for value, base, higher in zip(values, baseline, higher_is_better):
        trial, ref = max(value, RATIO_FLOOR), max(base, RATIO_FLOOR)
        ratios.append(min(trial / ref if higher else ref / trial, RATIO_CAP))
    return weighted_metric(ratios, weights)

