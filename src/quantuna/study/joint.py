"""Quantization knobs inside your own trial: a joint search of your knobs and quantuna's.

- :func:`search_space` is the spec's :class:`~quantuna.space.SearchSpace` (the CLI's knobs);
- :func:`suggest_config` asks a trial for quantuna's knobs, prefixed, conditional as in the CLI;
- :func:`measure` quantizes (calibration ranges cached on disk) and measures one config of the
  spec's model or of a model your trial made, against the spec model's fp32 baseline (measured
  once per study into its user attrs when a trial is given, once per process otherwise);
- :func:`set_accuracy_constraint` sets the trial's accuracy constraint (feasible when <= 0).

Example (from the repository's root; the examples here run in the tests):
    >>> import optuna, quantuna
    >>> space = quantuna.search_space("studies/digits.yaml")
    >>> def objective(trial):
    ...     trial.suggest_categorical("my.threads", [1, 2])  # a knob of your own
    ...     config = quantuna.suggest_config(trial, space)
    ...     result = quantuna.measure(config, spec="studies/digits.yaml", trial=trial)
    ...     quantuna.set_accuracy_constraint(trial, result, {"relative": 0.02})
    ...     return result.values
    >>> study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    >>> study.optimize(objective, n_trials=3)
    >>> sorted(study.trials[0].params)[0]  # your knob beside quantuna.op.Conv, quantuna.approach...
    'my.threads'
    >>> {"config", "values", "constraint", "feasible"} <= set(study.trials[0].user_attrs)
    True
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from quantuna._compat import set_user_attrs
from quantuna.config import QuantConfig
from quantuna.objective import accuracy_constraint, accuracy_target, weighted_ratio_score
from quantuna.space import SearchSpace
from quantuna.spec import StudySpec, load_spec
from quantuna.study import attrs
from quantuna.study.baseline import ensure_baseline, measure_fp32
from quantuna.study.measuring import Stopped, measure_config
from quantuna.study.session import Session, prepare
from quantuna.study.trial import (
    pruner_hook,
    set_constraint,
    with_own_objectives,
)

SpecSource = str | Path | dict[str, Any] | StudySpec
_SESSIONS: OrderedDict[tuple[Any, ...], tuple[Any, Session]] = OrderedDict()
# keyed by content (model and data sha256s, the spec) and the eval_func, which the value holds so
# that its id stays unique
_BASELINES: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
_MEASURED: dict[tuple[Any, ...], tuple[Any, dict[str, float], Stopped | None]] = {}
_LOCK = threading.RLock()
_KEEP = 8  # sessions kept per process (each holds its data sets)


@dataclass(frozen=True)
class MeasureResult:
    """What :func:`measure` found for one config.

    Attributes:
        config: the measured config.
        values: the Optuna values in the spec's mode (pareto: one per objective in the spec's
            order, to return from your objective; weighted: ``[score]``).
        measured: each objective's value in its unit (``accuracy``, ``performance`` [ms], ...).
        relative: each value divided by the fp32 baseline's.
        baseline: the spec model's fp32 values, accuracy target and host.
        constraint: the accuracy constraint under the spec's criterion (<= 0: feasible).
        feasible: ``constraint <= 0``.
        reused_from: ``"baseline"``, ``"process"`` (measured earlier in this process) or None.
        seconds: seconds per step (calibrate, quantize, evaluate, timing).
        metric_higher_is_better: the accuracy metric's direction (the constraint's sign).
        stopped: when the accuracy pass stopped early (the target out of reach; with a trial
            only), the trial's ``stopped_early`` record: ``measured["accuracy"]`` is the metric
            on the first ``samples`` of ``of`` samples and the latency comes from a short loop.
    """

    config: QuantConfig
    values: list[float]
    measured: dict[str, float]
    relative: dict[str, float | None]
    baseline: dict[str, Any]
    constraint: float
    feasible: bool
    reused_from: str | None
    seconds: dict[str, float]
    metric_higher_is_better: bool = True
    stopped: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Inputs:
    """What :func:`measure` may give instead of the spec's: metric, data, evaluation function."""

    metric: str | None = None
    calibration: Any = None
    evaluation: Any = None
    eval_func: Any = None

    def key(self) -> tuple[Any, ...]:
        return (self.metric, id(self.calibration), id(self.evaluation), id(self.eval_func))


