"""``run_study()``: the Optuna glue. Measurements become Optuna values, constraints and attrs.

This is the only module that knows both Optuna and onnxruntime (through quantize/measure).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from quantuna.config import QuantConfig
from quantuna.dashboard import upload_trial_artifacts, write_study_note
from quantuna.errors import HopelessTrial, SpecError, TrialError
from quantuna.measure import Measurement, measure
from quantuna.objective import accuracy_constraint, weighted_ratio_score
from quantuna.quantize import quantize
from quantuna.results import TuneResult, collect_results
from quantuna.sampler import make_sampler
from quantuna.sensitivity import rank_nodes
from quantuna.session import Session, prepare
from quantuna.spec import StudySpec, load_spec, redact_url
from quantuna.storage import StudyMutex, claim_measurement, make_storage
from quantuna.workers import WorkerSampler

logger = logging.getLogger(__name__)
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)
BASELINE_ATTR = "baseline"
SENSITIVITY_ATTR = "sensitivity"
SETUP_ATTR = "quantuna"


def host_facts() -> dict[str, str]:
    """The host name and CPU, recorded on every trial (latencies compare only on one CPU)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu": cpu}


def open_study(session: Session, *, sampler_seed: int | None = None) -> optuna.Study:
    """Create or load the spec's study, checking that an existing one was made the same way."""
    spec = session.spec
    seed = spec.study.seed if sampler_seed is None else sampler_seed
    # each worker seeds its sampler from its first trial's number (trial 0: the spec's seed)
    sampler = WorkerSampler(
        functools.partial(make_sampler, spec.study.sampler, space=session.space), seed
    )
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=make_storage(spec.storage),
            directions=session.directions,
            sampler=sampler,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SpecError(
            f"{spec.where}: study {spec.name!r} exists in the storage with other directions "
            f"({exc}); give this run another study.name or --storage"
        ) from None
    setup = {"mode": session.mode, "objectives": session.objective_names}
    stored = study.user_attrs.get(SETUP_ATTR)
    if stored is None:
        study.set_user_attr(SETUP_ATTR, {**setup, "higher_is_better": session.higher_is_better})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(session.metric_names)
    elif {k: stored.get(k) for k in setup} != setup:
        raise SpecError(
            f"{spec.where}: study {spec.name!r} was created with {stored}, this run asks for "
            f"{setup}; give this run another study.name or --storage"
        )
    return study


def ensure_baseline(study: optuna.Study, session: Session) -> dict[str, Any]:
    """The fp32 baseline: measured once per study and kept in its user attrs for every worker.

    Workers that start together (processes, machines) take the study's ``baseline`` mutex: one
    measures, the others wait and read what it stored.
    """
    stored = study.user_attrs.get(BASELINE_ATTR)
    if stored is not None:
        return stored
    mutex = StudyMutex(study, BASELINE_ATTR)
    if not mutex.acquire(give_up=lambda: BASELINE_ATTR in study.user_attrs):
        return study.user_attrs[BASELINE_ATTR]
    try:
        stored = study.user_attrs.get(BASELINE_ATTR)
        if stored is not None:
            return stored
        baseline = _measure_baseline(session)
        study.set_user_attr(BASELINE_ATTR, baseline)
        return baseline
    finally:
        mutex.release()


def _measure_baseline(session: Session) -> dict[str, Any]:
    logger.info("measuring the fp32 baseline")
    fp32 = QuantConfig()
    path = quantize(session.model, fp32, session.model_path_for(fp32))
    try:
        m = measure_model(session, path)
    except TrialError as exc:
        raise SpecError(f"{session.spec.where}: the fp32 model cannot be measured: {exc}") from None
    finally:
        path.unlink(missing_ok=True)
    values = m.values
    target = session.accuracy_target(values["accuracy"])
    baseline = {
        "values": values,
        "throughput": m.throughput,
        "accuracy_target": target,
        "seconds": m.seconds,
        **host_facts(),
    }
    return baseline


