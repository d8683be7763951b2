"""``prepare()``: everything a study needs, loaded and checked once before the first calibration.

A :class:`Session` holds the inspected model, the data sets, the metric, the search space, the
objective instances and their directions, and the range cache. Building it validates the whole
spec, the model and the data, so a bad input fails here with one clear ``SpecError``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from quantuna._util import check_own_dir, check_writable_dir, cut
from quantuna.config import QuantConfig
from quantuna.data import Dataset, load_dataset
from quantuna.errors import SpecError
from quantuna.metrics import BUILTIN_METRICS, Metric, check_labels, resolve_metric
from quantuna.model import ModelInfo, build_model, inspect_model
from quantuna.objective import (
    Accuracy,
    Footprint,
    ModelSize,
    Objective,
    Performance,
    accuracy_target,
    equal_weights,
    resolve_objective,
)
from quantuna.ort.calib_memory import check_fits, sample_shapes, tensor_bytes_per_sample
from quantuna.ort.calibrate import RangeCache
from quantuna.ort.fuse import fused_model
from quantuna.ort.latency import Reference, Timing
from quantuna.ort.measure import AccuracyTask, probe_metric
from quantuna.ort.options import calibrated_op_types, follower_op_types, quantizable_by_mode
from quantuna.ort.prepare import (
    Prepared,
    PrepareSettings,
    cached_prepared,
    commit_prepared,
    prepare_model,
)
from quantuna.ort.session import check_runs
from quantuna.space import SearchSpace, required_opset
from quantuna.spec import StudySpec
from quantuna.spec_sampler import SamplerClass
from quantuna.study.sampler import sampler_missing_modules, user_sampler

logger = logging.getLogger(__name__)
BUILTIN_OBJECTIVES = (Accuracy, Performance, Footprint, ModelSize)


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
    timing: Timing | None = None
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
        unit = self.objective_unit(name)
        return f"{name} [{unit}]" if unit else name

    def objective_unit(self, name: str) -> str:
        """``ms``, ``MiB``; the metric's name (``top1``) for accuracy; ``""`` for a unitless one."""
        if name == "accuracy":
            return self.metric.name
        by_name = {str(o.representation).lower(): o for o in self.objectives}
        return str(getattr(by_name.get(name), "unit", "") or "")

    @property
    def weights(self) -> list[float]:
        """Objective weights of the weighted score (equal unless the spec gives one per objective)."""
        given = self.spec.tuning.weights
        if len(given) == len(self.objective_names):
            return given
        return equal_weights(len(self.objective_names))

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
        SpecError: anything that would make every trial fail, named with file and key (nothing
            is written then: a newly prepared model reaches the cache only when all passed).
    """
    with tempfile.TemporaryDirectory(prefix="quantuna-prepare-") as scratch:
        return _prepare(spec, Path(scratch), mode=mode, eval_func=eval_func, objectives=objectives,
                        calibration=calibration, evaluation=evaluation)


def _prepare(spec: StudySpec, scratch: Path, *, mode: str | None,
             eval_func: Callable[[Any], float] | None, objectives: Sequence[Any] | None,
             calibration: Iterable[Any] | None, evaluation: Iterable[Any] | None) -> Session:
    where = spec.where
    mode = mode or spec.tuning.mode
    _check_study_settings(spec, mode)
    preparation = prepare_spec_model(spec, scratch)
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
    if eval_func is None:
        _check_metric(spec, model, metric, evaluation_set, eval_batch)
    space = _space(spec, model, calibration_set)
    instances, names = _objective_instances(spec.tuning.objective_names, objectives, where)
    hib = _directions(spec, names, instances, metric)
    preparation = _keep(spec, preparation)  # every check passed
    model = replace(model, path=preparation.path)
    ranges = RangeCache(spec.workdir / "ranges", model.path, model.sha256, calibration_set,
                        calib_batch, op_types=calibrated_op_types(list(space.op_knobs)))
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
        # one fp32 session held open for the study: every latency is timed interleaved with it
        timing=Timing(Reference(model.path, spec.measure.performance.threads), f"study {spec.name}"),
        preparation=preparation,
        notes=(*preparation.notes, *space.notes),
    )


def _space(spec: StudySpec, model: ModelInfo, calibration: Dataset) -> SearchSpace:
    """The search space, checked against the calibration data (its size, the memory it takes)."""
    where = spec.where
    space = SearchSpace(spec.space, model, len(calibration), quantizable=quantizable_by_mode(),
                        followers=follower_op_types(), where=where,
                        fused=_fused_model(spec, model, where))
    too_big = [s for s in space.calibration_sizes if s > len(calibration)]
    if too_big:
        raise SpecError(
            f"{where}: space.calibration_size: {too_big[0]} samples asked, the calibration data "
            f"has {len(calibration)}"
        )
    if "static" in spec.space.approach:  # onnxruntime's calibrators hold every sample's tensors
        per_sample = tensor_bytes_per_sample(model.path, calibrated_op_types(list(space.op_knobs)),
                                             sample_shapes(calibration.inputs))
        check_fits(per_sample, [(m, n) for m in spec.space.calibrate_method
                                for n in space.calibration_sizes], where=where)
    return space


def _model(spec: StudySpec) -> ModelInfo:
    """The spec's model, built on first use; a built file that is not ONNX is built again."""
    where = spec.where
    if spec.model_build is None:
        return inspect_model(spec.model, where=f"{where}: model")
    build_model(spec.model, spec.model_build, where=f"{where}: model.build")
    try:
        return inspect_model(spec.model, where=f"{where}: model")
    except SpecError as exc:  # a cache entry like the others: discarded, logged, rebuilt
        logger.warning("%s is discarded and built again: %s", spec.model, exc)
        spec.model.unlink(missing_ok=True)
        build_model(spec.model, spec.model_build, where=f"{where}: model.build")
        return inspect_model(spec.model, where=f"{where}: model")


