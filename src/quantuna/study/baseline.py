"""The fp32 baseline: measured once per study and kept in its user attrs for every worker."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna

from quantuna.config import QuantConfig
from quantuna.errors import SpecError, TrialError
from quantuna.metrics import unreachable_bound
from quantuna.ort.measure import AccuracyTask, Measurement, OnProgress, measure
from quantuna.ort.quantize import quantize
from quantuna.phases import phase
from quantuna.study import attrs
from quantuna.study.mutex import StudyMutex
from quantuna.study.session import Session

logger = logging.getLogger(__name__)


def measure_model(session: Session, path: Path, target: float | None = None,
                  on_progress: OnProgress | None = None) -> Measurement:
    """Measure one model file; with ``target``, a hopeless evaluation stops early; ``on_progress``
    hears the metric on the samples seen after each batch (see :func:`quantuna.ort.measure.measure`)."""
    task = AccuracyTask(
        evaluation=session.evaluation,
        metric=session.metric,
        batch_size=session.eval_batch_size,
        output=session.spec.accuracy.output,
        threads=session.spec.measure.accuracy_threads,
        eval_func=session.eval_func,
        target=target,
        on_progress=on_progress,
    )
    return measure(path, objectives=session.objectives, task=task, settings=session.spec.measure,
                   timing=session.timing)


def ensure_baseline(study: optuna.Study, session: Session) -> dict[str, Any]:
    """The study's fp32 baseline, measured now if no worker has stored it yet.

    Workers that start together (processes, machines) take the study's ``baseline`` mutex: one
    measures, the others wait and read what it stored.
    """
    stored = study.user_attrs.get(attrs.BASELINE)
    if stored is not None:
        return stored
    mutex = StudyMutex(study, attrs.BASELINE)
    if not mutex.acquire(give_up=lambda: attrs.BASELINE in study.user_attrs):
        return study.user_attrs[attrs.BASELINE]
    try:
        stored = study.user_attrs.get(attrs.BASELINE)
        if stored is not None:
            return stored
        baseline = measure_fp32(session)
        study.set_user_attr(attrs.BASELINE, baseline)
        return baseline
    finally:
        mutex.release()


def measure_fp32(session: Session) -> dict[str, Any]:
    """Measure the session's fp32 model: the baseline record (values, target, host)."""
    fp32 = QuantConfig()
    path = quantize(session.model, fp32, session.model_path_for(fp32))
    try:
        with phase("measuring the fp32 baseline"):
            m = measure_model(session, path)
    except TrialError as exc:
        raise SpecError(f"{session.spec.where}: the fp32 model cannot be measured: {exc}") from None
    finally:
        path.unlink(missing_ok=True)
    target = session.accuracy_target(m.values["accuracy"])
    check_reachable(session, m.values["accuracy"], target)
    return {
        "values": m.values,
        "throughput": m.throughput,
        "accuracy_target": target,
        "seconds": m.seconds,
        **({attrs.FOOTPRINT_METHOD: m.footprint_method} if m.footprint_method else {}),
        # fp32 timed against the reference session of the same model: the noise floor
        attrs.LATENCY: m.latency.to_dict() if m.latency is not None else None,
        attrs.THREADS: {"latency": session.spec.measure.performance.threads,
                        "accuracy": session.spec.measure.accuracy_threads},
        **attrs.host_facts(),
    }


def check_reachable(session: Session, baseline_accuracy: float, target: float) -> None:
    """A target beyond the metric's bound is a spec error, raised before any trial runs."""
    bound = unreachable_bound(session.metric, target)
    if bound is None:
        return
    name, sign = session.metric.name, ">=" if session.metric.higher_is_better else "<="
    criterion = session.spec.tuning.accuracy_criterion.as_dict()
    criterion.pop("higher_is_better", None)
    raise SpecError(
        f"{session.spec.where}: tuning.accuracy_criterion: {criterion} asks for {name} {sign} "
        f"{target:.6g} (fp32 scores {baseline_accuracy:.6g}), beyond {name}'s bound of {bound:g}: "
        "no model can meet it; relax the criterion"
    )