def _session(spec: SpecSource, model: str | Path | None, given: _Inputs) -> Session:
    loaded = load_spec(spec)
    if given.metric is not None:
        loaded = replace(loaded, accuracy=loaded.accuracy.model_copy(update={"metric": given.metric}))
    if model is not None:
        loaded = replace(loaded, model=Path(model).resolve(), model_build=None)
    stat = loaded.model.stat() if loaded.model.is_file() else None
    key = (repr(loaded), None if stat is None else (stat.st_mtime_ns, stat.st_size), given.key())
    with _LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key][1]
        session = prepare(
            loaded, eval_func=given.eval_func,
            calibration=None if given.calibration is None else list(given.calibration),
            evaluation=None if given.evaluation is None else list(given.evaluation),
        )
        _SESSIONS[key] = (given, session)  # holding `given` keeps the ids in the key unique
        while len(_SESSIONS) > _KEEP:
            _SESSIONS.popitem(last=False)
        return session


def search_space(spec: SpecSource, model: str | Path | None = None) -> SearchSpace:
    """The spec's search space (of ``model`` when given: its op types decide the knobs).

    The sensitive-node knobs (``space.exclude_sensitive_nodes``) need a study's ranking: they are
    not here; ``StudyObjective(spec).space`` has them once its ``prepare(study)`` ran.

    Raises:
        SpecError: the spec, the model or the data is invalid.

    Example:
        >>> space = quantuna.search_space("studies/digits.yaml")
        >>> [name for name, _ in space.knobs()][:3]
        ['op.Conv', 'op.Gemm', 'approach']
    """
    return _session(spec, model, _Inputs()).space


def suggest_config(trial: optuna.Trial, space: SearchSpace | SpecSource, *,
                   prefix: str = "quantuna.") -> QuantConfig:
    """Ask ``trial`` for quantuna's knobs, named ``<prefix><knob>``; the config they make.

    The knobs and their conditions are the CLI's (``op.Conv``, ``approach``, ``calibrate_method``
    only for static, ``percentile`` only for Percentile...). The trial's ``config``,
    ``config_key`` and ``summary`` user attrs record the config (a
    :class:`~quantuna.DistinctSampler` with the same ``prefix`` reads them).

    Args:
        trial: your trial.
        space: a :class:`~quantuna.space.SearchSpace` (see :func:`search_space`) or a spec.
        prefix: keeps quantuna's param names apart from yours.

    Example:
        >>> trial = optuna.trial.FixedTrial({
        ...     "quantuna.op.Conv": "int8", "quantuna.op.Gemm": "fp32", "quantuna.approach": "dynamic",
        ...     "quantuna.first_node_fp32": False, "quantuna.last_node_fp32": False,
        ...     "quantuna.per_channel": False, "quantuna.reduce_range": False,
        ...     "quantuna.dynamic_types": "U8S8"})
        >>> quantuna.suggest_config(trial, "studies/digits.yaml").summary()
        'dynamic U8S8 [Conv]'
        >>> quantuna.suggest_config(optuna.trial.FixedTrial(
        ...     {"quantuna.op.Conv": "fp32", "quantuna.op.Gemm": "fp32"}), "studies/digits.yaml").is_fp32
        True
    """
    if not isinstance(space, SearchSpace):
        space = search_space(space)
    config = space.build(lambda knob, values: trial.suggest_categorical(prefix + knob, list(values)))
    trial.set_user_attr(attrs.CONFIG, config.to_dict())
    trial.set_user_attr(attrs.CONFIG_KEY, config.key())
    trial.set_user_attr(attrs.SUMMARY, config.summary())
    return config