def _fused_model(spec: StudySpec, model: ModelInfo, where: str) -> ModelInfo | None:
    """The model after onnxruntime's transformer fusions, when the space asks for them."""
    kinds = [k for k in spec.space.graph_optimization if k != "none"]
    if not kinds:
        return None
    try:
        return fused_model(model, kinds[0])
    except Exception as exc:  # noqa: BLE001  (onnxruntime's optimizer raises anything)
        raise SpecError(f"{where}: space.graph_optimization: {kinds[0]}: onnxruntime's fusions "
                        f"failed on this model: {type(exc).__name__}: {cut(str(exc))}") from None


def _check_metric(spec: StudySpec, model: ModelInfo, metric: Metric, evaluation: Dataset,
                  batch_size: int) -> None:
    """The labels suit the metric, and the metric gives a number on one real fp32 batch."""
    check_labels(metric, evaluation.labels, f"{spec.where}: data.evaluation")
    task = AccuracyTask(evaluation=evaluation, metric=metric, batch_size=batch_size,
                        output=spec.accuracy.output, threads=spec.measure.accuracy_threads)
    probe_metric(model.path, task, where=spec.where)
    criterion = spec.tuning.accuracy_criterion
    if criterion.absolute is not None and metric.sample_bounds is not None:
        low, high = metric.sample_bounds
        if criterion.absolute >= high - low:
            raise SpecError(
                f"{spec.where}: tuning.accuracy_criterion.absolute: {criterion.absolute} is at least "
                f"the whole range of {metric.name} ({low} to {high}): every model would meet it"
            )


def _keep(spec: StudySpec, preparation: Prepared) -> Prepared:
    """A preparation made in the scratch folder, moved into the spec's cache."""
    if preparation.path.parent == spec.workdir / "prepared":
        return preparation
    check_writable_dir(spec.workdir, where=f"{spec.where}: the study's folder")
    check_own_dir(spec.workdir, where=f"{spec.where}: the study's folder")
    return commit_prepared(preparation, spec.workdir / "prepared")


def prepare_spec_model(spec: StudySpec, scratch: Path) -> Prepared:
    """The spec's model, built on first use, checked, then prepared: from the cache beside the
    spec, or made in ``scratch`` (moved into the cache by :func:`prepare` once every check passed)."""
    _model(spec)
    settings = PrepareSettings(spec.prepare.preprocess, spec.prepare.opset,
                               required_opset(spec.space))
    cached = cached_prepared(spec.model, settings, spec.workdir / "prepared")
    if cached is not None:
        return cached
    return prepare_model(spec.model, settings, scratch, where=f"{spec.where}: model")


def _check_feeds(spec: StudySpec, model: ModelInfo, calibration: Dataset,
                 evaluation: Dataset) -> tuple[int, int]:
    """The calibration and evaluation batch sizes, each run once through the fp32 model (and the
    latency loop's batch too): whatever the baseline would hit, hit here first."""
    where = spec.where
    calib_batch = _fixed_batch(model, calibration) or spec.data.calibration.batch_size
    eval_batch = _fixed_batch(model, evaluation) or spec.data.evaluation.batch_size
    shown = f"{spec.model.name} (prepared: {model.path.name})"
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
    if isinstance(spec.study.sampler, SamplerClass):
        user_sampler(spec.study.sampler, spec.study.seed, where)  # imports and calls it once, now
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
    """One direction per objective; a given one that contradicts a built-in is refused."""
    given = spec.tuning.multi_objectives.higher_is_better if spec.tuning.multi_objectives else None
    by_name = {str(o.representation).lower(): o for o in instances}
    out = []
    for i, name in enumerate(names):
        natural = metric.higher_is_better if name == "accuracy" else bool(by_name[name].higher_is_better)
        if given is not None and i < len(given):
            builtin = (metric.name in BUILTIN_METRICS if name == "accuracy"
                       else isinstance(by_name[name], BUILTIN_OBJECTIVES))
            if builtin and bool(given[i]) != natural:
                way = "higher" if natural else "lower"
                raise SpecError(
                    f"{spec.where}: tuning.multi_objectives.higher_is_better[{i}]: {given[i]} "
                    f"contradicts {name}{f' ({metric.name})' if name == 'accuracy' else ''}, where "
                    f"{way} is better; give {natural} or leave the list out"
                )
            if name == "accuracy" and not builtin and bool(given[i]) != natural:
                # the constraint follows the metric's direction: they must agree
                raise SpecError(
                    f"{spec.where}: tuning.multi_objectives.higher_is_better[{i}]: {given[i]} for "
                    f"accuracy, but the metric is taken as {'higher' if natural else 'lower'}-is-"
                    f"better; set accuracy.higher_is_better: {str(given[i]).lower()}"
                )
            out.append(bool(given[i]))
        else:
            out.append(natural)
    return out
