"""``QuantConfig``: one point of the search space, frozen, hashable and portable as YAML."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from quantuna._util import cut, shorten
from quantuna.errors import SpecError

Approach = Literal["fp32", "static", "dynamic", "weight_only"]
# the fields only a weight-only (MatMulNBits) config has, and the ones it never has
WEIGHT_ONLY_FIELDS = ("bits", "block_size", "accuracy_level", "algorithm")
WEIGHT_ONLY_OP_TYPES = ("Gather", "MatMul")  # what onnxruntime's MatMulNBits quantizer takes
SMOOTH_QUANT_FIELDS = ("smooth_quant", "smooth_quant_alpha")  # static only

# Intel Neural Compressor's spellings, accepted as aliases in specs and config files so that its
# YAML ports without edits (matched case-insensitively; quantuna writes the canonical names)
INC_ALIASES: dict[str, dict[str, str]] = {
    "approach": {"static": "static", "dynamic": "dynamic", "fp32": "fp32",
                 "post_training_static_quant": "static", "post_training_dynamic_quant": "dynamic",
                 "weight_only": "weight_only"},
    "quant_format": {"qdq": "QDQ", "qoperator": "QOperator"},
    "types": {"u8s8": "U8S8", "u8u8": "U8U8", "s8s8": "S8S8"},
    "calibrate_method": {"minmax": "MinMax", "kl": "Entropy", "entropy": "Entropy",
                         "percentile": "Percentile"},
}


def canonical(key: str, value: Any) -> Any:
    """A knob's value in quantuna's spelling (``kl`` -> ``Entropy``, ``qdq`` -> ``QDQ``); lists
    element by element; anything else unchanged (the schema then refuses it with the choices)."""
    if isinstance(value, list):
        return [canonical(key, v) for v in value]
    if isinstance(value, str):
        return INC_ALIASES.get(key, {}).get(value.lower(), value)
    return value


NAME = r"^[A-Za-z_][\w.:/-]{0,199}$"  # an ONNX op type or node name, as quantuna writes them


class _ConfigSchema(BaseModel):
    """The typed schema a config file goes through (a config may come from someone else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approach: Approach = "fp32"
    quant_format: Literal["QDQ", "QOperator"] | None = None
    types: Literal["U8S8", "U8U8", "S8S8"] | None = None
    per_channel: StrictBool | None = None
    reduce_range: StrictBool | None = None
    activation_symmetric: StrictBool | None = None
    weight_symmetric: StrictBool | None = None
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] | None = None
    percentile: StrictFloat | StrictInt | None = Field(default=None, ge=90, lt=100)
    calibration_size: StrictInt | None = Field(default=None, gt=0)
    op_types: list[str] = Field(default=[], max_length=1000)
    first_node_fp32: StrictBool | None = None
    last_node_fp32: StrictBool | None = None
    exclude_nodes: list[str] = Field(default=[], max_length=100_000)
    bits: Literal[4, 8] | None = None
    block_size: Literal[16, 32, 64, 128, 256] | None = None
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = None
    algorithm: Literal["RTN"] | None = None
    graph_optimization: Literal["bert"] | None = None
    smooth_quant: StrictBool | None = None
    smooth_quant_alpha: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1)

    @field_validator(*INC_ALIASES, mode="before")
    @classmethod
    def _inc_spelling(cls, value: Any, info: Any) -> Any:
        return canonical(info.field_name, value)


def _check_weight_only(values: dict[str, Any]) -> str | None:
    """What is wrong with a weight-only combination, or ``None``."""
    never = ("quant_format", "types", "per_channel", "reduce_range", "activation_symmetric",
             "calibrate_method", "percentile", "calibration_size", *SMOOTH_QUANT_FIELDS)
    extra = [k for k in never if values.get(k) is not None]
    if extra:
        return f"{extra[0]}: does not apply to weight-only quantization"
    missing = [k for k in (*WEIGHT_ONLY_FIELDS, "weight_symmetric") if values.get(k) is None]
    if missing:
        return f"{missing[0]}: a weight_only config needs it"
    other = [op for op in values["op_types"] if op not in WEIGHT_ONLY_OP_TYPES]
    if other:
        return f"op_types: {other[0]}: weight-only quantization takes {' or '.join(WEIGHT_ONLY_OP_TYPES)}"
    if values["bits"] != 4 and "Gather" in values["op_types"]:
        return "op_types: Gather: weight-only Gather takes 4 bits only"
    return None


