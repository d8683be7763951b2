"""Objectives with Intel Neural Compressor's API, measured truthfully.

The names and semantics follow ``neural_compressor/objective.py`` (2.x) so that code written for
INC ports by changing the import; docs/objectives.md lists where quantuna measures differently.
This module imports neither optuna nor onnxruntime.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

MIB = 2**20
RATIO_FLOOR = 1e-9
"""Values below this are raised to it before a baseline ratio is taken."""
RATIO_CAP = 100.0
"""Largest baseline ratio one objective can contribute."""
_ZERO = 1e-20  # INC's stand-in for a zero value in best_result's ratios

OBJECTIVES: dict[str, type[Objective]] = {}


def objective_registry(cls: type[Objective]) -> type[Objective]:
    """Class decorator registering ``cls`` in :data:`OBJECTIVES` as ``cls.__name__.lower()``.

    Raises:
        ValueError: If the name is already taken.
    """
    objective_custom_registry(cls.__name__, cls)
    return cls


def objective_custom_registry(name: str, obj_cls: type[Objective]) -> None:
    """Register ``obj_cls`` under ``name.lower()``.

    Raises:
        ValueError: If the name is already taken.
        TypeError: If ``obj_cls`` is not an :class:`Objective` subclass.
    """
    if not (isinstance(obj_cls, type) and issubclass(obj_cls, Objective)):
        raise TypeError(f"objective {name!r} must be an Objective subclass, got {obj_cls!r}")
    if name.lower() in OBJECTIVES:
        raise ValueError(f"Cannot have two objectives with the same name: {name.lower()!r}")
    OBJECTIVES[name.lower()] = obj_cls


def resolve_objective(name_or_ref: str) -> type[Objective]:
    """Return the objective class for a registered name or a ``"package.module:ClassName"``.

    Args:
        name_or_ref: A name in :data:`OBJECTIVES` (any case) or an import reference.

    Raises:
        ValueError: If the name is unknown or the reference is not an importable Objective.

    Example:
        >>> resolve_objective("Performance").__name__
        'Performance'
    """
    if ":" in name_or_ref:
        module_name, _, attr = name_or_ref.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import objective {name_or_ref!r}: {exc}") from exc
        if not (isinstance(found, type) and issubclass(found, Objective)):
            raise ValueError(f"{name_or_ref!r} is {found!r}, not an Objective subclass")
        return found
    try:
        return OBJECTIVES[name_or_ref.lower()]
    except KeyError:
        known = ", ".join(sorted(OBJECTIVES))
        raise ValueError(
            f"unknown objective {name_or_ref!r}; known: {known}; "
            "or give a custom class as 'package.module:ClassName'"
        ) from None


class Objective:
    """Base class: ``start()``/``end()`` wrap a measured region and append one value per cycle.

    Attributes:
        representation: The label; ``str(objective)`` returns it.
        higher_is_better: The direction of the objective (lower is better by default).
        unit: The display unit of a value, e.g. ``"ms"``; ``""`` for a unitless number.
    """

    representation: str = ""
    higher_is_better: bool = False
    unit: str = ""

    def __init__(self) -> None:
        """Create an objective with an empty result list and no model."""
        self._result_list: list[float] = []
        self._model: Any = None

    def reset(self) -> list[float]:
        """Clear the results (called before each trial) and return the empty list."""
        self._result_list = []
        return self._result_list

    def start(self) -> None:
        """Begin measuring a region."""
        raise NotImplementedError

    def end(self) -> None:
        """Finish measuring the region and append one value to ``self._result_list``."""
        raise NotImplementedError

    @property
    def model(self) -> Any:
        """The model being measured."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        self._model = model

    def _slice(self, start: int | None, end: int | None) -> list[float]:
        n = len(self._result_list)
        lo = 0 if start is None else min(max(start, 0), n)
        hi = n if end is None else min(max(end, 0), n)
        return self._result_list[lo:hi]

    def result(self, start: int | None = None, end: int | None = None) -> float:
        """Return the mean of ``result_list()[start:end]`` (0.0 if empty).

        Indices are clipped to [0, len] (INC ignores an out-of-range index).

        Args:
            start: First index used, e.g. to skip warm-up cycles.
            end: Index one past the last used.
        """
        values = self._slice(start, end)
        return float(np.mean(values)) if values else 0.0

    def result_list(self) -> list[float]:
        """Return the value of each start/end cycle."""
        return self._result_list

    def __str__(self) -> str:
        """Return :attr:`representation`."""
        return self.representation


