"""One trial's life, left to right: suggest the config, reuse or measure it, record it.

:func:`make_objective` returns the Optuna objective function of a study. A trial whose config was
already measured (by this worker or another) reuses those values; a trial that cannot reach the
accuracy target stops its accuracy pass early and completes as infeasible (its accuracy the metric
on the samples seen, its latency from a short loop, constraint > 0, a ``stop_reason`` and a
``stopped_early`` attr saying so); a trial onnxruntime cannot quantize or
run fails with the reason in its attrs, and the study goes on. In weighted (single-value) mode the
accuracy pass reports the metric on the samples seen so far with ``trial.report``, so the study's
pruner (if it has one) may stop the trial (``trial.should_prune``); the reason goes to its ``prune_reason`` attr.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from quantuna._compat import deferred_user_attrs, set_user_attrs, trials_of_this_trial
from quantuna._compat import set_constraint as compat_set_constraint
from quantuna._util import sha256_file
from quantuna.config import QuantConfig
from quantuna.errors import PrunedTrial, TrialError
from quantuna.objective import accuracy_constraint, weighted_ratio_score
from quantuna.ort.int8ops import count_int8_ops
from quantuna.ort.measure import OnProgress
from quantuna.study import attrs
from quantuna.study.artifacts import upload_trial_artifacts
from quantuna.study.budget import FINISHED
from quantuna.study.failures import failed_settings, is_blocked
from quantuna.study.measuring import Stopped, measure_file, quantize_config
from quantuna.study.mutex import claim_measurement
from quantuna.study.session import Session

logger = logging.getLogger(__name__)
Objective = Callable[[optuna.Trial], "Sequence[float] | float"]


def find_measured(study: optuna.Study, key: str, number: int, *,
                  attr: str = attrs.CONFIG_KEY) -> optuna.trial.FrozenTrial | None:
    """A complete trial whose ``attr`` (the config key, or the quantized file's sha256) is
    ``key`` and that has values (measured fully or stopped early). A trial an older quantuna
    pruned as hopeless (PRUNED, no values) is not one: its config is measured again.

    It looks in this trial's shared read (:func:`trials_of_this_trial`: the measurement claim's,
    made just before the trial quantizes), not in a read of its own: a trial another worker
    finished since then is missed at worst, and the file is measured again."""
    states = (optuna.trial.TrialState.COMPLETE,)
    for t in trials_of_this_trial(study, states):
        if t.number != number and t.user_attrs.get(attr) == key and attrs.VALUES in t.user_attrs:
            return t
    return None


def set_constraint(trial: optuna.Trial, value: float) -> None:
    """The accuracy constraint (feasible when <= 0), in Optuna 5's and the dashboard's form."""
    compat_set_constraint(trial, attrs.ACCURACY_CONSTRAINT, value)  # at the trial's end, with its attrs


def pruner_hook(trial: optuna.Trial, session: Session, base_accuracy: float) -> OnProgress | None:
    """Weighted mode: report the accuracy seen so far to the study's pruner, ask whether to stop.

    The intermediate value at step n (evaluation samples seen) is the accuracy on those samples
    as a ratio to fp32's (the weighted score's accuracy term: 1 = fp32, higher is better whatever
    the metric's direction), so pruners compare trials on the study's own (maximised) scale.
    Multi-objective studies cannot report (Optuna has no intermediate values for them), and a
    study without a pruner (``NopPruner``, as ``quantuna run`` opens its own) has no use for the
    partial metric each batch would cost: None.
    """
    study = trial.study
    if session.mode != "weighted" or len(study.directions) != 1:
        return None
    if isinstance(study.pruner, optuna.pruners.NopPruner):
        return None
    higher = session.metric.higher_is_better

    def on_progress(seen: int, partial: float) -> bool:
        trial.report(weighted_ratio_score([partial], [base_accuracy], [higher]), step=seen)
        return trial.should_prune()

    return on_progress


def with_own_objectives(session: Session) -> Session:
    """The session with copies of its objective instances, which collect results while a model
    is measured: two threads (``n_jobs``) must never share them. Instances that cannot be copied
    stay shared (with a debug log): measure such objectives from one thread."""
    try:
        return replace(session, objectives=[copy.deepcopy(o) for o in session.objectives])
    except Exception as exc:  # noqa: BLE001  (a user's objective may hold anything)
        logger.debug("objective instances not copied (%s: %s); they are shared", type(exc).__name__, exc)
        return session


def _ratio(value: float, base: float | None) -> float | None:
    if base is None or base == 0:
        return None
    return value / base


def make_objective(study: optuna.Study, session: Session, baseline: dict[str, Any]) -> Objective:
    """The Optuna objective function of ``study``: one trial's life, left to right."""
    base_values = baseline["values"]
    target = baseline["accuracy_target"]
    facts = {**attrs.host_facts(), attrs.THREADS: {
        "latency": session.spec.measure.performance.threads,
        "accuracy": session.spec.measure.accuracy_threads}}

    feasible_seen = [False]  # once some trial is feasible, it stays so: no read to ask again

    def objective(trial: optuna.Trial) -> Sequence[float] | float:
        config = session.space.suggest(trial)
        record = _config_record(config, facts)  # written with the measurement claim's first register
        seconds: dict[str, float] = {}
        feasible_seen[0] = feasible_seen[0] or _early_stop_allowed(study)
        stop_at = target if feasible_seen[0] else None
        values, reused, latency, stopped = _values_of(study, trial, session, config, seconds,
                                                      stop_at, baseline, record)
        constraint = accuracy_constraint(values["accuracy"], target, session.metric.higher_is_better)
        set_constraint(trial, constraint)
        relative = {k: _ratio(v, base_values.get(k)) for k, v in values.items()}
        if latency is not None and "performance" in relative:
            relative["performance"] = latency["ratio"]  # interleaved with fp32: drift cancels
        _record_named(trial, session, values, relative, config, constraint <= 0)
        set_user_attrs(trial, {  # one transaction
            **(stopped or {}),  # stopped early: stop_reason, stopped_early, what Feasible says
            attrs.VALUES: values,
            attrs.RELATIVE: relative,
            attrs.LATENCY: latency,
            attrs.CONSTRAINT: constraint,
            attrs.FEASIBLE: constraint <= 0,
            attrs.REUSED_FROM: reused,
            attrs.SECONDS: seconds,
        })
        model_file = session.model_path_for(config)
        saved = model_file if session.spec.study.save_models and model_file.is_file() else None
        answered = QuantConfig() if reused == "baseline" else config
        upload_trial_artifacts(trial, answered.to_yaml(), saved, session.spec)
        return _optuna_values(trial, session, values, base_values, latency)

    return with_deferred_attrs(objective)