def measure_model(session: Session, path: Path, target: float | None = None) -> Measurement:
    """Measure one model file; with ``target``, a hopeless evaluation stops early."""
    return measure(
        path,
        objectives=session.objectives,
        evaluation=session.evaluation,
        metric=session.metric,
        settings=session.spec.measure,
        eval_batch_size=session.eval_batch_size,
        output=session.spec.accuracy.output,
        eval_func=session.eval_func,
        accuracy_target=target,
    )


def _find_measured(study: optuna.Study, key: str, number: int) -> optuna.trial.FrozenTrial | None:
    """A finished trial of the same config: measured (COMPLETE) or stopped early (PRUNED)."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == number or t.user_attrs.get("config_key") != key:
            continue
        if "values" in t.user_attrs or "stop_reason" in t.user_attrs:
            return t
    return None


def _stop_hopeless(
    trial: optuna.Trial, reason: str, constraint: float, seconds: dict[str, float], source: Any
) -> None:
    """Record an early-stopped trial as infeasible and prune it (no objective values exist)."""
    _set_constraint(trial, constraint)
    trial.set_user_attr("stop_reason", reason)
    trial.set_user_attr("constraint", constraint)
    trial.set_user_attr("feasible", False)
    trial.set_user_attr("reused_measurement_from", source)
    trial.set_user_attr("seconds", seconds)
    raise optuna.TrialPruned(reason)


def _set_constraint(trial: optuna.Trial, value: float) -> None:
    trial.set_constraint("accuracy", value)
    # optuna-dashboard 0.21 reads only the legacy list; keep both in step.
    trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [value])


def make_objective(
    study: optuna.Study, session: Session, baseline: dict[str, Any]
) -> Callable[[optuna.Trial], Sequence[float] | float]:
    """The Optuna objective function: one trial's life, left to right."""
    base_values = baseline["values"]
    target = baseline["accuracy_target"]
    facts = host_facts()

    def objective(trial: optuna.Trial) -> Sequence[float] | float:
        config = session.space.suggest(trial)
        key = config.key()
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("summary", config.summary())
        for name, value in facts.items():
            trial.set_user_attr(name, value)
        seconds: dict[str, float] = {}
        previous = None if config.is_fp32 else claim_measurement(study, trial, key, _find_measured)
        reused: int | str | None
        if config.is_fp32:
            values, reused = dict(base_values), "baseline"
            trial.set_user_attr("model_sha256", session.model.sha256)
        elif previous is not None and "values" not in previous.user_attrs:
            attrs = previous.user_attrs
            _stop_hopeless(trial, attrs["stop_reason"], attrs["constraint"], seconds, previous.number)
        elif previous is not None:
            values, reused = dict(previous.user_attrs["values"]), previous.number
            trial.set_user_attr("model_sha256", previous.user_attrs.get("model_sha256"))
        else:
            reused = None
            try:
                values = _measure_config(session, config, seconds, trial, target)
            except HopelessTrial as exc:
                violation = accuracy_constraint(exc.best_possible, target, session.metric.higher_is_better)
                _stop_hopeless(trial, str(exc), violation, seconds, None)
            except TrialError as exc:
                trial.set_user_attr("fail_reason", str(exc))
                trial.set_user_attr("seconds", seconds)
                raise
        constraint = accuracy_constraint(
            values["accuracy"], target, session.metric.higher_is_better
        )
        _set_constraint(trial, constraint)
        trial.set_user_attr("values", values)
        trial.set_user_attr("relative", {k: _ratio(v, base_values.get(k)) for k, v in values.items()})
        trial.set_user_attr("constraint", constraint)
        trial.set_user_attr("feasible", constraint <= 0)
        trial.set_user_attr("reused_measurement_from", reused)
        trial.set_user_attr("seconds", seconds)
        model_file = session.model_path_for(config)
        saved = model_file if session.spec.study.save_models and model_file.is_file() else None
        upload_trial_artifacts(study, trial, config.to_yaml(), saved, session.spec)
        ordered = [values[n] for n in session.objective_names]
        if session.mode == "pareto":
            return ordered
        score = weighted_ratio_score(
            ordered,
            [base_values[n] for n in session.objective_names],
            session.higher_is_better,
            session.weights,
        )
        trial.set_user_attr("weighted_ratio_score", score)
        return score

    return objective