def _check_combination(values: dict[str, Any]) -> str | None:
    """What is wrong with a combination of fields (each valid on its own), or ``None``."""
    approach = values.get("approach", "fp32")
    static_only = ("quant_format", "activation_symmetric", "calibrate_method", "percentile",
                   "calibration_size", *SMOOTH_QUANT_FIELDS)
    if approach == "fp32":
        extra = [k for k, v in values.items() if k != "approach" and v not in (None, [], ())]
        return f"{extra[0]}: an fp32 config has only 'approach'" if extra else None
    if not values.get("op_types"):
        return "op_types: a quantized config names at least one op type"
    if approach == "static" and values.get("graph_optimization") is not None:
        return "graph_optimization: applies to dynamic and weight_only quantization, not static"
    if approach == "weight_only":
        return _check_weight_only(values)
    extra = [k for k in WEIGHT_ONLY_FIELDS if values.get(k) is not None]
    if extra:
        return f"{extra[0]}: applies to weight_only quantization only, not {approach}"
    if approach == "dynamic":
        extra = [k for k in static_only if values.get(k) is not None]
        if extra:
            return f"{extra[0]}: applies to static quantization only, not dynamic"
        if values.get("types", "U8S8") not in ("U8S8", "U8U8"):
            return f"types: {values['types']!r}: dynamic quantization takes U8S8 or U8U8"
        return None
    for key in ("calibrate_method", "calibration_size"):
        if values.get(key) is None:
            return f"{key}: a static config needs it"
    if (values["calibrate_method"] == "Percentile") != (values.get("percentile") is not None):
        return "percentile: given exactly when calibrate_method is Percentile"
    if bool(values.get("smooth_quant")) != (values.get("smooth_quant_alpha") is not None):
        return "smooth_quant_alpha: given exactly when smooth_quant is true"
    return None


