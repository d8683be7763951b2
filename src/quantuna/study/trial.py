"""One trial's life, left to right: suggest the config, reuse or measure it, record it.

:func:`make_objective` returns the Optuna objective function of a study. A trial whose config was
already measured (by this worker or another) reuses those values; a trial that cannot reach the
accuracy target stops early and is recorded as infeasible; a trial onnxruntime cannot quantize or
run fails with the reason in its attrs, and the study goes on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import optuna

from quantuna._compat import set_legacy_constraints
from quantuna._util import sha256_file
from quantuna.config import QuantConfig
from quantuna.errors import HopelessTrial, TrialError
from quantuna.objective import accuracy_constraint, weighted_ratio_score
from quantuna.ort.int8ops import count_int8_ops
from quantuna.ort.quantize import quantize
from quantuna.study import attrs
from quantuna.study.artifacts import upload_trial_artifacts
from quantuna.study.baseline import measure_model
from quantuna.study.failures import (
    failed_setting_of,
    failed_settings,
    is_blocked,
    record_failed_setting,
)
from quantuna.study.mutex import claim_measurement
from quantuna.study.session import Session

Objective = Callable[[optuna.Trial], "Sequence[float] | float"]


def find_measured(study: optuna.Study, key: str, number: int, *,
                  attr: str = attrs.CONFIG_KEY) -> optuna.trial.FrozenTrial | None:
    """A finished trial whose ``attr`` (the config key, or the quantized file's sha256) is
    ``key``: measured (COMPLETE) or stopped early (PRUNED)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == number or t.user_attrs.get(attr) != key:
            continue
        if attrs.VALUES in t.user_attrs or attrs.STOP_REASON in t.user_attrs:
            return t
    return None


def set_constraint(trial: optuna.Trial, value: float) -> None:
    """The accuracy constraint (feasible when <= 0), in Optuna 5's and the dashboard's form."""
    trial.set_constraint(attrs.ACCURACY_CONSTRAINT, value)
    set_legacy_constraints(trial, [value])


def stop_hopeless(trial: optuna.Trial, reason: str, constraint: float,
                  seconds: dict[str, float], source: Any) -> NoReturn:
    """Record an early-stopped trial as infeasible and prune it (no objective values exist)."""
    set_constraint(trial, constraint)
    trial.set_user_attr(attrs.STOP_REASON, reason)
    trial.set_user_attr(attrs.CONSTRAINT, constraint)
    trial.set_user_attr(attrs.FEASIBLE, False)
    trial.set_user_attr(attrs.REUSED_FROM, source)
    trial.set_user_attr(attrs.SECONDS, seconds)
    raise optuna.TrialPruned(reason)


def _ratio(value: float, base: float | None) -> float | None:
    if base is None or base == 0:
        return None
    return value / base


def make_objective(study: optuna.Study, session: Session, baseline: dict[str, Any]) -> Objective:
    """The Optuna objective function of ``study``: one trial's life, left to right."""
    base_values = baseline["values"]
    target = baseline["accuracy_target"]
    facts = attrs.host_facts()

    def objective(trial: optuna.Trial) -> Sequence[float] | float:
        config = session.space.suggest(trial)
        _record_config(trial, config, facts)
        seconds: dict[str, float] = {}
        values, reused = _values_of(study, trial, session, config, seconds, target, base_values)
        constraint = accuracy_constraint(values["accuracy"], target, session.metric.higher_is_better)
        set_constraint(trial, constraint)
        trial.set_user_attr(attrs.VALUES, values)
        trial.set_user_attr(attrs.RELATIVE, {k: _ratio(v, base_values.get(k)) for k, v in values.items()})
        trial.set_user_attr(attrs.CONSTRAINT, constraint)
        trial.set_user_attr(attrs.FEASIBLE, constraint <= 0)
        trial.set_user_attr(attrs.REUSED_FROM, reused)
        trial.set_user_attr(attrs.SECONDS, seconds)
        model_file = session.model_path_for(config)
        saved = model_file if session.spec.study.save_models and model_file.is_file() else None
        answered = QuantConfig() if reused == "baseline" else config
        upload_trial_artifacts(trial, answered.to_yaml(), saved, session.spec)
        return _optuna_values(trial, session, values, base_values)

    return objective


def _record_config(trial: optuna.Trial, config: QuantConfig, facts: dict[str, str]) -> None:
    trial.set_user_attr(attrs.CONFIG, config.to_dict())
    trial.set_user_attr(attrs.CONFIG_KEY, config.key())
    trial.set_user_attr(attrs.SUMMARY, config.summary())
    for name, value in facts.items():
        trial.set_user_attr(name, value)


def _reuse(trial: optuna.Trial, previous: optuna.trial.FrozenTrial,
           seconds: dict[str, float]) -> tuple[dict[str, float], int | str | None]:
    """The values of an earlier trial (measured, stopped early, or found to be fp32)."""
    stored = previous.user_attrs
    for name in (attrs.MODEL_SHA256, attrs.INT8_OPS, attrs.INT8_OP_TYPES, attrs.AS_FP32):
        if name in stored:
            trial.set_user_attr(name, stored[name])
    if stored.get(attrs.AS_FP32):
        trial.set_user_attr(attrs.SUMMARY, stored.get(attrs.SUMMARY))
        return dict(stored[attrs.VALUES]), "baseline"
    if attrs.VALUES not in stored:
        stop_hopeless(trial, stored[attrs.STOP_REASON], stored[attrs.CONSTRAINT], seconds,
                      previous.number)
    return dict(stored[attrs.VALUES]), previous.number


def _values_of(study: optuna.Study, trial: optuna.Trial, session: Session, config: QuantConfig,
               seconds: dict[str, float], target: float,
               base_values: dict[str, float]) -> tuple[dict[str, float], int | str | None]:
    """The trial's objective values and where they came from (None: measured now).

    Reused, in this order: the baseline for the fp32 config; the values of a trial with the same
    config; the baseline for a quantized file with no int8 op (it *is* the fp32 model); the
    values of a trial whose quantized file has the same bytes.
    """
    if config.is_fp32:
        trial.set_user_attr(attrs.MODEL_SHA256, session.model.sha256)
        return dict(base_values), "baseline"
    previous = claim_measurement(study, trial, config.key(), find_measured)
    if previous is not None:
        return _reuse(trial, previous, seconds)
    for failed in failed_settings(study):
        if is_blocked(config, [failed]):  # an enqueued config, or a worker that drew it at once
            trial.set_user_attr(attrs.FAIL_REASON, failed["reason"])
            raise TrialError(failed["reason"])
    try:
        return measure_config(study, session, config, seconds, trial, target, base_values)
    except HopelessTrial as exc:
        violation = accuracy_constraint(exc.best_possible, target, session.metric.higher_is_better)
        stop_hopeless(trial, str(exc), violation, seconds, None)
    except TrialError as exc:
        trial.set_user_attr(attrs.FAIL_REASON, str(exc))
        trial.set_user_attr(attrs.SECONDS, seconds)
        raise


def measure_config(study: optuna.Study, session: Session, config: QuantConfig,
                   seconds: dict[str, float], trial: optuna.Trial, target: float,
                   base_values: dict[str, float]) -> tuple[dict[str, float], int | str | None]:
    """Quantize one config, then reuse (no int8 op: the baseline; same bytes: that trial) or
    measure the file; its values and where they came from."""
    path = quantize_config(study, session, config, seconds, trial)
    try:
        same = _same_file(study, trial, session, config, path)
        if same == "fp32":
            return dict(base_values), "baseline"
        if isinstance(same, optuna.trial.FrozenTrial):
            return _reuse(trial, same, seconds)
        return measure_file(session, path, seconds, trial, target), None
    finally:
        if not session.spec.study.save_models:
            path.unlink(missing_ok=True)


def _same_file(study: optuna.Study, trial: optuna.Trial, session: Session, config: QuantConfig,
               path: Path) -> optuna.trial.FrozenTrial | str | None:
    """Count the file's int8 ops: ``"fp32"`` when it has none, else the trial that measured the
    same bytes (None: nobody yet)."""
    ops = count_int8_ops(path)
    trial.set_user_attr(attrs.INT8_OPS, sum(ops.values()))
    trial.set_user_attr(attrs.INT8_OP_TYPES, ops)
    if not ops:
        trial.set_user_attr(attrs.AS_FP32, True)
        trial.set_user_attr(attrs.MODEL_SHA256, session.model.sha256)
        trial.set_user_attr(attrs.SUMMARY, f"fp32 (no int8 op in {config.summary()})")
        return "fp32"
    sha = sha256_file(path)
    trial.set_user_attr(attrs.MODEL_SHA256, sha)
    trial.set_user_attr(attrs.MODEL_BYTES, path.stat().st_size)
    return find_measured(study, sha, trial.number, attr=attrs.MODEL_SHA256)


def quantize_config(study: optuna.Study, session: Session, config: QuantConfig,
                    seconds: dict[str, float], trial: optuna.Trial) -> Path:
    """Calibrate (cached) and quantize one config; the quantized file.

    A calibration that fails fails every config of its setting: the setting is recorded in the
    study (see :mod:`quantuna.study.failures`) and no worker proposes it again. A quantizer that
    rejects a config is narrowed to the op types it rejects alone; each is recorded with the
    approach, format and per-channel choice.
    """
    ranges = None
    if config.approach == "static":
        try:
            got = session.ranges.get(config)
        except Exception as exc:
            reason = f"calibration failed: {type(exc).__name__}: {exc}"
            record_failed_setting(study, failed_setting_of(config), reason, trial.number)
            raise TrialError(reason) from exc
        ranges = got.path
        seconds["calibrate"] = got.seconds
        trial.set_user_attr(attrs.CALIBRATION_REUSED, got.reused)
    start = time.perf_counter()
    try:
        path = quantize(session.model, config, session.model_path_for(config), ranges=ranges)
    except TrialError as exc:
        for op in failing_op_types(session, config, ranges):
            record_failed_setting(study, failed_setting_of(config, op), str(exc), trial.number)
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


def measure_file(session: Session, path: Path, seconds: dict[str, float],
                 trial: optuna.Trial, target: float) -> dict[str, float]:
    """Measure one quantized file; its objective values."""
    m = measure_model(session, path, target)
    seconds.update(m.seconds)
    if m.throughput is not None:
        trial.set_user_attr(attrs.THROUGHPUT, m.throughput)
    return m.values


def _optuna_values(trial: optuna.Trial, session: Session, values: dict[str, float],
                   base_values: dict[str, float]) -> Sequence[float] | float:
    ordered = [values[n] for n in session.objective_names]
    if session.mode == "pareto":
        return ordered
    score = weighted_ratio_score(
        ordered, [base_values[n] for n in session.objective_names],
        session.higher_is_better, session.weights,
    )
    trial.set_user_attr(attrs.WEIGHTED_SCORE, score)
    return score