def _measure_config(
    session: Session,
    config: QuantConfig,
    seconds: dict[str, float],
    trial: optuna.Trial,
    target: float,
) -> dict[str, float]:
    ranges = None
    if config.approach == "static":
        try:
            got = session.ranges.get(config)
        except Exception as exc:
            raise TrialError(f"calibration failed: {type(exc).__name__}: {exc}") from exc
        ranges = got.path
        seconds["calibrate"] = got.seconds
        trial.set_user_attr("calibration_reused", got.reused)
    start = time.perf_counter()
    path = quantize(session.model, config, session.model_path_for(config), ranges=ranges)
    seconds["quantize"] = time.perf_counter() - start
    from quantuna.modelinfo import sha256_file

    trial.set_user_attr("model_sha256", sha256_file(path))
    trial.set_user_attr("model_bytes", path.stat().st_size)
    try:
        m = measure_model(session, path, target)
    finally:
        if not session.spec.study.save_models:
            path.unlink(missing_ok=True)
    seconds.update(m.seconds)
    if m.throughput is not None:
        trial.set_user_attr("throughput", m.throughput)
    return m.values


def _ratio(value: float, base: float | None) -> float | None:
    if base is None or base == 0:
        return None
    return value / base


class _Interrupt:
    """Ctrl-C that lands only inside the objective function.

    Optuna 5.0 breaks when a KeyboardInterrupt arrives while it records a trial (an
    UnboundLocalError in ``_run_trial``), so SIGINT raises only while a trial is being measured;
    elsewhere it asks the study to stop after the current step.
    """

    def __init__(self) -> None:
        self.requested = False
        self.inside = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.inside:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self.handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        def guarded(trial: optuna.Trial) -> Any:
            if self.requested:
                raise KeyboardInterrupt
            self.inside = True
            try:
                return objective(trial)
            finally:
                self.inside = False

        return guarded

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.requested:
            study.stop()


def count_spent(study: optuna.Study) -> int:
    """Trials that used up budget: complete ones and those that failed for a stated reason.

    A trial interrupted by Ctrl-C or a killed worker has no reason and does not count, so the
    study's budget holds when it is resumed.
    """
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if t.state != optuna.trial.TrialState.FAIL or "fail_reason" in t.user_attrs
    )


def ensure_sensitivity(study: optuna.Study, session: Session) -> None:
    """Rank the nodes once per study (kept in its user attrs) and give the top K a knob each."""
    k = session.spec.space.exclude_sensitive_nodes
    if not k:
        return
    ranking = study.user_attrs.get(SENSITIVITY_ATTR)
    if ranking is None:
        default = session.space.default_int8()
        if default is None:
            return
        logger.info("ranking node sensitivity")
        try:
            ranked = rank_nodes(session, default, samples=session.spec.space.sensitivity_samples)
        except TrialError as exc:
            raise SpecError(f"{session.spec.where}: sensitivity ranking failed: {exc}") from None
        ranking = [r.to_dict() for r in ranked]
        study.set_user_attr(SENSITIVITY_ATTR, ranking)
    session.space.set_sensitive([(r["node"], r["op_type"]) for r in ranking[:k]])


def warm_start_configs(session: Session) -> list[QuantConfig]:
    """The configs tried first: the default int8 config, then it with the most sensitive node
    (and then all K sensitive nodes) in fp32, then fp32."""
    default = session.space.default_int8()
    configs = [] if default is None else [default]
    sensitive = [node for node, _ in session.space.sensitive]
    if default is not None and sensitive:
        configs.append(replace(default, exclude_nodes=(sensitive[0],)))
        if len(sensitive) > 1:
            configs.append(replace(default, exclude_nodes=tuple(sensitive)))
    return configs + [QuantConfig()]