@objective_registry
class Accuracy(Objective):
    """The number the evaluation returns; ``end(acc)`` records it."""

    representation = "accuracy"
    higher_is_better = True

    def start(self) -> None:
        """Do nothing: accuracy is handed to ``end``."""

    def end(self, acc: float) -> None:  # type: ignore[override]
        """Record ``acc``."""
        self._result_list.append(acc)


@objective_registry
class Performance(Objective):
    """Wall time of the region in milliseconds (``time.perf_counter``); ``result`` is the median."""

    representation = "performance"
    unit = "ms"

    def __init__(self) -> None:
        """Create a latency objective."""
        super().__init__()
        self._t0: float | None = None

    def start(self) -> None:
        """Take the start time."""
        self._t0 = time.perf_counter()

    def end(self) -> None:
        """Append the milliseconds since ``start()``."""
        if self._t0 is None:
            raise RuntimeError("Performance.end() called without start()")
        self._result_list.append((time.perf_counter() - self._t0) * 1000.0)
        self._t0 = None

    def result(self, start: int | None = None, end: int | None = None) -> float:
        """Return the MEDIAN latency (ms) of the slice; INC returns the mean."""
        values = self._slice(start, end)
        return float(np.median(values)) if values else 0.0

    def throughput(self, batch_size: int = 1) -> float:
        """Return samples per second from the median latency (0.0 without measurements)."""
        median_ms = self.result()
        return batch_size * 1000.0 / median_ms if median_ms > 0 else 0.0


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _RssSampler(threading.Thread):
    """Polls VmRSS every ``interval`` seconds and keeps the maximum (KiB)."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(name="quantuna-footprint", daemon=True)
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = _proc_status_kib("VmRSS") or 0

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self.peak = max(self.peak, _proc_status_kib("VmRSS") or 0)

    def finish(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _proc_status_kib("VmRSS") or 0)


@objective_registry
class Footprint(Objective):
    """Peak resident memory (MiB) the region adds, native allocations included.

    Linux: ``start()`` resets the kernel's peak-RSS counter (``5`` to ``/proc/self/clear_refs``)
    and reads VmRSS; ``end()`` appends VmHWM minus that baseline. If ``clear_refs`` is not
    writable, a thread samples VmRSS every ~1 ms instead (it can miss very short peaks). Without
    ``/proc`` (macOS, BSD) the growth of ``ru_maxrss`` is recorded: a lower bound that stays 0
    unless the region sets a new process-wide peak. Without ``resource`` (Windows) it records 0.0
    and logs a warning.
    """

    representation = "footprint"
    unit = "MiB"
    clear_refs_path = "/proc/self/clear_refs"

    def __init__(self) -> None:
        """Create a peak-memory objective."""
        super().__init__()
        self._baseline_kib: int | None = None
        self._sampler: _RssSampler | None = None
        self._mode = ""

    def _reset_peak(self) -> bool:
        try:
            with open(self.clear_refs_path, "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        """Take the baseline and start tracking the peak."""
        if self._sampler is not None:  # start() again without end(): drop the old sampler
            self._sampler.finish()
            self._sampler = None
        rss = _proc_status_kib("VmRSS")
        if rss is not None and self._reset_peak():
            self._mode, self._baseline_kib = "hwm", _proc_status_kib("VmRSS")
        elif rss is not None:
            self._mode, self._sampler = "sample", _RssSampler()
            self._baseline_kib = self._sampler.peak
            self._sampler.start()
        else:
            self._mode, self._baseline_kib = "maxrss", _maxrss_kib()

    def end(self) -> None:
        """Append the peak minus the baseline, in MiB."""
        if self._baseline_kib is None:
            raise RuntimeError("Footprint.end() called without start()")
        if self._mode == "hwm":
            peak = _proc_status_kib("VmHWM") or self._baseline_kib
        elif self._mode == "sample" and self._sampler is not None:
            peak, self._sampler = self._sampler.finish(), None
        else:
            peak = _maxrss_kib()
        self._result_list.append(max(peak - self._baseline_kib, 0) * 1024 / MIB)
        self._baseline_kib = None


def _maxrss_kib() -> int:
    if resource is None:  # pragma: no cover - Windows
        logger.warning("Footprint cannot measure memory on this platform; recording 0.0")
        return 0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS reports bytes


def _external_locations(model: Any) -> set[str]:
    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from graph_tensors(sub)

    tensors = list(graph_tensors(model.graph))
    tensors += [t for f in model.functions for n in f.node for t in node_tensors(n)]
    return {
        entry.value
        for tensor in tensors
        if tensor.data_location == 1  # onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


def model_size_bytes(model: Any, base_dir: str | os.PathLike[str] | None = None) -> int:
    """Return the serialized size of a model in bytes, external data files included.

    Args:
        model: An ``onnx.ModelProto`` or the path of an ``.onnx`` file.
        base_dir: Where a ModelProto's external data files live (a path's own folder is used).

    Raises:
        ValueError: If a ModelProto refers to external data and ``base_dir`` is not given.
        FileNotFoundError: If the model or one of its external data files is missing.
    """
    if isinstance(model, (str, os.PathLike)):
        import onnx

        path = Path(model)
        proto_bytes = path.stat().st_size
        proto = onnx.load(str(path), load_external_data=False)
        base_dir = path.parent
    else:
        proto, proto_bytes = model, model.ByteSize()
    locations = _external_locations(proto)
    if locations and base_dir is None:
        raise ValueError(
            f"the model refers to external data {sorted(locations)}; pass the model's path "
            "or base_dir so that ModelSize can count it"
        )
    return proto_bytes + sum(Path(base_dir or ".", loc).stat().st_size for loc in locations)


@objective_registry
class ModelSize(Objective):
    """Serialized size of ``model`` in MiB (``bytes / 2**20``), external data included."""

    representation = "modelsize"
    unit = "MiB"

    def start(self) -> None:
        """Do nothing: the size does not depend on a region."""

    def end(self) -> None:
        """Append the size of ``self.model`` (a ModelProto or a path)."""
        if self.model is None:
            raise RuntimeError("ModelSize.end() needs a model; set objective.model first")
        self._result_list.append(model_size_bytes(self.model) / MIB)


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
        goal = float(criterion.get("relative", 0.01))
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


@dataclass(frozen=True)
class BestResult:
    """What :meth:`MultiObjective.best_result` picked.

    ``index, trial = result`` unpacks like INC's ``(best_trial, tune_data[best_trial])``.

    Attributes:
        index: Position of the chosen trial in ``tune_data``.
        trial: ``tune_data[index]``.
        feasible: False when no trial met the accuracy target; ``index`` is then the trial
            closest to the target (ties broken by score).
        scores: Weighted [0, 1] score of every trial, before failing trials are zeroed.
        passed: Whether each trial met the accuracy target.
    """

    index: int
    trial: Any
    feasible: bool
    scores: tuple[float, ...]
    passed: tuple[bool, ...]

    def __iter__(self) -> Iterator[Any]:
        """Yield ``index`` and ``trial``, as INC's tuple."""
        return iter((self.index, self.trial))


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
        goal = self.accuracy_criterion.get(kind, 0.01)
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
