"""``MultiObjective``: several objectives with INC's accuracy criterion and weighted pick."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from quantuna.objective._base import Objective, resolve_objective
from quantuna.objective._builtins import Accuracy
from quantuna.objective._criteria import (
    DEFAULT_RELATIVE,
    accuracy_constraint,
    accuracy_target,
    weighted_metric,
)

logger = logging.getLogger("quantuna.objective")
_ZERO = 1e-20  # INC's stand-in for a zero value in best_result's ratios


class _Pick(NamedTuple):
    index: int  # type: ignore[assignment]  # INC's name; it shadows tuple.index, as INC's does not
    trial: Any


class BestResult(_Pick):
    """What :meth:`MultiObjective.best_result` picked: INC's ``(index, trial)`` pair.

    A named tuple of exactly two fields, so ``idx, trial = obj.best_result(...)``,
    ``result[0]`` and ``result == (idx, trial)`` behave as in Neural Compressor; what quantuna
    adds is carried as attributes.

    Attributes:
        index: Position of the chosen trial in ``tune_data``.
        trial: ``tune_data[index]``.
        feasible: False when no trial met the accuracy target; ``index`` is then the trial
            closest to the target (ties broken by score).
        scores: Weighted [0, 1] score of every trial, before failing trials are zeroed.
        passed: Whether each trial met the accuracy target.
    """

    feasible: bool
    scores: tuple[float, ...]
    passed: tuple[bool, ...]

    def __new__(cls, index: int, trial: Any, feasible: bool = True,
                scores: tuple[float, ...] = (), passed: tuple[bool, ...] = ()) -> BestResult:
        self = super().__new__(cls, index, trial)
        self.feasible, self.scores, self.passed = feasible, scores, passed
        return self

    def __repr__(self) -> str:
        return (f"BestResult(index={self.index}, trial={self.trial!r}, feasible={self.feasible}, "
                f"scores={self.scores}, passed={self.passed})")


def _as_list(value: Any) -> list[float]:
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]


def _broadcast(values: list[Any], n: int, name: str, repeat: bool = True) -> list[Any]:
    """``values`` with one entry per item (a single entry is repeated if ``repeat``)."""
    if repeat and len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{name} {values} needs one entry per item ({n})")
    return values


class MultiObjective:
    """Several objectives measured together, with INC's accuracy criterion and weighted score.

    Args:
        objectives: Names (see :func:`resolve_objective`), Objective classes or instances.
        accuracy_criterion: See :func:`accuracy_target`.
        metric_criterion: Per-metric higher-is-better when the evaluation returns several metrics.
        metric_weight: Weights combining several metrics into one: sum(w m) / sum(w).
        obj_criterion: Per-objective higher-is-better; default: accuracy follows the criterion,
            the rest their ``higher_is_better``. One value is repeated for all.
        obj_weight: Per-objective weights of the score; default equal.
        is_measure: Call ``eval_func(model, objectives[0])`` and let it drive start/end.

    Example:
        >>> obj = MultiObjective(["accuracy", "performance"], {"relative": 0.01})
        >>> obj.obj_criterion
        [True, False]
    """

    def __init__(
        self,
        objectives: Sequence[str | Objective | type[Objective]],
        accuracy_criterion: dict[str, Any],
        metric_criterion: Sequence[bool] = (True,),
        metric_weight: Sequence[float] | None = None,
        obj_criterion: Sequence[bool] | None = None,
        obj_weight: Sequence[float] | None = None,
        is_measure: bool = False,
    ) -> None:
        """Check the arguments and build the objectives (see the class docstring)."""
        accuracy_target(1.0, accuracy_criterion)  # validates the criterion
        self.accuracy_criterion = dict(accuracy_criterion)
        self.higher_is_better = bool(accuracy_criterion.get("higher_is_better", True))
        self.relative = "absolute" not in accuracy_criterion
        self.objectives = [self._instantiate(o) for o in objectives]
        self.representation = [str(o).capitalize() for o in self.objectives]
        criterion = list(obj_criterion or []) or [
            self.higher_is_better if isinstance(o, Accuracy) else o.higher_is_better
            for o in self.objectives
        ]
        self.obj_criterion = _broadcast(criterion, len(self.objectives), "obj_criterion")
        if obj_weight is not None:
            _broadcast(list(obj_weight), len(self.objectives), "obj_weight", repeat=False)
        self.metric_criterion = list(metric_criterion)
        self.metric_weight = None if metric_weight is None else list(metric_weight)
        self.obj_weight = None if obj_weight is None else list(obj_weight)
        self.is_measure = is_measure
        self.baseline: tuple[Any, list[Any]] | None = None
        self.val: tuple[Any, list[float]] | None = None
        self._accuracy_target: list[float] | None = None

    @staticmethod
    def _instantiate(objective: str | Objective | type[Objective]) -> Objective:
        if isinstance(objective, Objective):
            return objective
        if isinstance(objective, type) and issubclass(objective, Objective):
            return objective()
        return resolve_objective(objective)()

    def _metrics(self, acc: Any) -> tuple[list[float], list[bool]]:
        """Accuracy as compared with the target: one value per metric, and their directions."""
        values = _as_list(acc)
        if len(values) == 1:
            return values, [self.higher_is_better]
        if self.metric_weight is not None:
            return [weighted_metric(values, self.metric_weight)], [self.higher_is_better]
        return values, _broadcast(self.metric_criterion, len(values), "metric_criterion")

    def _targets(self, baseline_acc: Any) -> list[float]:
        values, directions = self._metrics(baseline_acc)
        kind = "relative" if self.relative else "absolute"
        goal = self.accuracy_criterion.get(kind, DEFAULT_RELATIVE)
        return [
            accuracy_target(b, {kind: goal, "higher_is_better": d})
            for b, d in zip(values, directions)
        ]

    @property
    def accuracy_target(self) -> list[float]:
        """Per-metric targets from :attr:`baseline`, unless set explicitly."""
        if self._accuracy_target is not None:
            return self._accuracy_target
        if self.baseline is None:
            raise RuntimeError("set MultiObjective.baseline = (accuracy, [objective values]) first")
        return self._targets(self.baseline[0])

    @accuracy_target.setter
    def accuracy_target(self, val: list[float] | None) -> None:
        self._accuracy_target = val

    def constraint_value(self, acc: Any, targets: Sequence[float] | None = None) -> float:
        """Return the worst per-metric :func:`accuracy_constraint` (<= 0 when ``acc`` passes)."""
        values, directions = self._metrics(acc)
        targets = self.accuracy_target if targets is None else targets
        return max(accuracy_constraint(v, t, d) for v, t, d in zip(values, targets, directions))

    def accuracy_meet_req(self, last_result: tuple[Any, Sequence[float]]) -> bool:
        """Return whether ``last_result``'s accuracy meets the target (at the target passes)."""
        return self.constraint_value(last_result[0]) <= 0

    def accuracy_meets(self) -> bool:
        """Return whether the last :meth:`evaluate` met the accuracy target."""
        if self.val is None:
            raise RuntimeError("call evaluate() before accuracy_meets()")
        return self.accuracy_meet_req(self.val)

    def compare(
        self, last: tuple[Any, Sequence[Any]] | None, baseline: tuple[Any, Sequence[Any]]
    ) -> bool:
        """Return whether the last :meth:`evaluate` is a new best.

        It is if no objective is worse than in ``last`` (ties allowed, each in its own direction)
        and the accuracy meets the target derived from ``baseline``.
        """
        if self.val is None:
            raise RuntimeError("call evaluate() before compare()")
        acc, values = self.val
        if last is not None:
            pairs = zip(values, last[1], self.obj_criterion)
            if not all((x >= y) if higher else (x <= y) for x, y, higher in pairs):
                return False
        return self.constraint_value(acc, self._targets(baseline[0])) <= 0

    def evaluate(self, eval_func: Callable[..., Any], model: Any) -> tuple[Any, list[float]]:
        """Measure ``eval_func(model)`` with every objective; return ``(accuracy, values)``."""
        self.reset()
        self.set_model(model)
        if self.is_measure:
            acc = eval_func(model, self.objectives[0])
        else:
            self.start()
            acc = eval_func(model)
            self.end(acc)
        self.val = acc, self.result()
        return self.val

    def reset(self) -> None:
        """Reset every objective."""
        for objective in self.objectives:
            objective.reset()

    def start(self) -> None:
        """Start every objective."""
        for objective in self.objectives:
            objective.start()

    def end(self, acc: Any) -> None:
        """End every objective; Accuracy receives ``acc``."""
        for objective in self.objectives:
            if isinstance(objective, Accuracy):
                objective.end(acc)
            else:
                objective.end()

    def result(self) -> list[float]:
        """Return each objective's result."""
        return [objective.result() for objective in self.objectives]

    def set_model(self, model: Any) -> None:
        """Give ``model`` to every objective."""
        for objective in self.objectives:
            objective.model = model

    def _columns(self, row: Sequence[Any]) -> list[tuple[float, bool, bool, float]]:
        """One objective row as columns: (value, is accuracy, higher is better, weight)."""
        weights = self.obj_weight or [1.0] * len(self.objectives)
        columns = []
        for obj, value, higher, weight in zip(self.objectives, row, self.obj_criterion, weights):
            is_acc = isinstance(obj, Accuracy)
            metrics, directions = [value], [higher]
            if is_acc and len(_as_list(value)) > 1:
                metrics, directions = self._metrics(value)
            columns += [(m, is_acc, d, weight / len(metrics)) for m, d in zip(metrics, directions)]
        return columns

    def best_result(
        self, tune_data: Sequence[Any], baseline: tuple[Any, Sequence[Any]]
    ) -> BestResult:
        """Pick the trial with INC's weighted score among those meeting the accuracy target.

        Each objective value becomes baseline / trial (the accuracy under an absolute criterion:
        baseline - trial); higher-is-better columns are flipped (x -> max + min - x); each
        non-constant column is min-max scaled to [0, 1]; the score is sum(w c) / sum(w).

        Args:
            tune_data: ``[accuracy, [objective values]]`` per trial.
            baseline: ``(accuracy, [objective values])`` of the fp32 model.

        Returns:
            A :class:`BestResult`; ``feasible`` is False when no trial met the target.
        """
        if not tune_data:
            raise ValueError("best_result needs at least one trial")
        base_values, is_acc, higher, weights = (
            np.array(c) for c in zip(*self._columns(baseline[1]))
        )
        data = np.array([[c[0] for c in self._columns(row[1])] for row in tune_data], dtype=float)
        base = np.where(base_values == 0, _ZERO, base_values).astype(float)
        cols = base / np.where(data == 0, _ZERO, data)
        if not self.relative:
            cols[:, is_acc] = base[is_acc] - data[:, is_acc]
        low, high = cols.min(axis=0), cols.max(axis=0)
        cols[:, higher] = high[higher] + low[higher] - cols[:, higher]
        spread = high != low
        cols[:, spread] = (cols[:, spread] - low[spread]) / (high[spread] - low[spread])
        scores = cols @ weights / weights.sum()
        targets = self._targets(baseline[0])
        violation = np.array([self.constraint_value(row[0], targets) for row in tune_data])
        passed = violation <= 0
        if passed.any():
            index = int(np.argmax(np.where(passed, scores, -np.inf)))
        else:
            index = int(np.lexsort((-scores, violation))[0])
            logger.warning(
                "no trial meets the accuracy target %s; trial %d is closest", targets, index
            )
        return BestResult(
            index,
            tune_data[index],
            bool(passed.any()),
            tuple(scores.tolist()),
            tuple(passed.tolist()),
        )