def _early_stop_allowed(study: optuna.Study) -> bool:
    """Stop hopeless evaluations early only once some trial of the study meets the target.

    Until then every trial is measured fully: when nothing is feasible, the best-effort answer
    must have its accuracy and latency, not an estimate. (fp32 meeting the target is not
    enough: the space may not hold it, or the budget may end before its warm-start trial.)
    """
    return any(t.user_attrs.get(attrs.FEASIBLE) for t in trials_of_this_trial(study, FINISHED))


def _config_record(config: QuantConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """The trial's config attrs, which other workers read while it runs (the key: their
    distinct-config guard counts it as taken)."""
    return {attrs.CONFIG: config.to_dict(), attrs.CONFIG_KEY: config.key(),
            attrs.SUMMARY: config.summary(), **facts}


def _record_named(trial: optuna.Trial, session: Session, values: dict[str, float],
                  relative: dict[str, float | None], config: QuantConfig, feasible: bool) -> None:
    """The short flat attrs a person reads in the dashboard (see :func:`attrs.named_values`)."""
    trial.set_user_attr(attrs.ROLE, "fp32" if config.is_fp32 else "int8")
    trial.set_user_attr(attrs.FEASIBLE_SHOWN, "yes" if feasible else "no: misses the accuracy target")
    for key, value in attrs.named_values(values, relative, session.objective_label).items():
        trial.set_user_attr(key, value)


def fp32_latency(baseline: dict[str, Any]) -> dict[str, Any] | None:
    """The fp32 trial's latency figures: ratio 1 (it is the reference), the baseline's noise."""
    stored = baseline.get(attrs.LATENCY)
    if not stored:
        return None
    return {**stored, "ratio": 1.0, "low": min(stored["low"], 1.0), "high": max(stored["high"], 1.0)}


# (values, reused from, latency figures, the stopped-early attrs when the accuracy pass stopped)
Answer = tuple[dict[str, float], "int | str | None", "dict[str, Any] | None", "Stopped | None"]
STOP_KEYS = (attrs.STOP_REASON, attrs.STOPPED_EARLY, attrs.FEASIBLE_SHOWN)


def _reuse(trial: optuna.Trial, previous: optuna.trial.FrozenTrial, seconds: dict[str, float],
           baseline: dict[str, Any]) -> Answer:
    """The values of an earlier trial (measured, stopped early, or found to be fp32)."""
    stored = previous.user_attrs
    for name in (attrs.MODEL_SHA256, attrs.MODEL_BYTES, attrs.INT8_OPS, attrs.INT8_OP_TYPES,
                 attrs.AS_FP32, attrs.FOOTPRINT_METHOD):
        if name in stored:
            trial.set_user_attr(name, stored[name])
    if stored.get(attrs.AS_FP32):
        trial.set_user_attr(attrs.SUMMARY, stored.get(attrs.SUMMARY))
        return dict(stored[attrs.VALUES]), "baseline", fp32_latency(baseline), None
    stopped = {k: stored[k] for k in STOP_KEYS if k in stored} if attrs.STOP_REASON in stored else None
    return dict(stored[attrs.VALUES]), previous.number, stored.get(attrs.LATENCY), stopped


def _values_of(study: optuna.Study, trial: optuna.Trial, session: Session, config: QuantConfig,
               seconds: dict[str, float], stop_at: float | None,
               baseline: dict[str, Any], record: dict[str, Any]) -> Answer:
    """The trial's objective values, where they came from (None: measured now), its latency.

    ``record`` (the config attrs) is written at once: with the measurement claim's first
    register (one transaction), or alone for the fp32 config, which claims nothing.

    Reused, in this order: the baseline for the fp32 config; the values of a trial with the same
    config; the baseline for a quantized file with no int8 op (it *is* the fp32 model); the
    values of a trial whose quantized file has the same bytes.
    """
    if config.is_fp32:
        set_user_attrs(trial, record, now=True)
        trial.set_user_attr(attrs.MODEL_SHA256, session.model.sha256)
        return dict(baseline["values"]), "baseline", fp32_latency(baseline), None
    previous = claim_measurement(study, trial, config.key(), find_measured, announce=record)
    if previous is not None:
        return _reuse(trial, previous, seconds, baseline)
    for failed in failed_settings(study):
        if is_blocked(config, [failed]):  # an enqueued config, or a worker that drew it at once
            trial.set_user_attr(attrs.FAIL_REASON, failed["reason"])
            raise TrialError(failed["reason"])
    hook = pruner_hook(trial, session, baseline["values"]["accuracy"])
    try:
        return quantize_and_measure(study, trial, session, config, seconds, stop_at, hook, baseline)
    except PrunedTrial as exc:
        trial.set_user_attr(attrs.PRUNE_REASON, str(exc))
        trial.set_user_attr(attrs.SECONDS, seconds)
        raise optuna.TrialPruned(str(exc)) from None
    except TrialError as exc:
        trial.set_user_attr(attrs.FAIL_REASON, str(exc))
        trial.set_user_attr(attrs.SECONDS, seconds)
        raise


def quantize_and_measure(study: optuna.Study, trial: optuna.Trial, session: Session,
                          config: QuantConfig, seconds: dict[str, float], stop_at: float | None,
                          hook: OnProgress | None, baseline: dict[str, Any]) -> Answer:
    """Quantize one config, then reuse (no int8 op: the baseline; same bytes: that trial) or
    measure the file."""
    path = quantize_config(session, config, seconds, trial.set_user_attr, study=study,
                           trial_number=trial.number)
    try:
        same = _same_file(study, trial, session, config, path)
        if same == "fp32":
            return dict(baseline["values"]), "baseline", fp32_latency(baseline), None
        if isinstance(same, optuna.trial.FrozenTrial):
            return _reuse(trial, same, seconds, baseline)
        values, latency, stopped = measure_file(session, path, seconds, trial.set_user_attr,
                                                stop_at, hook)
        return values, None, latency, stopped
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


def _optuna_values(trial: optuna.Trial, session: Session, values: dict[str, float],
                   base_values: dict[str, float], latency: dict[str, Any] | None) -> Sequence[float] | float:
    ordered = [values[n] for n in session.objective_names]
    if session.mode == "pareto":
        return ordered
    base = [base_values[n] for n in session.objective_names]
    if latency is not None and "performance" in session.objective_names:
        i = session.objective_names.index("performance")  # the interleaved ratio: drift cancels
        ordered[i], base[i] = float(latency["ratio"]), 1.0
    score = weighted_ratio_score(ordered, base, session.higher_is_better, session.weights)
    trial.set_user_attr(attrs.WEIGHTED_SCORE, score)
    return score


def with_deferred_attrs(objective: Objective) -> Objective:
    """``objective`` with its trial's user attrs written in one transaction at the trial's end
    (see :func:`quantuna._compat.deferred_user_attrs`), not one per attr."""

    def deferred(trial: optuna.Trial) -> Sequence[float] | float:
        with deferred_user_attrs(trial):
            return objective(trial)

    return deferred