def _content_key(session: Session) -> tuple[Any, ...]:
    """What a measurement depends on: the model, the spec, the data (by sha256), the eval_func."""
    return (session.model.sha256, repr(session.spec), session.calibration.sha256,
            session.evaluation.sha256, id(session.eval_func))


def _baseline(reference: Session, trial: optuna.Trial | None) -> dict[str, Any]:
    """The spec model's fp32 baseline: in the study's user attrs with a trial, else this process's."""
    if trial is not None:
        return ensure_baseline(trial.study, with_own_objectives(reference))
    key = _content_key(reference)
    with _LOCK:
        if key not in _BASELINES:
            _BASELINES[key] = (reference.eval_func, measure_fp32(with_own_objectives(reference)))
        return _BASELINES[key][1]


def measure(config: QuantConfig, model: str | Path | None = None, *, spec: SpecSource,
            trial: optuna.Trial | None = None, metric: str | None = None,
            calibration: Iterable[Any] | None = None, evaluation: Iterable[Any] | None = None,
            eval_func: Callable[[Any], float] | None = None) -> MeasureResult:
    """Quantize and measure one config with quantuna's engine.

    The spec gives the data, the metric, the objectives, the ``measure`` settings, the accuracy
    criterion and where the range cache lives; ``model`` (default: the spec's) may be a model your
    trial made. Values are relative to the fp32 baseline of the *spec's* model, so the accuracy
    target does not move with your knobs. A config measured earlier in this process on the same
    model file and spec is reused (``reused_from == "process"``).

    Args:
        config: from :func:`suggest_config` (or any ``QuantConfig``).
        model: the fp32 ONNX file to quantize (default: the spec's model).
        spec: a spec path, mapping or ``StudySpec``.
        trial: your trial: the baseline is measured once per study (kept in its user attrs, shared
            by its workers); the trial gets quantuna's attrs (``values``, ``relative``,
            ``seconds``...); a trial that cannot reach the accuracy target stops its accuracy
            pass early (``stopped``: return the values all the same, the constraint is > 0,
            the trial gets ``stop_reason`` and ``stopped_early``) and, in weighted mode, the
            study's pruner hears the accuracy pass.
        metric: replaces the spec's ``accuracy.metric`` (a name or ``pkg.mod:fn``).
        calibration: batches ``{input: array}`` replacing the spec's calibration data.
        evaluation: ``({input: array}, labels)`` batches replacing the spec's evaluation data.
        eval_func: ``eval_func(onnx.ModelProto) -> float`` replacing the metric pass.

    The baseline is measured once per study: give every trial of a study the same data.

    Returns:
        A :class:`MeasureResult`; return its ``values`` from your objective.

    Raises:
        TrialError: onnxruntime cannot quantize or run the config.
        optuna.TrialPruned: (with a trial) the study's pruner stopped the trial.

    Example:
        >>> config = quantuna.search_space("studies/digits.yaml").default_int8()
        >>> result = quantuna.measure(config, "studies/models/digits_cnn.onnx", spec="studies/digits.yaml")
        >>> sorted(result.measured), result.feasible
        (['accuracy', 'modelsize', 'performance'], True)
        >>> quantuna.measure(config, spec="studies/digits.yaml").reused_from
        'process'
    """
    given = _Inputs(metric, calibration, evaluation, eval_func)
    reference = _session(spec, None, given)
    baseline = _baseline(reference, trial)
    session = _session(spec, model, given)
    base = baseline["values"]
    same_model = session.model.sha256 == reference.model.sha256
    seconds: dict[str, float] = {}
    reused: str | None = None
    stopped: Stopped | None = None
    memo = (*_content_key(session), config.key())
    if config.is_fp32 and same_model:
        values, reused = dict(base), "baseline"
    elif memo in _MEASURED:
        values, reused, stopped = dict(_MEASURED[memo][1]), "process", _MEASURED[memo][2]
    else:
        values, stopped = _measure_now(with_own_objectives(session), config, seconds, trial, baseline)
        with _LOCK:
            _MEASURED[memo] = (session.eval_func, dict(values), stopped)
    if trial is not None and stopped is not None:
        set_user_attrs(trial, stopped)
    return replace(_result(session, config, values, baseline, reused, seconds, trial),
                   stopped=None if stopped is None else stopped[attrs.STOPPED_EARLY])


