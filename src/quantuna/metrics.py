"""Accuracy metrics over a model's evaluation outputs: built-ins or a user's ``module:function``.

A metric is ``metric(outputs, labels) -> float`` where ``outputs`` is the chosen model output for
the whole evaluation set (batches concatenated) and ``labels`` the evaluation labels (or ``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quantuna._util import import_reference
from quantuna.errors import SpecError

MetricFn = Callable[[np.ndarray, "np.ndarray | None"], float]


def top_k(k: int) -> MetricFn:
    """Top-k classification accuracy against integer labels."""

    def metric(outputs: np.ndarray, labels: np.ndarray | None) -> float:
        if labels is None:
            raise ValueError(f"top{k} needs labels")
        scores = outputs.reshape(len(outputs), -1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return float(np.mean(np.any(best == labels.reshape(-1, 1), axis=1)))

    return metric


def mse(outputs: np.ndarray, labels: np.ndarray | None) -> float:
    """Mean squared error against the labels (lower is better)."""
    if labels is None:
        raise ValueError("mse needs labels")
    diff = outputs.astype(np.float64).reshape(labels.shape) - labels
    return float(np.mean(diff * diff))


def cosine(outputs: np.ndarray, labels: np.ndarray | None) -> float:
    """Mean cosine similarity of each output row with its label row."""
    if labels is None:
        raise ValueError("cosine needs labels")
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = labels.reshape(len(labels), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)))


@dataclass(frozen=True)
class Metric:
    """A named metric with its direction.

    ``sample_bounds`` is set for metrics that are a mean of per-sample scores lying within
    ``(low, high)``: then the best final value reachable from a partial evaluation is known, and a
    hopeless trial can stop early (see :func:`best_reachable`).
    """

    name: str
    fn: MetricFn
    higher_is_better: bool
    needs_labels: bool = True
    sample_bounds: tuple[float, float] | None = None
    bounds: tuple[float, float] | None = None

    @property
    def value_bounds(self) -> tuple[float, float] | None:
        """Where the metric's value can lie: declared ``bounds``, else the per-sample bounds."""
        return self.bounds or self.sample_bounds


def unreachable_bound(metric: Metric, target: float) -> float | None:
    """The bound a target lies beyond (no model can meet it), or None when it is reachable.

    Higher-is-better metrics cannot exceed their upper bound (top1, top5 and cosine: 1), lower-is-
    better ones cannot go below their lower bound (mse: 0). A target exactly at the bound is
    reachable.
    """
    if metric.value_bounds is None:
        return None
    low, high = metric.value_bounds
    if metric.higher_is_better and target > high:
        return high
    if not metric.higher_is_better and target < low:
        return low
    return None


def best_reachable(metric: Metric, partial: float, seen: int, total: int) -> float | None:
    """The best final value of a per-sample-mean metric after ``seen`` of ``total`` samples.

    With ``partial`` the mean over the samples seen, the remaining samples can at best all score
    the bound in the metric's direction: (partial * seen + (total - seen) * bound) / total.
    ``None`` when the metric has no per-sample bounds.
    """
    if metric.sample_bounds is None or total <= 0:
        return None
    bound = metric.sample_bounds[1] if metric.higher_is_better else metric.sample_bounds[0]
    return (partial * seen + (total - seen) * bound) / total


BUILTIN_METRICS: dict[str, Metric] = {
    "top1": Metric("top1", top_k(1), True, sample_bounds=(0.0, 1.0)),
    "top5": Metric("top5", top_k(5), True, sample_bounds=(0.0, 1.0)),
    "mse": Metric("mse", mse, False, sample_bounds=(0.0, float("inf"))),
    "cosine": Metric("cosine", cosine, True, sample_bounds=(-1.0, 1.0)),
}


def check_labels(metric: Metric, labels: np.ndarray | None, where: str) -> None:
    """Refuse labels a built-in metric would score wrongly (string labels made top1 score 0)."""
    if labels is None or metric.name not in BUILTIN_METRICS:
        return
    if labels.dtype.kind not in "iuf":
        raise SpecError(f"{where}.labels: {metric.name} needs numeric labels, got dtype {labels.dtype}")
    if metric.name in ("top1", "top5"):
        if labels.ndim > 1 and labels.shape[1:] != (1,):
            raise SpecError(f"{where}.labels: {metric.name} needs one class index per sample, got "
                            f"shape {labels.shape} (one-hot? store labels.argmax(axis=1))")
        if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
            raise SpecError(f"{where}.labels: {metric.name} needs whole class indices, got fractions")


def check_classes(metric: Metric, labels: np.ndarray | None, outputs: np.ndarray, where: str) -> None:
    """top-k labels must index the model's classes (labels 1..10 for 10 classes score low)."""
    if labels is None or metric.name not in ("top1", "top5") or not len(outputs):
        return
    classes = outputs.reshape(len(outputs), -1).shape[1]
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= classes:
        raise SpecError(f"{where}.labels: {metric.name} labels run from {low} to {high}, but the "
                        f"model scores {classes} classes (0 to {classes - 1})")


def metric_value(metric: Metric, value: object, where: str) -> float:
    """``value`` as the metric's number, or a SpecError saying what the metric returned."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        shown = f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise SpecError(f"{where}: {metric.name} returned {shown}, not a number "
                        "(a metric is fn(outputs, labels) -> float)")
    if not np.isfinite(float(value)):
        raise SpecError(f"{where}: {metric.name} returned {value} on the fp32 model, not a finite number")
    return float(value)


def resolve_metric(name: str, higher_is_better: bool | None, *, where: str) -> Metric:
    """A built-in metric by name, or a user's ``package.module:function``."""
    if name in BUILTIN_METRICS:
        metric = BUILTIN_METRICS[name]
    elif ":" in name:  # "pkg.mod:fn" or "file.py:fn"
        fn = import_reference(name, where=where)
        if not callable(fn):
            raise SpecError(f"{where}: {name} is not callable")
        declared = getattr(fn, "bounds", None)  # a custom metric may declare (low, high)
        bounds = (float(declared[0]), float(declared[1])) if declared is not None else None
        metric = Metric(name, fn, True, needs_labels=False, bounds=bounds)
    else:
        known = ", ".join(BUILTIN_METRICS)
        raise SpecError(f"{where}: unknown metric {name!r} (built-ins: {known}; or 'pkg.mod:fn')")
    if higher_is_better is not None and higher_is_better != metric.higher_is_better:
        if name in BUILTIN_METRICS:  # top1 minimised searches for the least accurate model
            way = "higher" if metric.higher_is_better else "lower"
            raise SpecError(f"{where.removesuffix('.metric')}.higher_is_better: {higher_is_better} contradicts "
                            f"{name}, where {way} is better; remove it or give "
                            f"{metric.higher_is_better}")
        metric = Metric(metric.name, metric.fn, higher_is_better, metric.needs_labels,
                        bounds=metric.value_bounds)
    return metric
