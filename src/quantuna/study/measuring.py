"""One config quantized and measured: the steps a trial (and ``quantuna.measure``) runs.

:func:`quantize_config` calibrates (cached ranges) and quantizes; given the study, a failure that
is the model's (a calibration setting, an op type the quantizer rejects) is recorded in it once
(see :mod:`quantuna.study.failures`) so that no worker proposes it again. :func:`measure_file`
measures a quantized file. :func:`measure_config` does both, without a study (the joint-search
API). Side facts go through ``record(key, value)``: ``trial.set_user_attr`` in a trial, a no-op
outside one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from quantuna.config import QuantConfig
from quantuna.errors import TrialError
from quantuna.ort.measure import EarlyStop, OnProgress
from quantuna.ort.quantize import quantize
from quantuna.phases import phase
from quantuna.study import attrs
from quantuna.study.baseline import measure_model
from quantuna.study.failures import failed_setting_of, record_failed_setting
from quantuna.study.session import Session

Record = Callable[[str, Any], None]  # trial.set_user_attr, or a no-op outside a trial
Latency = dict[str, Any]
Stopped = dict[str, Any]  # the user attrs of a trial stopped early (see stopped_attrs)


def quantize_config(session: Session, config: QuantConfig, seconds: dict[str, float],
                    record: Record, *, study: optuna.Study | None = None,
                    trial_number: int | None = None, out: Path | None = None) -> Path:
    """Calibrate (cached) and quantize one config; the quantized file.

    With ``study``, a calibration that fails records its setting there (it fails every config of
    that setting), and a quantizer that rejects a config is narrowed to the op types it rejects
    alone, each recorded with the approach, format and per-channel choice. ``out`` is where the
    quantized model goes (default: ``session.model_path_for(config)``).
    """
    ranges = None
    if config.approach == "static":
        try:
            with phase(f"calibrating {config.calibrate_method}/{config.calibration_size}"):
                got = session.ranges.get(config)
        except Exception as exc:
            reason = f"calibration failed: {type(exc).__name__}: {exc}"
            if study is not None:
                record_failed_setting(study, failed_setting_of(config), reason, trial_number)
            raise TrialError(reason) from exc
        ranges = got.path
        seconds["calibrate"] = got.seconds
        record(attrs.CALIBRATION_REUSED, got.reused)
        if got.peak_bytes is not None:
            record(attrs.CALIBRATION_PEAK_MIB, round(got.peak_bytes / 2**20, 1))
    start = time.perf_counter()
    try:
        path = quantize(session.model, config, out or session.model_path_for(config), ranges=ranges)
    except TrialError as exc:
        if study is not None:
            for op in failing_op_types(session, config, ranges):
                record_failed_setting(study, failed_setting_of(config, op), str(exc), trial_number)
        raise
    seconds["quantize"] = time.perf_counter() - start
    return path


def failing_op_types(session: Session, config: QuantConfig, ranges: Path | None) -> list[str]:
    """The op types that ``config``'s quantizer fails on alone (a rejected config, narrowed)."""
    if len(config.op_types) == 1:
        return list(config.op_types)
    failing = []
    with tempfile.TemporaryDirectory(prefix="quantuna-narrow-") as tmp:
        for op in config.op_types:
            try:
                quantize(session.model, replace(config, op_types=(op,)), Path(tmp) / f"{op}.onnx",
                         ranges=ranges)
            except TrialError:
                failing.append(op)
    return failing


def measure_file(session: Session, path: Path, seconds: dict[str, float], record: Record,
                 target: float | None, on_progress: OnProgress | None = None,
                 ) -> tuple[dict[str, float], Latency | None, Stopped | None]:
    """Measure one quantized file: its objective values, its latency figures, and, when the
    accuracy pass stopped early (``target`` out of reach), the ``stopped_early`` attr (the
    accuracy is then the metric on the samples seen; see :class:`quantuna.ort.measure.EarlyStop`).

    ``on_progress`` hears the accuracy pass.
    """
    start = time.perf_counter()
    try:
        m = measure_model(session, path, target, on_progress)
    except TrialError:  # pruned or failed: the evaluation it ran still counts
        seconds["evaluate"] = time.perf_counter() - start
        raise
    seconds.update(m.seconds)
    if m.throughput is not None:
        record(attrs.THROUGHPUT, m.throughput)
    if m.footprint_method is not None:
        record(attrs.FOOTPRINT_METHOD, m.footprint_method)
    latency = m.latency.to_dict() if m.latency is not None else None
    return m.values, latency, (stopped_attrs(m.stopped) if m.stopped is not None else None)


def stopped_attrs(stop: EarlyStop) -> Stopped:
    """The user attrs of a trial stopped early: its ``stop_reason``, the ``stopped_early``
    record and what a person reads under ``Feasible``."""
    return {attrs.STOP_REASON: stop.reason, attrs.STOPPED_EARLY: stop.to_dict(),
            attrs.FEASIBLE_SHOWN: f"no: stopped early, the target is out of reach (accuracy on "
                                  f"{stop.samples} of {stop.total} samples)"}


def measure_config(session: Session, config: QuantConfig, seconds: dict[str, float],
                   record: Record, target: float | None, on_progress: OnProgress | None = None,
                   out: Path | None = None) -> tuple[dict[str, float], Latency | None, Stopped | None]:
    """Quantize and measure one config outside a study (see :func:`measure_file`)."""
    path = quantize_config(session, config, seconds, record, out=out)
    try:
        return measure_file(session, path, seconds, record, target, on_progress)
    finally:
        if not session.spec.study.save_models:
            path.unlink(missing_ok=True)
