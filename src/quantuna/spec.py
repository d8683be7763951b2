"""The study spec: a YAML file read with a safe loader into a validated :class:`StudySpec`.

Every key is typed and unknown keys are refused; an error names the file, the key path, the bad
value and what would be accepted. Relative paths are resolved against the spec's directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from quantuna._secrets import remember_url
from quantuna._util import cut, read_yaml, shorten
from quantuna.config import INC_ALIASES, canonical
from quantuna.errors import SpecError
from quantuna.objective import DEFAULT_RELATIVE, equal_weights
from quantuna.sections import (
    DataSection,
    DataSource,
    InputSource,
    PrepareSection,
    _is_reference,
    _Strict,
)
from quantuna.spec_measure import ConfirmMeasure as ConfirmMeasure
from quantuna.spec_measure import MeasureSection as MeasureSection
from quantuna.spec_measure import PerformanceMeasure as PerformanceMeasure
from quantuna.spec_sampler import SamplerChoice, with_sampler_resolved

__all__ = ["DataSection", "DataSource", "InputSource", "PrepareSection", "StudySpec", "load_spec"]

TypePair = Literal["U8S8", "U8U8", "S8S8"]
Precision = Literal["int8", "fp32"]
DEFAULT_OBJECTIVES = ["accuracy", "performance", "modelsize"]


class StudySection(_Strict):
    """``study:`` where the study lives and how it samples."""

    name: str | None = None
    storage: str | None = None
    sampler: SamplerChoice = "auto"  # a name or a class of your own (quantuna.spec_sampler)
    seed: int | None = Field(default=0, ge=0, le=2**32 - 1)
    save_models: bool = False


class AccuracySection(_Strict):
    """``accuracy:`` how the accuracy metric is computed from the evaluation outputs."""

    metric: str = "top1"
    output: str | None = None
    higher_is_better: bool | None = None


class MultiObjectives(_Strict):
    """``tuning.multi_objectives:`` Neural Compressor's key names."""

    objective: list[str] = Field(min_length=1)
    higher_is_better: list[bool] | None = None
    weight: list[float] | None = None

    @model_validator(mode="after")
    def _same_lengths(self) -> MultiObjectives:
        n = len(self.objective)
        for key in ("higher_is_better", "weight"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"{key} has {len(value)} entries but objective has {n}")
        if self.weight is not None and (any(w < 0 for w in self.weight) or sum(self.weight) <= 0):
            raise ValueError(f"weight {self.weight} must be >= 0 with a positive sum")
        return self


class AccuracyCriterion(_Strict):
    """``tuning.accuracy_criterion:`` ``{relative: g}`` or ``{absolute: g}`` (default relative 1 %)."""

    relative: float | None = None
    absolute: float | None = None
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> AccuracyCriterion:
        if self.relative is not None and self.absolute is not None:
            raise ValueError("give either 'relative' or 'absolute', not both")
        if self.relative is not None and not -1.0 < self.relative < 1.0:
            raise ValueError(f"relative {self.relative} must be a fraction in (-1, 1), e.g. 0.01 "
                             "for 1 % (negative: must improve)")
        if self.absolute is not None and not math.isfinite(self.absolute):
            raise ValueError(f"absolute {self.absolute} must be a finite number")
        return self

    def as_dict(self) -> dict[str, Any]:
        """The criterion in the form ``quantuna.objective`` takes."""
        if self.absolute is not None:
            return {"absolute": self.absolute, "higher_is_better": self.higher_is_better}
        relative = DEFAULT_RELATIVE if self.relative is None else self.relative
        return {"relative": relative, "higher_is_better": self.higher_is_better}


class ExitPolicy(_Strict):
    """``tuning.exit_policy:`` the study's trial budget (for the study as a whole) and timeout."""

    max_trials: int = Field(default=40, gt=0)
    timeout: float = Field(default=0, ge=0)


class TuningSection(_Strict):
    """``tuning:`` what is optimised and how."""

    objective: str | None = None
    multi_objectives: MultiObjectives | None = None
    mode: Literal["pareto", "weighted"] = "pareto"
    accuracy_criterion: AccuracyCriterion = AccuracyCriterion()
    exit_policy: ExitPolicy = ExitPolicy()

    @model_validator(mode="after")
    def _one_objective_form(self) -> TuningSection:
        if self.objective is not None and self.multi_objectives is not None:
            raise ValueError("give either 'objective' or 'multi_objectives', not both")
        return self

    @property
    def objective_names(self) -> list[str]:
        """The objectives measured per trial; accuracy is always measured (it is the constraint)."""
        if self.multi_objectives is not None:
            return list(self.multi_objectives.objective)
        if self.objective is not None:
            return [self.objective]
        return list(DEFAULT_OBJECTIVES)

    @property
    def weights(self) -> list[float]:
        """Objective weights for the weighted score; equal by default (Neural Compressor)."""
        names = self.objective_names
        if self.multi_objectives is not None and self.multi_objectives.weight is not None:
            return list(self.multi_objectives.weight)
        return equal_weights(len(names))


