"""``prepare()``: everything a study needs, loaded and checked once before the first calibration.

A :class:`Session` holds the inspected model, the data sets, the metric, the search space, the
objective instances and their directions, and the range cache. Building it validates the whole
spec, the model and the data, so a bad input fails here with one clear ``SpecError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quantuna.config import QuantConfig
from quantuna.data import Dataset, load_dataset
from quantuna.errors import SpecError
from quantuna.metrics import Metric, resolve_metric
from quantuna.model import ModelInfo, build_model, inspect_model
from quantuna.objective import Accuracy, Objective, accuracy_target, resolve_objective
from quantuna.ort.calibrate import RangeCache
from quantuna.ort.options import follower_op_types, quantizable_by_mode
from quantuna.ort.prepare import Prepared, PrepareSettings, prepare_model
from quantuna.ort.session import check_runs
from quantuna.space import SearchSpace, required_opset
from quantuna.spec import StudySpec
from quantuna.study.sampler import sampler_missing_modules

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Session:
    """A study's prepared inputs (see :func:`prepare`)."""

    spec: StudySpec
    mode: str
    model: ModelInfo
    calibration: Dataset
    evaluation: Dataset
    metric: Metric
    space: SearchSpace
    objectives: list[Objective]
    objective_names: list[str]
    higher_is_better: list[bool]
    ranges: RangeCache
    eval_batch_size: int
    eval_func: Callable[[Any], float] | None = None
    preparation: Prepared | None = None
    notes: tuple[str, ...] = ()

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """Optuna directions: one per objective (pareto) or one maximised score (weighted)."""
        if self.mode == "weighted":
            return ["maximize"]
        return ["maximize" if h else "minimize" for h in self.higher_is_better]

    @property
    def metric_names(self) -> list[str]:
        """Names with units, as optuna-dashboard shows them."""
        if self.mode == "weighted":
            return ["weighted score (fp32 = 1)"]
        return [self.objective_label(name) for name in self.objective_names]

    def objective_label(self, name: str) -> str:
        """``accuracy (top1)``, ``performance [ms]``: an objective's name with its unit."""
        if name == "accuracy":
            return f"accuracy ({self.metric.name})"
        by_name = {str(o.representation).lower(): o for o in self.objectives}
        unit = getattr(by_name.get(name), "unit", "")
        return f"{name} [{unit}]" if unit else name

    @property
    def weights(self) -> list[float]:
        """Objective weights of the weighted score (equal unless the spec gives one per objective)."""
        given = self.spec.tuning.weights
        if len(given) == len(self.objective_names):
            return given
        return [1.0 / len(self.objective_names)] * len(self.objective_names)

    def accuracy_target(self, baseline_accuracy: float) -> float:
        """The accuracy a trial must reach, from the spec's criterion and the metric's direction."""
        criterion = dict(self.spec.tuning.accuracy_criterion.as_dict())
        criterion["higher_is_better"] = self.metric.higher_is_better
        return accuracy_target(baseline_accuracy, criterion)

    def model_path_for(self, config: QuantConfig) -> Path:
        """Where the quantized model of ``config`` is written."""
        return self.spec.workdir / "models" / f"{config.key()}.onnx"


def _objective_instances(
    names: Sequence[str], extra: Sequence[Any] | None, where: str
) -> tuple[list[Objective], list[str]]:
    instances: list[Objective] = []
    for name in names:
        try:
            cls = resolve_objective(name)
        except ValueError as exc:
            raise SpecError(f"{where}: tuning objective {name!r}: {exc}") from None
        instances.append(cls())
    for item in extra or []:
        obj = item if isinstance(item, Objective) else resolve_objective(str(item))()
        instances.append(obj)
    resolved = [str(o.representation).lower() for o in instances]
    if len(set(resolved)) != len(resolved):
        raise SpecError(f"{where}: tuning objectives repeat a name: {resolved}")
    if not any(isinstance(o, Accuracy) for o in instances):
        instances.insert(0, Accuracy())  # measured always: it is the constraint
    return instances, resolved