def _warm_start(study: optuna.Study, session: Session) -> None:
    if study.trials:
        return
    for config in warm_start_configs(session):
        params = session.space.params_for(config)
        if params is not None:
            study.enqueue_trial(params, skip_if_exists=True)


def run_study(
    spec: str | Path | dict[str, Any] | StudySpec,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    mode: str | None = None,
    storage: str | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    eval_func: Callable[[Any], float] | None = None,
    objectives: Sequence[Any] | None = None,
    on_ready: Callable[[optuna.Study, int], None] | None = None,
    calibration: Any = None,
    evaluation: Any = None,
) -> TuneResult:
    """Run (or resume) the study a spec describes until its trial budget is spent.

    Args:
        spec: a spec path, mapping or ``StudySpec``.
        n_trials: the study's total trial budget (default ``tuning.exit_policy.max_trials``);
            finished trials of an earlier run count, so a second run resumes.
        timeout: stop starting new trials after this many seconds (default: the spec's, 0 = none).
        mode: ``pareto`` or ``weighted``, overriding ``tuning.mode``.
        storage: an Optuna storage URL overriding the spec's.
        callbacks: Optuna callbacks called after each trial (the CLI's progress bar is one).
        eval_func: ``eval_func(onnx.ModelProto) -> float`` replacing the spec's metric.
        objectives: objective instances or names replacing the spec's objectives.
        on_ready: called with the study and the number of trials about to run.
        calibration: batches replacing the spec's calibration data.
        evaluation: ``(batch, labels)`` pairs replacing the spec's evaluation data.

    Returns:
        A :class:`TuneResult` with the study, the baseline and the feasible Pareto trials.

    Raises:
        SpecError: the spec, model or data is invalid (checked before any calibration).
    """
    spec = load_spec(spec, storage=storage)
    session = prepare(
        spec,
        mode=mode,
        eval_func=eval_func,
        objectives=objectives,
        calibration=calibration,
        evaluation=evaluation,
    )
    study = open_study(session)
    baseline = ensure_baseline(study, session)
    ensure_sensitivity(study, session)
    budget = n_trials if n_trials is not None else spec.tuning.exit_policy.max_trials
    remaining = max(0, budget - count_spent(study))
    _warm_start(study, session)
    if on_ready is not None:
        on_ready(study, remaining)
    if remaining:
        limit = timeout if timeout is not None else (spec.tuning.exit_policy.timeout or None)
        def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if count_spent(study) >= budget:  # other workers count toward the same budget
                study.stop()

        interrupt = _Interrupt()
        with interrupt.installed():
            study.optimize(
                interrupt.wrap(make_objective(study, session, baseline)),
                n_trials=remaining,
                timeout=limit,
                catch=(TrialError,),
                callbacks=[stop, interrupt.callback, *callbacks],
                gc_after_trial=False,
            )
        if interrupt.requested:
            raise KeyboardInterrupt
    result = collect_results(study, session)
    write_study_note(result)
    return result


def load_results(
    spec: str | Path | dict[str, Any] | StudySpec, *, storage: str | None = None, mode: str | None = None
) -> TuneResult:
    """Open a spec's existing study without running a trial (for export, show, report)."""
    spec = load_spec(spec, storage=storage)
    session = prepare(spec, mode=mode or _stored_mode(spec))
    study = open_study(session)
    if BASELINE_ATTR not in study.user_attrs:
        raise SpecError(f"{spec.where}: study {spec.name!r} has no trial yet; run `quantuna run` first")
    return collect_results(study, session)


def _stored_mode(spec: StudySpec) -> str | None:
    try:
        study = optuna.load_study(study_name=spec.name, storage=make_storage(spec.storage))
    except KeyError:
        raise SpecError(
            f"{spec.where}: no study {spec.name!r} in {redact_url(spec.storage)}; run `quantuna run` first"
        ) from None
    return (study.user_attrs.get(SETUP_ATTR) or {}).get("mode")
