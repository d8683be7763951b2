"""``measure()``: one model file -> its objective values, measured with onnxruntime.

Three separate passes, so that none distorts another:

1. accuracy: a session at full graph optimisation runs the evaluation set (custom objectives'
   ``start()``/``end()`` wrap every batch); the metric turns the outputs into one number;
2. footprint and latency, under a per-host lock so that local workers never time at once:
   the footprint in a fresh child process (:mod:`quantuna.ort.footprint`), then a warm-up and a
   timed loop with fixed intra-op threads, one Performance ``start()``/``end()`` per iteration,
   the median reported;
3. model size: the bytes of the file.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantuna._util import cut, file_lock, lock_path
from quantuna.data import Dataset
from quantuna.errors import HopelessTrial, PrunedTrial, SpecError, TrialError
from quantuna.metrics import Metric, best_reachable, metric_value
from quantuna.objective import Accuracy, Footprint, ModelSize, Objective, Performance
from quantuna.ort.footprint import measure_footprint
from quantuna.ort.session import open_session, output_chunks
from quantuna.spec import MeasureSection

EvalFunc = Callable[[Any], float]
OnProgress = Callable[[int, float], bool]  # (samples seen, metric on them) -> stop now?
BUILTIN_KINDS = (Accuracy, Performance, Footprint, ModelSize)
LATENCY_LOCK = "latency"


@dataclass(frozen=True)
class Measurement:
    """What one model measured: objective values by name (in their units) and side facts."""

    values: dict[str, float]
    throughput: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AccuracyTask:
    """How the accuracy pass runs: the data, the metric and where it stops early."""

    evaluation: Dataset
    metric: Metric
    batch_size: int
    output: str | None = None
    threads: int = 0
    eval_func: EvalFunc | None = None
    target: float | None = None
    on_progress: OnProgress | None = None


def latency_lock_path() -> Path:
    """The per-host, per-user lock that serialises latency loops of local workers."""
    return lock_path(LATENCY_LOCK)


def _check_hopeless(metric: Metric, chunks: list[np.ndarray], evaluation: Dataset,
                    target: float | None) -> None:
    """Raise HopelessTrial when the samples seen so far prove the target is out of reach."""
    if target is None or metric.sample_bounds is None or evaluation.labels is None:
        return
    seen = sum(len(c) for c in chunks)
    if seen >= len(evaluation):
        return
    partial = float(metric.fn(np.concatenate(chunks), evaluation.labels[:seen]))
    best = best_reachable(metric, partial, seen, len(evaluation))
    if best is None:
        return
    out_of_reach = best < target if metric.higher_is_better else best > target
    if out_of_reach:
        raise HopelessTrial(
            f"stopped early: {metric.name} {partial:.4g} on the first {seen} of {len(evaluation)} "
            f"samples; at best {best:.4g} at the end, the target is {target:.4g}",
            best_possible=best,
            samples=seen,
        )


_ORT_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |Load model from \S+ failed:|"
                        r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*")


def ort_reason(exc: BaseException, limit: int = 150) -> str:
    """onnxruntime's error without its source paths and C++ signatures, head and tail kept."""
    text = " ".join(_ORT_NOISE.sub("", str(exc)).split()) or type(exc).__name__
    if len(text) <= limit:
        return text
    return f"{text[: limit // 3]} ... {text[-(limit - limit // 3 - 5):]}"


def probe_metric(path: Path, task: AccuracyTask, *, where: str) -> float:
    """The metric on the fp32 outputs of one real batch: run before anything is written.

    Raises:
        SpecError: onnxruntime cannot run the model (an opset it lacks, a bad graph), or the
            metric raises or returns something that is not a finite number.
    """
    batch = task.evaluation.head(min(task.batch_size, len(task.evaluation)))
    try:
        session = open_session(path, task.threads)
        outputs = np.concatenate(list(output_chunks(session, batch, task.batch_size, task.output)))
    except Exception as exc:
        raise SpecError(f"{where}: model: onnxruntime cannot run {path.name} on one evaluation "
                        f"batch ({ort_reason(exc)})") from None
    try:
        value = task.metric.fn(outputs, batch.labels)
    except Exception as exc:
        raise SpecError(f"{where}: accuracy.metric: {cut(task.metric.name, 80)} raised "
                        f"{type(exc).__name__} on the fp32 outputs of one batch: {cut(str(exc), 120)}"
                        ) from None
    return metric_value(task.metric, value, f"{where}: accuracy.metric")


def _check_progress(task: AccuracyTask, chunks: list[np.ndarray]) -> None:
    """Report the metric on the samples seen so far; raise PrunedTrial when the hook says stop."""
    evaluation = task.evaluation
    if task.on_progress is None or evaluation.labels is None:
        return
    seen = sum(len(c) for c in chunks)
    if seen >= len(evaluation):
        return
    partial = float(task.metric.fn(np.concatenate(chunks), evaluation.labels[:seen]))
    if task.on_progress(seen, partial):
        raise PrunedTrial(
            f"pruned: {task.metric.name} {partial:.4g} on the first {seen} of {len(evaluation)} "
            "samples (the study's pruner asked to stop)",
            samples=seen,
            partial=partial,
        )