def prepare(
    spec: StudySpec,
    *,
    mode: str | None = None,
    eval_func: Callable[[Any], float] | None = None,
    objectives: Sequence[Any] | None = None,
    calibration: Iterable[Any] | None = None,
    evaluation: Iterable[Any] | None = None,
) -> Session:
    """Load and check the model, the data, the metric, the objectives and the space.

    Args:
        spec: a validated spec.
        mode: ``pareto`` or ``weighted`` (default: the spec's).
        eval_func: replaces the metric pass (``eval_func(onnx.ModelProto) -> float``).
        objectives: objectives added to the spec's (instances, classes' names or references).
        calibration: batches ``{input: array}`` replacing ``data.calibration``.
        evaluation: ``({input: array}, labels)`` batches replacing ``data.evaluation``.

    Raises:
        SpecError: anything that would make every trial fail, named with file and key.
    """
    where = spec.where
    mode = mode or spec.tuning.mode
    _check_study_settings(spec, mode)
    preparation = prepare_spec_model(spec)
    model = inspect_model(preparation.path, where=f"{where}: model (prepared)")
    metric = resolve_metric(
        spec.accuracy.metric, spec.accuracy.higher_is_better, where=f"{where}: accuracy.metric"
    )
    if spec.accuracy.output is not None and spec.accuracy.output not in model.outputs:
        raise SpecError(
            f"{where}: accuracy.output: {spec.accuracy.output!r} is not an output of the model "
            f"(its outputs: {', '.join(model.outputs)})"
        )
    calibration_set = load_dataset(
        spec.data.calibration if calibration is None else calibration,
        model,
        where=f"{where}: data.calibration",
    )
    evaluation_set = load_dataset(
        spec.data.evaluation if evaluation is None else evaluation,
        model,
        where=f"{where}: data.evaluation",
        need_labels=metric.needs_labels and eval_func is None,
    )
    calib_batch, eval_batch = _check_feeds(spec, model, calibration_set, evaluation_set)
    space = SearchSpace(spec.space, model, len(calibration_set), quantizable=quantizable_by_mode(),
                        followers=follower_op_types(), where=where)
    too_big = [s for s in space.calibration_sizes if s > len(calibration_set)]
    if too_big:
        raise SpecError(
            f"{where}: space.calibration_size: {too_big[0]} samples asked, the calibration data "
            f"has {len(calibration_set)}"
        )
    instances, names = _objective_instances(spec.tuning.objective_names, objectives, where)
    hib = _directions(spec, names, instances, metric)
    ranges = RangeCache(spec.workdir / "ranges", model.path, model.sha256, calibration_set,
                        calib_batch, op_types=sorted(space.op_knobs))
    return Session(
        spec=spec,
        mode=mode,
        model=model,
        calibration=calibration_set,
        evaluation=evaluation_set,
        metric=metric,
        space=space,
        objectives=instances,
        objective_names=names,
        higher_is_better=hib,
        ranges=ranges,
        eval_batch_size=eval_batch,
        eval_func=eval_func,
        preparation=preparation,
        notes=(*preparation.notes, *space.notes),
    )


def prepare_spec_model(spec: StudySpec) -> Prepared:
    """The spec's model, built on first use, checked, then prepared (cached beside the spec)."""
    where = spec.where
    if spec.model_build is not None:
        build_model(spec.model, spec.model_build, where=f"{where}: model.build")
    inspect_model(spec.model, where=f"{where}: model")
    settings = PrepareSettings(spec.prepare.preprocess, spec.prepare.opset,
                               required_opset(spec.space))
    return prepare_model(spec.model, settings, spec.workdir / "prepared", where=f"{where}: model")


def _check_feeds(spec: StudySpec, model: ModelInfo, calibration: Dataset,
                 evaluation: Dataset) -> tuple[int, int]:
    """The calibration and evaluation batch sizes, each run once through the fp32 model (and the
    latency loop's batch too): whatever the baseline would hit, hit here first."""
    where = spec.where
    calib_batch = _fixed_batch(model, calibration) or spec.data.calibration.batch_size
    eval_batch = _fixed_batch(model, evaluation) or spec.data.evaluation.batch_size
    shown = f"{spec.model} (prepared: {model.path.name})"
    check_runs(model.path, calibration, calib_batch, where=f"{where}: data.calibration",
               shown=shown)
    check_runs(model.path, evaluation, eval_batch, where=f"{where}: data.evaluation", shown=shown)
    timing_batch = spec.measure.performance.batch_size
    if timing_batch != eval_batch:
        check_runs(model.path, evaluation, timing_batch, shown=shown,
                   where=f"{where}: measure.performance.batch_size {timing_batch}")
    return calib_batch, eval_batch


def _fixed_batch(model: ModelInfo, data: Dataset) -> int | None:
    """The batch size a model fixes on its first sampled input's batch axis, if it does."""
    for info in model.inputs:
        if info.name in data.inputs and info.shape:
            return info.shape[data.axes.get(info.name, 0)]
    return None


def _check_study_settings(spec: StudySpec, mode: str) -> None:
    where = spec.where
    if mode not in ("pareto", "weighted"):
        raise SpecError(f"{where}: tuning.mode: {mode!r} is not pareto or weighted")
    missing = sampler_missing_modules(spec.study.sampler)
    if missing:
        raise SpecError(
            f"{where}: study.sampler: {spec.study.sampler!r} (Optuna's GPSampler) needs "
            f"{' and '.join(missing)}, which quantuna does not install; install them "
            f"(pip install torch==2.13.0 scipy on a CPU machine) or choose auto, tpe, nsga2 or random"
        )


def _directions(
    spec: StudySpec, names: list[str], instances: list[Objective], metric: Metric
) -> list[bool]:
    given = spec.tuning.multi_objectives.higher_is_better if spec.tuning.multi_objectives else None
    by_name = {str(o.representation).lower(): o for o in instances}
    out = []
    for i, name in enumerate(names):
        if given is not None and i < len(given):
            out.append(bool(given[i]))
        elif name == "accuracy":
            out.append(metric.higher_is_better)
        else:
            out.append(bool(by_name[name].higher_is_better))
    return out
