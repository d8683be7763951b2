"""``exclude_sensitive_nodes: auto``: the shortest prefix of the sensitivity ranking that, kept in
fp32, makes the default int8 config meet the accuracy target (NNCF's ranked revert, bisected).

The ranking's cumulative prefixes ({1}, {1, 2}, {1, 2, 3}, ...) are tried on the default int8
config with the full evaluation set (the accuracy pass alone, stopped early once hopeless):
first the empty prefix, then prefix lengths 1, 2, 4, 8, ... until one is feasible, then a
bisection between the last infeasible and the first feasible length. A ranking of n nodes costs
at most about 2 log2(n) + 2 evaluations; two broken layers ranked first cost three (0, 1, 2).

The answer (a prefix length, its nodes and every evaluation) is kept in the study's ``fallback``
user attr. The search then gets a ``node.<name>`` knob for the prefix's nodes and the next
:data:`NEIGHBOURS` nodes of the ranking, and its warm start begins with the answer.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from quantuna.config import QuantConfig
from quantuna.errors import HopelessTrial, TrialError
from quantuna.objective import accuracy_constraint
from quantuna.ort.measure import AccuracyTask, measure_accuracy
from quantuna.ort.quantize import quantize
from quantuna.study.session import Session

logger = logging.getLogger(__name__)
NEIGHBOURS = 2  # ranked nodes past the prefix that also get a knob


@dataclass(frozen=True)
class Fallback:
    """The shortest feasible prefix of the ranking and how it was found."""

    prefix: int  # how many of the ranked nodes stay fp32 (len(ranking): none was feasible)
    nodes: tuple[str, ...]
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # {prefix, accuracy, feasible}

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for the study's user attrs."""
        return {"prefix": self.prefix, "nodes": list(self.nodes), "evaluations": self.evaluations}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fallback:
        """The inverse of :meth:`to_dict`."""
        return cls(int(data["prefix"]), tuple(data["nodes"]), list(data.get("evaluations", [])))


def shortest_feasible_prefix(count: int, feasible: Callable[[int], bool]) -> int:
    """The smallest n in [0, count] with ``feasible(n)``, assuming feasibility is monotone in n
    and ``feasible(count)`` holds (never asked). Tries 0, then 1, 2, 4, ..., then bisects."""
    if count == 0 or feasible(0):
        return 0
    low, step = 0, 1  # low: the longest prefix known infeasible
    while step < count and not feasible(step):
        low, step = step, step * 2
    high = min(step, count)  # known feasible (or the whole ranking, assumed)
    while high - low > 1:
        middle = (low + high) // 2
        if feasible(middle):
            high = middle
        else:
            low = middle
    return high


def find_fallback(session: Session, default: QuantConfig, ranked: Sequence[str],
                  target: float) -> Fallback:
    """The shortest prefix of ``ranked`` (most sensitive first) that makes ``default`` feasible."""
    task = AccuracyTask(
        evaluation=session.evaluation, metric=session.metric, batch_size=session.eval_batch_size,
        output=session.spec.accuracy.output, threads=session.spec.measure.accuracy_threads,
        eval_func=session.eval_func, target=target,
    )
    higher = session.metric.higher_is_better
    ranges = session.ranges.get(default).path if default.approach == "static" else None
    evaluations: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quantuna-fallback-") as tmp:

        def feasible(n: int) -> bool:
            config = replace(default, exclude_nodes=tuple(ranked[:n]))
            try:
                path = quantize(session.model, config, Path(tmp) / "prefix.onnx", ranges=ranges)
                accuracy: float | None = measure_accuracy(path, task)
            except HopelessTrial:
                accuracy = None
            except TrialError as exc:
                logger.warning("fallback prefix %d not measured: %s", n, exc)
                accuracy = None
            ok = accuracy is not None and accuracy_constraint(accuracy, target, higher) <= 0
            evaluations.append({"prefix": n, "accuracy": accuracy, "feasible": ok})
            logger.info("fallback: %d most sensitive nodes in fp32: %s", n,
                        "feasible" if ok else "infeasible")
            return ok

        prefix = shortest_feasible_prefix(len(ranked), feasible)
    return Fallback(prefix, tuple(ranked[:prefix]), evaluations)


def knob_count(fallback: Fallback, ranked: int) -> int:
    """How many ranked nodes get a knob: the prefix and its neighbours in the ranking."""
    return min(ranked, fallback.prefix + NEIGHBOURS)