def _measure_now(session: Session, config: QuantConfig, seconds: dict[str, float],
                 trial: optuna.Trial | None, baseline: dict[str, Any],
                 ) -> tuple[dict[str, float], Stopped | None]:
    # one file per measurement: your trials may quantize one config of several models at once
    out = session.spec.workdir / "models" / f"{config.key()}-{uuid.uuid4().hex[:12]}.onnx"
    if trial is None:
        values, _, _ = measure_config(session, config, seconds, lambda key, value: None, None, out=out)
        return values, None
    target = baseline["accuracy_target"]
    hook = pruner_hook(trial, session, baseline["values"]["accuracy"])
    values, _, stopped = measure_config(session, config, seconds, trial.set_user_attr, target,
                                        hook, out=out)
    return values, stopped


def _result(session: Session, config: QuantConfig, values: dict[str, float],
            baseline: dict[str, Any], reused: str | None, seconds: dict[str, float],
            trial: optuna.Trial | None) -> MeasureResult:
    base = baseline["values"]
    names = session.objective_names
    ordered = [values[n] for n in names]
    if session.mode == "weighted":
        ordered = [weighted_ratio_score(ordered, [base[n] for n in names],
                                        session.higher_is_better, session.weights)]
    relative = {k: (v / base[k] if base.get(k) else None) for k, v in values.items()}
    higher = session.metric.higher_is_better
    constraint = accuracy_constraint(values["accuracy"], baseline["accuracy_target"], higher)
    if trial is not None:
        trial.set_user_attr(attrs.VALUES, values)
        trial.set_user_attr(attrs.RELATIVE, relative)
        trial.set_user_attr(attrs.REUSED_FROM, reused)
        trial.set_user_attr(attrs.SECONDS, seconds)
    return MeasureResult(config, ordered, values, relative, baseline, constraint,
                         constraint <= 0, reused, seconds, higher)


def set_accuracy_constraint(trial: optuna.Trial, result: MeasureResult,
                            criterion: dict[str, float] | None = None) -> float:
    """Set the trial's accuracy constraint (Optuna 5's ``trial.set_constraint("accuracy", c)``
    and the legacy list optuna-dashboard reads); feasible when ``c <= 0``.

    Args:
        trial: your trial.
        result: what :func:`measure` returned.
        criterion: ``{"relative": g}`` or ``{"absolute": g}`` against the fp32 baseline's
            accuracy (default: the spec's ``tuning.accuracy_criterion``).

    Returns:
        The constraint value (also in the trial's ``constraint`` and ``feasible`` user attrs).

    Example:
        >>> config = quantuna.search_space("studies/digits.yaml").default_int8()
        >>> result = quantuna.measure(config, spec="studies/digits.yaml")
        >>> trial = optuna.create_study(directions=["maximize"] * 3).ask()
        >>> constraint = quantuna.set_accuracy_constraint(trial, result, {"absolute": 0.5})
        >>> constraint <= 0, trial.user_attrs["feasible"]
        (True, True)
    """
    higher = result.metric_higher_is_better
    constraint = result.constraint
    if criterion is not None:
        target = accuracy_target(result.baseline["values"]["accuracy"],
                                 {**criterion, "higher_is_better": higher})
        constraint = accuracy_constraint(result.measured["accuracy"], target, higher)
    set_constraint(trial, constraint)
    trial.set_user_attr(attrs.CONSTRAINT, constraint)
    trial.set_user_attr(attrs.FEASIBLE, constraint <= 0)
    return constraint