class SpaceSection(_Strict):
    """``space:`` the knobs; each list holds the values a trial may take."""

    approach: list[Literal["static", "dynamic", "weight_only"]] = Field(default=["static"], min_length=1)
    quant_format: list[Literal["QDQ", "QOperator"]] = Field(default=["QDQ"], min_length=1)
    types: list[TypePair] = Field(default=["U8S8"], min_length=1)
    per_channel: list[bool] = Field(default=[False], min_length=1)
    reduce_range: list[bool] = Field(default=[False], min_length=1)
    activation_symmetric: list[bool] = Field(default=[False], min_length=1)
    weight_symmetric: list[bool] = Field(default=[True], min_length=1)
    calibrate_method: list[Literal["MinMax", "Entropy", "Percentile"]] = Field(
        default=["MinMax"], min_length=1
    )
    percentile: list[float] = Field(default=[99.999], min_length=1)
    calibration_size: list[int] | None = None
    op_types: dict[str, list[Precision]] | None = None
    first_node_fp32: list[bool] = Field(default=[False], min_length=1)
    last_node_fp32: list[bool] = Field(default=[False], min_length=1)
    exclude_sensitive_nodes: int | Literal["auto"] = 0
    sensitivity_samples: int = Field(default=256, gt=0)
    # weight_only (onnxruntime's MatMulNBits quantizer): asked only when the approach is weight_only
    bits: list[Literal[4, 8]] = Field(default=[4], min_length=1)
    block_size: list[Literal[16, 32, 64, 128, 256]] = Field(default=[128], min_length=1)
    accuracy_level: list[Literal[0, 1, 2, 3, 4]] = Field(default=[0], min_length=1)
    algorithm: list[Literal["RTN"]] = Field(default=["RTN"], min_length=1)
    graph_optimization: list[Literal["none", "bert"]] = Field(default=["none"], min_length=1)
    # static only: SmoothQuant before calibration; the alpha is asked only when smooth_quant is on
    smooth_quant: list[bool] = Field(default=[False], min_length=1)
    smooth_quant_alpha: list[float] = Field(default=[0.5], min_length=1)

    @field_validator("exclude_sensitive_nodes", mode="before")
    @classmethod
    def _auto_or_count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 0):
            return value
        raise ValueError("must be auto or a whole number >= 0")

    @field_validator(*INC_ALIASES, mode="before")
    @classmethod
    def _inc_spelling(cls, value: Any, info: Any) -> Any:
        return canonical(info.field_name, value)

    @model_validator(mode="after")
    def _values_in_range(self) -> SpaceSection:
        for p in self.percentile:
            if not 90.0 <= p < 100.0:
                raise ValueError(f"percentile {p} must be in [90, 100)")
        for alpha in self.smooth_quant_alpha:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"smooth_quant_alpha {alpha} must be in [0, 1]")
        for size in self.calibration_size or []:
            if size <= 0:
                raise ValueError(f"calibration_size {size} must be positive")
        for op, values in (self.op_types or {}).items():
            if not values:
                raise ValueError(f"op_types.{op} needs at least one of int8, fp32")
        return self


class ModelSource(_Strict):
    """``model: {path, build}``: a model built on first use by ``build(path)``."""

    path: Path
    build: str

    @model_validator(mode="after")
    def _reference(self) -> ModelSource:
        if not _is_reference(self.build):
            raise ValueError(f"build {shorten(self.build)} must look like 'file.py:function' or 'pkg.mod:function'")
        return self