def _wrapping(objectives: Sequence[Objective]) -> Callable[[], Any]:
    @contextlib.contextmanager
    def around() -> Iterator[None]:
        for obj in objectives:
            obj.start()
        yield
        for obj in objectives:
            obj.end()

    return around


def _accuracy(path: Path, task: AccuracyTask, custom: Sequence[Objective]) -> float:
    if task.eval_func is not None:
        import onnx

        with _wrapping(custom)():
            return float(task.eval_func(onnx.load(str(path))))
    session = open_session(path, task.threads)
    chunks: list[np.ndarray] = []
    for chunk in output_chunks(session, task.evaluation, task.batch_size, task.output,
                               around=_wrapping(custom) if custom else None):
        chunks.append(chunk)
        _check_hopeless(task.metric, chunks, task.evaluation, task.target)
        _check_progress(task, chunks)
    return float(task.metric.fn(np.concatenate(chunks), task.evaluation.labels))


def _accuracy_pass(path: Path, task: AccuracyTask, custom: Sequence[Objective]) -> float:
    try:
        accuracy = _accuracy(path, task, custom)
    except TrialError:
        raise
    except Exception as exc:
        raise TrialError(f"evaluation failed: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(accuracy):
        raise TrialError(f"evaluation returned {accuracy}, not a finite number")
    return accuracy


def _timing_pass(path: Path, batch: dict[str, np.ndarray], settings: MeasureSection,
                 perf: Sequence[Performance], foot: Sequence[Footprint]) -> None:
    """Footprint and the latency loop, under the per-host latency lock."""
    p = settings.performance
    with file_lock(LATENCY_LOCK):
        try:
            if foot:
                peak = measure_footprint(path, batch, p.threads)
                for fobj in foot:
                    fobj._result_list.append(peak)  # noqa: SLF001 (INC's list; the region ran in the child)
            session = open_session(path, p.threads)
            for _ in range(p.warmup + 1):
                session.run(None, batch)
            for _ in range(p.iterations if perf else 0):
                for obj in perf:
                    obj.start()
                session.run(None, batch)
                for obj in perf:
                    obj.end()
        except TrialError:
            raise
        except Exception as exc:
            raise TrialError(f"timing run failed: {type(exc).__name__}: {exc}") from exc


def measure(path: Path, *, objectives: Sequence[Objective], task: AccuracyTask,
            settings: MeasureSection) -> Measurement:
    """Measure one model file with every objective.

    Args:
        path: the model to measure.
        objectives: the study's objective instances; each is ``reset()`` first.
        task: the accuracy pass; with ``task.target`` and a metric that is a mean of bounded
            per-sample scores, the evaluation stops as soon as the target is out of reach; with
            ``task.on_progress``, it is called after each batch but the last with the samples seen
            and the metric on them, and a true answer stops the evaluation.
        settings: the spec's ``measure`` section.

    Raises:
        HopelessTrial: the accuracy target cannot be met (a ``TrialError``).
        PrunedTrial: ``task.on_progress`` asked to stop (a ``TrialError``).
        TrialError: the model cannot run, or an objective value is not a finite number.
    """
    for obj in objectives:
        obj.reset()
    custom = [o for o in objectives if not isinstance(o, BUILTIN_KINDS)]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    accuracy = _accuracy_pass(path, task, custom)
    seconds["evaluate"] = time.perf_counter() - start
    for acc in (o for o in objectives if isinstance(o, Accuracy)):
        acc.start()
        acc.end(accuracy)
    perf = [o for o in objectives if isinstance(o, Performance)]
    foot = [o for o in objectives if isinstance(o, Footprint)]
    throughput = None
    if perf or foot:
        batch = next(task.evaluation.batches(settings.performance.batch_size))[0]
        start = time.perf_counter()
        _timing_pass(path, batch, settings, perf, foot)
        seconds["timing"] = time.perf_counter() - start
        if perf:
            throughput = perf[0].throughput(settings.performance.batch_size)
    for size in (o for o in objectives if isinstance(o, ModelSize)):
        size.model = path
        size.start()
        size.end()
    values = {str(o.representation).lower(): float(o.result()) for o in objectives}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise TrialError(f"objective values are not finite: {bad}")
    return Measurement(values=values, throughput=throughput, seconds=seconds)


def measure_accuracy(path: Path, task: AccuracyTask) -> float:
    """The accuracy pass alone (no timing, no objectives): what a fallback search compares with
    the target. With ``task.target``, a hopeless evaluation stops early (:class:`HopelessTrial`).

    Raises:
        HopelessTrial: the accuracy target cannot be met (a ``TrialError``).
        TrialError: the model cannot run, or the metric is not a finite number.
    """
    return _accuracy_pass(path, task, ())