@dataclass(frozen=True)
class QuantConfig:
    """A quantization configuration, normalised so that equal behaviour means equal value.

    Fields that do not apply are ``None`` (a dynamic config has no calibration method, the fp32
    config has nothing but ``approach``), so two trials that would build the same model share one
    :meth:`key` and the second reuses the first's measurement.

    Attributes:
        approach: ``fp32`` (the unquantized model), ``static``, ``dynamic`` or ``weight_only``
            (int4/int8 weights in onnxruntime's ``MatMulNBits``, fp32 activations, no calibration).
        quant_format: ``QDQ`` or ``QOperator`` (static only).
        types: activation/weight type pair: ``U8S8``, ``U8U8`` or ``S8S8``.
        per_channel: per-channel weight scales.
        reduce_range: 7-bit weights (avoids int8 saturation on CPUs without VNNI).
        activation_symmetric: symmetric activation ranges (static only).
        weight_symmetric: symmetric weight ranges.
        calibrate_method: ``MinMax``, ``Entropy`` or ``Percentile`` (static only).
        percentile: the percentile of ``Percentile`` calibration.
        calibration_size: how many calibration samples (static only).
        op_types: the operator types quantized, sorted.
        first_node_fp32: keep the first compute node in fp32.
        last_node_fp32: keep the last compute node in fp32.
        exclude_nodes: further node names kept in fp32, sorted.
        bits: weight bits of a weight-only config (4 or 8).
        block_size: how many weights share one scale in a weight-only config.
        accuracy_level: ``MatMulNBits``' minimum compute precision (0 unset, 1 fp32, 2 fp16,
            3 bf16, 4 int8 activations).
        algorithm: how weight-only weights are rounded (``RTN``, round to nearest).
        graph_optimization: onnxruntime's transformer fusions applied before quantizing (``bert``),
            ``None`` for none.
        smooth_quant: SmoothQuant before static quantization (:mod:`quantuna.ort.smooth`);
            ``None`` for off (``False`` is stored as ``None``: one behaviour, one key).
        smooth_quant_alpha: SmoothQuant's migration strength in [0, 1] (with ``smooth_quant``).
    """

    approach: Approach = "fp32"
    quant_format: str | None = None
    types: str | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None
    activation_symmetric: bool | None = None
    weight_symmetric: bool | None = None
    calibrate_method: str | None = None
    percentile: float | None = None
    calibration_size: int | None = None
    op_types: tuple[str, ...] = ()
    first_node_fp32: bool | None = None
    last_node_fp32: bool | None = None
    exclude_nodes: tuple[str, ...] = ()
    bits: int | None = None
    block_size: int | None = None
    accuracy_level: int | None = None
    algorithm: str | None = None
    graph_optimization: str | None = None
    smooth_quant: bool | None = None
    smooth_quant_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.smooth_quant is False:
            object.__setattr__(self, "smooth_quant", None)
        object.__setattr__(self, "op_types", tuple(sorted(self.op_types)))
        object.__setattr__(self, "exclude_nodes", tuple(sorted(self.exclude_nodes)))

    @property
    def is_fp32(self) -> bool:
        """True for the unquantized model."""
        return self.approach == "fp32"

    @property
    def calibration_setting(self) -> dict[str, Any] | None:
        """What the tensor ranges depend on (besides model and data); ``None`` without calibration."""
        if self.approach != "static":
            return None
        setting: dict[str, Any] = {
            "calibrate_method": self.calibrate_method,
            "percentile": self.percentile,
            "calibration_size": self.calibration_size,
            "activation_symmetric": self.activation_symmetric,
        }
        if self.smooth_quant:  # the ranges are those of the smoothed model
            setting["smooth_quant_alpha"] = self.smooth_quant_alpha
        return setting

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, ``None`` fields left out; the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None or value == ():
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> QuantConfig:
        """Build a config from :meth:`to_dict` output, through a typed schema.

        Unknown keys, values of the wrong type (``per_channel: maybe``), values outside their
        choices (``types: U8S9``) and combinations quantuna never writes (a dynamic config with a
        calibration method) are a :class:`SpecError` naming the key and the value.
        """
        if not isinstance(data, dict):
            raise SpecError(f"{where}: a config is a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted((str(k) for k in set(data) - known), key=len)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(sorted(known))
            raise SpecError(f"{where}: unknown key {shorten(unknown[0], 60)} ({cut(hint, 200)})")
        try:
            checked = _ConfigSchema.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise SpecError(f"{where}: {cut(loc, 60)}: {cut(first['msg'])} "
                            f"(got {shorten(first.get('input'), 80)})") from None
        values = {k: v for k, v in checked.model_dump().items() if k in data}
        bad = [n for n in [*checked.op_types, *checked.exclude_nodes] if not re.match(NAME, n)]
        if bad:
            raise SpecError(f"{where}: {shorten(bad[0], 80)} is not an op type or node name")
        problem = _check_combination(values)
        if problem is not None:
            raise SpecError(f"{where}: {problem}")
        for key in ("op_types", "exclude_nodes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def key(self) -> str:
        """A stable hash of the config: equal configs, equal keys, in every process."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The config as a YAML mapping."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def summary(self) -> str:
        """A short human label, e.g. ``static QDQ U8S8 MinMax pc rr [Conv,Gemm]``."""
        if self.is_fp32:
            return "fp32"
        parts: list[str] = [self.approach]
        if self.quant_format:
            parts.append(self.quant_format)
        parts.append(self.types or "")
        if self.graph_optimization:
            parts.append(f"fused-{self.graph_optimization}")
        if self.approach == "weight_only":
            parts.append(f"{self.algorithm} int{self.bits} b{self.block_size} acc{self.accuracy_level}")
        if self.calibrate_method:
            method = self.calibrate_method
            if method == "Percentile":
                method += f"({self.percentile})"
            parts.append(f"{method}/{self.calibration_size}")
        if self.smooth_quant:
            parts.append(f"SmoothQuant({self.smooth_quant_alpha})")
        flags = [
            name
            for name, on in (
                ("per-channel", self.per_channel),
                ("reduce-range", self.reduce_range),
                ("sym-act", self.activation_symmetric),
                ("asym-w", self.weight_symmetric is False),
                ("first-fp32", self.first_node_fp32),
                ("last-fp32", self.last_node_fp32),
            )
            if on
        ]
        parts.extend(flags)
        parts.append("[" + ",".join(self.op_types) + "]")
        if self.exclude_nodes:  # named: "-2 nodes" tells a reader nothing
            names = [n if len(n) <= 24 else n[:23] + "~" for n in self.exclude_nodes[:3]]
            more = f" +{len(self.exclude_nodes) - 3} more" if len(self.exclude_nodes) > 3 else ""
            parts.append(f"fp32 nodes {','.join(names)}{more}")
        return " ".join(p for p in parts if p)