class _SpecModel(_Strict):
    study: StudySection = StudySection()
    model: Path | ModelSource
    prepare: PrepareSection = PrepareSection()
    data: DataSection
    accuracy: AccuracySection = AccuracySection()
    tuning: TuningSection = TuningSection()
    measure: MeasureSection = MeasureSection()
    space: SpaceSection = SpaceSection()


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec with every path resolved.

    Attributes:
        path: the spec file (``None`` when built from a dict).
        name: the study name (default: the spec file's stem).
        storage: the Optuna storage URL (default: SQLite beside the spec).
        workdir: where the range cache and artifacts live (``<stem>.quantuna`` beside the spec).
    """

    path: Path | None
    name: str
    storage: str
    workdir: Path
    study: StudySection
    model: Path
    model_build: str | None
    prepare: PrepareSection
    data: DataSection
    accuracy: AccuracySection
    tuning: TuningSection
    measure: MeasureSection
    space: SpaceSection

    @property
    def where(self) -> str:
        """How errors name this spec."""
        return str(self.path) if self.path else "<spec>"


def _resolve_reference(ref: str | None, root: Path) -> str | None:
    """A ``file.py:name`` reference made absolute (relative to the spec); modules unchanged."""
    if ref is None or not ref.rpartition(":")[0].endswith(".py"):
        return ref
    file, _, name = ref.rpartition(":")
    path = Path(file).expanduser()
    return f"{path if path.is_absolute() else root / path}:{name}"


def _format_validation_error(where: str, err: ValidationError) -> str:
    errors = err.errors()
    first = next((e for e in errors if isinstance(e.get("input"), dict)  # model: {path, build}
                  and any("ModelSource" in str(p) for p in e["loc"])), errors[0])
    parts = [str(p) for p in first["loc"]]
    keys = [p for p in parts if not (p.startswith("function-") or "[" in p or p == "lax-or-strict")]
    loc = cut(".".join(keys), 120)
    msg = cut(first["msg"].removeprefix("Value error, "), 120)
    if keys == ["model"] and not any("ModelSource" in p for p in parts) and len(parts) > 1:
        msg = "give the .onnx file's path, or {path: FILE.onnx, build: 'file.py:function'}"
    if first["type"] == "extra_forbidden":
        return f"{where}: {loc}: unknown key (check its spelling and its section)"
    if first["type"] == "missing":
        return f"{where}: {loc}: required key is missing"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {shorten(value)})"
    return f"{where}: {loc or '<top level>'}: {msg}{shown}"


def load_spec(
    source: str | Path | dict[str, Any] | StudySpec,
    *,
    base_dir: str | Path | None = None,
    storage: str | None = None,
) -> StudySpec:
    """Read and validate a study spec.

    Args:
        source: a path to a YAML file, an already parsed mapping, or a ``StudySpec``.
        base_dir: resolves relative paths of a mapping (default: the current directory).
        storage: overrides the spec's storage URL.

    Returns:
        The validated spec with absolute paths.

    Raises:
        SpecError: one line naming the file, the key and the bad value.

    Example:
        >>> spec = load_spec("studies/digits.yaml")  # doctest: +SKIP
        >>> spec.tuning.objective_names  # doctest: +SKIP
        ['accuracy', 'performance', 'modelsize']
    """
    if isinstance(source, StudySpec):
        return source if storage is None else _replace_storage(source, storage)
    if isinstance(source, dict):
        spec_path, raw = None, source
        root = Path(base_dir or ".").resolve()
    else:
        spec_path = Path(source).resolve()
        raw = read_yaml(spec_path, what="a study spec")
        root = spec_path.parent
    where = str(spec_path) if spec_path else "<spec>"
    try:
        parsed = _SpecModel.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_validation_error(where, err)) from None

    def resolve(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else root / p

    def resolve_source(source: DataSource) -> DataSource:
        update = {"path": resolve(source.path), "loader": _resolve_reference(source.loader, root)}
        return source.model_copy(update=update)

    data = DataSection(
        calibration=resolve_source(parsed.data.calibration),
        evaluation=resolve_source(parsed.data.evaluation),
    )
    accuracy = parsed.accuracy.model_copy(
        update={"metric": _resolve_reference(parsed.accuracy.metric, root)}
    )
    stem = spec_path.stem if spec_path else (parsed.study.name or "quantuna")
    name = parsed.study.name or stem
    url = storage or parsed.study.storage or f"sqlite:///{root / (stem + '.db')}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            url = f"sqlite:///{resolve(Path(relative))}"
    remember_url(url)  # its password is scrubbed from every later message
    if isinstance(parsed.model, ModelSource):
        model, build = resolve(parsed.model.path), _resolve_reference(parsed.model.build, root)
    else:
        model, build = resolve(parsed.model), None
    assert model is not None
    return StudySpec(
        path=spec_path,
        name=name,
        storage=url,
        workdir=root / f"{stem}.quantuna",
        study=with_sampler_resolved(parsed.study, root),
        model=model,
        model_build=build,
        prepare=parsed.prepare,
        data=data,
        accuracy=accuracy,
        tuning=parsed.tuning,
        measure=parsed.measure,
        space=parsed.space,
    )


def _replace_storage(spec: StudySpec, storage: str) -> StudySpec:
    from dataclasses import replace

    return replace(spec, storage=storage)

