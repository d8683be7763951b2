"""``measure()``: one model file -> its objective values, measured with onnxruntime.

Three separate passes, so that none distorts another:

1. accuracy: a session at full graph optimisation runs the evaluation set (custom objectives'
   ``start()``/``end()`` wrap every batch); the metric turns the outputs into one number;
2. footprint and latency, under a per-host lock so that local workers never time at once:
   the session is created inside the Footprint region, then a warm-up and a timed loop with fixed
   intra-op threads, one Performance ``start()``/``end()`` per iteration, the median reported;
3. model size: the bytes of the file.

Footprint is measured in a fresh child process (spawned, onnxruntime imported before the region
starts): in a long-lived process freed pages are reused and a session's memory would not show as
new resident memory, so the number would depend on what ran before.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.calibrate import file_lock
from quantuna.data import Dataset
from quantuna.errors import HopelessTrial, TrialError
from quantuna.metrics import Metric, best_reachable
from quantuna.objective import Accuracy, Footprint, ModelSize, Objective, Performance
from quantuna.spec import MeasureSection

EvalFunc = Callable[[Any], float]
BUILTIN_KINDS = (Accuracy, Performance, Footprint, ModelSize)


@dataclass(frozen=True)
class Measurement:
    """What one model measured: objective values by name (in their units) and side facts."""

    values: dict[str, float]
    throughput: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def latency_lock_path() -> Path:
    """The per-host lock that serialises latency loops of local workers."""
    return Path(tempfile.gettempdir()) / f"quantuna-latency-{os.getuid()}.lock"


def _footprint_child(path: str, batch: dict[str, np.ndarray], threads: int, queue: Any) -> None:
    """Child process: the peak resident memory that creating a session and one run add."""
    try:
        import onnxruntime  # noqa: F401  (loaded before the region: the library is not the model)

        objective = Footprint()
        gc.collect()
        objective.start()
        session = open_session(Path(path), threads)
        session.run(None, batch)
        objective.end()
        queue.put(("ok", objective.result()))
    except Exception as exc:  # reported to the parent, which fails the trial
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_footprint(path: Path, batch: dict[str, np.ndarray], threads: int) -> float:
    """Peak resident MiB that a session of ``path`` adds, measured in a fresh process."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_footprint_child, args=(str(path), batch, threads, queue))
    child.start()
    try:
        status, value = queue.get(timeout=600)
    except Exception:
        status, value = "error", f"the footprint process died (exit code {child.exitcode})"
    child.join(timeout=60)
    if status != "ok":
        raise TrialError(f"footprint run failed: {value}")
    return float(value)


def open_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session at full graph optimisation (fixed threads when ``threads``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_hopeless(
    metric: Metric, chunks: list[np.ndarray], evaluation: Dataset, target: float | None
) -> None:
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


def _accuracy(
    path: Path,
    evaluation: Dataset,
    metric: Metric,
    batch_size: int,
    output: str | None,
    threads: int,
    custom: Sequence[Objective],
    eval_func: EvalFunc | None,
    target: float | None,
) -> float:
    if eval_func is not None:
        import onnx

        model = onnx.load(str(path))
        for obj in custom:
            obj.start()
        value = eval_func(model)
        for obj in custom:
            obj.end()
        return float(value)
    session = open_session(path, threads)
    output_name = output or session.get_outputs()[0].name
    chunks = []
    for batch, _ in evaluation.batches(batch_size):
        for obj in custom:
            obj.start()
        (result,) = session.run([output_name], batch)
        for obj in custom:
            obj.end()
        chunks.append(result)
        _check_hopeless(metric, chunks, evaluation, target)
    return float(metric.fn(np.concatenate(chunks), evaluation.labels))


def measure(
    path: Path,
    *,
    objectives: Sequence[Objective],
    evaluation: Dataset,
    metric: Metric,
    settings: MeasureSection,
    eval_batch_size: int,
    output: str | None = None,
    eval_func: EvalFunc | None = None,
    accuracy_target: float | None = None,
) -> Measurement:
    """Measure one model file with every objective.

    Args:
        path: the model to measure.
        objectives: the study's objective instances; each is ``reset()`` first.
        evaluation: the evaluation set.
        metric: the accuracy metric.
        settings: the spec's ``measure`` section.
        eval_batch_size: the evaluation batch size.
        output: the model output the metric reads (default: the first).
        eval_func: a user's ``eval_func(onnx.ModelProto) -> float`` replacing the metric pass.
        accuracy_target: when given, and the metric is a mean of bounded per-sample scores, the
            evaluation stops as soon as the target is out of reach, before the latency loop.

    Raises:
        HopelessTrial: the accuracy target cannot be met (a ``TrialError``).
        TrialError: the model cannot run, or the accuracy is not a finite number.
    """
    for obj in objectives:
        obj.reset()
    custom = [o for o in objectives if not isinstance(o, BUILTIN_KINDS)]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    try:
        accuracy = _accuracy(
            path, evaluation, metric, eval_batch_size, output,
            settings.accuracy_threads, custom, eval_func, accuracy_target,
        )
    except TrialError:
        raise
    except Exception as exc:
        raise TrialError(f"evaluation failed: {type(exc).__name__}: {exc}") from exc
    if not math.isfinite(accuracy):
        raise TrialError(f"evaluation returned {accuracy}, not a finite number")
    seconds["evaluate"] = time.perf_counter() - start
    for obj in objectives:
        if isinstance(obj, Accuracy):
            obj.start()
            obj.end(accuracy)

    perf = [o for o in objectives if isinstance(o, Performance)]
    foot = [o for o in objectives if isinstance(o, Footprint)]
    throughput = None
    if perf or foot:
        p = settings.performance
        first = next(evaluation.batches(p.batch_size))[0]
        with file_lock(latency_lock_path()):
            start = time.perf_counter()
            try:
                if foot:
                    peak = measure_footprint(path, first, p.threads)
                    for obj in foot:
                        obj._result_list.append(peak)  # the region ran in the child
                session = open_session(path, p.threads)
                for _ in range(p.warmup + 1):
                    session.run(None, first)
                for _ in range(p.iterations if perf else 0):
                    for obj in perf:
                        obj.start()
                    session.run(None, first)
                    for obj in perf:
                        obj.end()
            except TrialError:
                raise
            except Exception as exc:
                raise TrialError(f"timing run failed: {type(exc).__name__}: {exc}") from exc
            del session
            seconds["timing"] = time.perf_counter() - start
        if perf:
            throughput = perf[0].throughput(p.batch_size)
    for obj in objectives:
        if isinstance(obj, ModelSize):
            obj.model = path
            obj.start()
            obj.end()
    values = {_name(o): float(o.result()) for o in objectives}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise TrialError(f"objective values are not finite: {bad}")
    return Measurement(values=values, throughput=throughput, seconds=seconds)


def _name(obj: Objective) -> str:
    return str(obj.representation).lower()
