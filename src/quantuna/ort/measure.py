"""``measure()``: one model file -> its objective values, measured with onnxruntime.

Three separate passes, so that none distorts another:

1. accuracy: a session at full graph optimisation runs the evaluation set (custom objectives'
   ``start()``/``end()`` wrap every batch); the metric turns the outputs into one number. With a
   target it stops as soon as the samples seen prove the target out of reach: the accuracy is
   then the metric on those samples (an estimate, :class:`EarlyStop` says on how many) and the
   latency loop is a short one (:data:`STOPPED_ROUNDS` rounds), since such a trial is infeasible;
2. footprint and latency, under a per-host lock so that local workers never time at once (the
   wait is returned apart, never timed): the footprint in a fresh child process
   (:mod:`quantuna.ort.footprint`), then a warm-up and rounds of timed runs with fixed intra-op
   threads interleaved with the study's fp32 reference (:mod:`quantuna.ort.latency`), one
   Performance ``start()``/``end()`` per run, the median reported in ms and the ratio to fp32
   with its 95 % interval beside it;
3. model size: the bytes of the file.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantuna._util import cut
from quantuna.data import Dataset
from quantuna.errors import HopelessTrial, PrunedTrial, SpecError, TrialError
from quantuna.metrics import Metric, best_reachable, check_classes, metric_value
from quantuna.objective import Accuracy, Footprint, ModelSize, Objective, Performance
from quantuna.ort.footprint import measure_footprint
from quantuna.ort.latency import (
    LatencyStats,
    Reference,
    Timing,
    interleaved_rounds,
    latency_lock,
    latency_stats,
)
from quantuna.ort.session import open_session, ort_reason, output_chunks
from quantuna.spec import MeasureSection

EvalFunc = Callable[[Any], float]
OnProgress = Callable[[int, float], bool]  # (samples seen, metric on them) -> stop now?
BUILTIN_KINDS = (Accuracy, Performance, Footprint, ModelSize)
STOPPED_ROUNDS = 3  # latency rounds of a trial stopped early (infeasible: never on the front)


@dataclass(frozen=True)
class EarlyStop:
    """The accuracy pass stopped early: the target was out of reach on the samples seen.

    Attributes:
        reason: one line (the metric so far, the best it could still end at, the target).
        samples: evaluation samples measured before stopping, of ``total``.
        partial: the metric on those samples: the trial's (estimated) accuracy.
        best_possible: the best final value still reachable when it stopped.
        rounds: latency rounds timed (a short loop, fewer than a full trial's; 0: no latency).
    """

    reason: str
    samples: int
    total: int
    partial: float
    best_possible: float
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        """The trial attr: flat, with what each figure is."""
        return {"samples": self.samples, "of": self.total, "accuracy": self.partial,
                "best_possible": self.best_possible,
                "accuracy_is": f"the metric on the first {self.samples} of {self.total} samples "
                               "(a stopped-early estimate)",
                "latency_is": f"a short loop: {self.rounds} rounds" if self.rounds else "not timed"}


@dataclass(frozen=True)
class Measurement:
    """What one model measured: objective values by name (in their units) and side facts."""

    values: dict[str, float]
    throughput: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    latency: LatencyStats | None = None
    footprint_method: str | None = None  # what measured the footprint (Footprint.method)
    stopped: EarlyStop | None = None


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
            partial=partial,
            total=len(evaluation),
        )


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
    check_classes(task.metric, task.evaluation.labels, outputs, f"{where}: data.evaluation")
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


def _accuracy_or_stop(path: Path, task: AccuracyTask,
                      custom: Sequence[Objective]) -> tuple[float, HopelessTrial | None]:
    """The accuracy, or, when the target is out of reach, the metric on the samples seen."""
    try:
        return _accuracy_pass(path, task, custom), None
    except HopelessTrial as exc:
        return exc.partial, exc


def short_loop(settings: MeasureSection) -> MeasureSection:
    """``settings`` with at most :data:`STOPPED_ROUNDS` latency rounds (same runs per round)."""
    p = settings.performance
    rounds = min(STOPPED_ROUNDS, p.timed_rounds)
    short = p.model_copy(update={"rounds": rounds, "iterations": rounds * p.runs_per_round})
    return settings.model_copy(update={"performance": short})


def _latency_loop(path: Path, batch: dict[str, np.ndarray], settings: MeasureSection,
                  perf: Sequence[Performance], reference: Reference | None) -> LatencyStats | None:
    """Warm-up, then rounds of the model's runs interleaved with the fp32 reference's."""
    p = settings.performance
    if not perf:
        return None
    session = open_session(path, p.threads)
    for _ in range(p.warmup + 1):
        session.run(None, batch)
        if reference is not None:
            reference.run(batch)
    # both sides run through the same call shape, so they pay the same overhead
    runners: list[Callable[[], Any]] = [functools.partial(session.run, None, batch)]
    timers: list[Sequence[Performance]] = [perf]
    if reference is not None:
        reference.timer.reset()
        runners.append(functools.partial(reference.session.run, None, batch))
        timers.append([reference.timer])
    timed = interleaved_rounds(runners, timers, rounds=p.timed_rounds, runs=p.runs_per_round)
    return latency_stats(timed[0], timed[1]) if reference is not None else None


def _timing_pass(path: Path, batch: dict[str, np.ndarray], settings: MeasureSection,
                 perf: Sequence[Performance], foot: Sequence[Footprint],
                 timing: Timing | None) -> tuple[LatencyStats | None, float, str | None]:
    """Footprint and the latency loop under the per-host latency lock; (latency, lock wait,
    the footprint's method)."""
    holder = timing.holder if timing is not None else "quantuna"
    with latency_lock(holder, timing.on_wait if timing is not None else None) as waited:
        try:
            method = None
            if foot:
                peak, method = measure_footprint(path, batch, settings.performance.threads, foot[0].forced)
                for fobj in foot:
                    fobj._result_list.append(peak)  # noqa: SLF001 (INC's list; the region ran in the child)
                    fobj.method = method
            reference = timing.reference if timing is not None else None
            return _latency_loop(path, batch, settings, perf, reference), waited, method
        except TrialError:
            raise
        except Exception as exc:
            raise TrialError(f"timing run failed: {type(exc).__name__}: {exc}") from exc


def measure(path: Path, *, objectives: Sequence[Objective], task: AccuracyTask,
            settings: MeasureSection, timing: Timing | None = None) -> Measurement:
    """Measure one model file with every objective.

    Args:
        path: the model to measure.
        objectives: the study's objective instances; each is ``reset()`` first.
        task: the accuracy pass; with ``task.target`` and a metric that is a mean of bounded
            per-sample scores, the evaluation stops as soon as the target is out of reach (the
            accuracy is then the metric on the samples seen, the latency loop a short one, and
            ``Measurement.stopped`` says so); with
            ``task.on_progress``, it is called after each batch but the last with the samples seen
            and the metric on them, and a true answer stops the evaluation.
        settings: the spec's ``measure`` section.
        timing: the study's fp32 reference (latency is timed interleaved with it and reported
            as a ratio with an interval), its name for the lock and whom to tell of a wait.

    Raises:
        PrunedTrial: ``task.on_progress`` asked to stop (a ``TrialError``).
        TrialError: the model cannot run, or an objective value is not a finite number.
    """
    for obj in objectives:
        obj.reset()
    custom = [o for o in objectives if not isinstance(o, BUILTIN_KINDS)]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    accuracy, hopeless = _accuracy_or_stop(path, task, custom)
    seconds["evaluate"] = time.perf_counter() - start
    if hopeless is not None:
        settings = short_loop(settings)
    for acc in (o for o in objectives if isinstance(o, Accuracy)):
        acc.start()
        acc.end(accuracy)
    perf = [o for o in objectives if isinstance(o, Performance)]
    foot = [o for o in objectives if isinstance(o, Footprint)]
    throughput, latency, method = None, None, None
    if perf or foot:
        batch = next(task.evaluation.batches(settings.performance.batch_size))[0]
        start = time.perf_counter()
        latency, waited, method = _timing_pass(path, batch, settings, perf, foot, timing)
        seconds["lock_wait"] = waited
        seconds["timing"] = time.perf_counter() - start - waited
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
    stopped = None if hopeless is None else EarlyStop(
        str(hopeless), hopeless.samples, hopeless.total, hopeless.partial, hopeless.best_possible,
        settings.performance.timed_rounds if perf else 0)
    return Measurement(values=values, throughput=throughput, seconds=seconds, latency=latency,
                       footprint_method=method, stopped=stopped)


def retime(paths: Sequence[Path], batch: dict[str, np.ndarray], settings: MeasureSection,
           timing: Timing, rounds: int) -> tuple[list[LatencyStats], float]:
    """Time several models and the fp32 reference together, interleaved, in one process.

    Every model gets a warm-up, then ``rounds`` rounds in which each model and the reference
    run a block of ``runs_per_round`` timed runs, in an order that rotates each round (the
    confirm phase). Returns each model's figures against the reference, and the lock wait.
    """
    p = settings.performance
    with latency_lock(timing.holder, timing.on_wait) as waited:
        try:
            sessions = [open_session(path, p.threads) for path in paths]
            for _ in range(p.warmup + 1):
                timing.reference.run(batch)
                for session in sessions:
                    session.run(None, batch)
            runners = [functools.partial(timing.reference.session.run, None, batch)]
            runners += [functools.partial(s.run, None, batch) for s in sessions]
            timers = [[Performance()] for _ in runners]
            timed = interleaved_rounds(runners, timers, rounds=rounds, runs=p.runs_per_round)
        except Exception as exc:
            raise TrialError(f"confirm timing failed: {type(exc).__name__}: {exc}") from exc
    return [latency_stats(model, timed[0]) for model in timed[1:]], waited


def measure_accuracy(path: Path, task: AccuracyTask) -> float:
    """The accuracy pass alone (no timing, no objectives): what a fallback search compares with
    the target. With ``task.target``, a hopeless evaluation stops early (:class:`HopelessTrial`).

    Raises:
        HopelessTrial: the accuracy target cannot be met (a ``TrialError``).
        TrialError: the model cannot run, or the metric is not a finite number.
    """
    return _accuracy_pass(path, task, ())
