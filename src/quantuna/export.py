"""``export_trial()`` and ``apply()``: a chosen trial -> a YAML config -> the same quantized model.

The exported file carries the config and its provenance (versions, sha256 of the source model and
of the calibration data, study and trial, the measured objectives and the baseline). ``apply``
recalibrates from the named calibration data and quantizes with the same code path as the study,
so with the same model, data and versions the rebuilt file is byte-identical.
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from quantuna._secrets import redact_url
from quantuna._util import atomic_write, check_output_path, cut, read_yaml, sha256_file, shorten
from quantuna.config import QuantConfig
from quantuna.data import Dataset, load_dataset
from quantuna.errors import QuantunaError, SpecError
from quantuna.model import inspect_model
from quantuna.ort.calibrate import compute_ranges
from quantuna.ort.options import quantizable_op_types
from quantuna.ort.prepare import PrepareSettings, prepare_model
from quantuna.ort.quantize import quantize
from quantuna.results import TrialResult, TuneResult
from quantuna.sections import InputSource
from quantuna.spec import DataSource

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
SHA256 = r"^[0-9a-f]{64}$"


def versions() -> dict[str, str]:
    """The versions that decide the quantized bytes."""
    out = {}
    for package in ("quantuna", "onnxruntime", "onnx", "optuna", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


@dataclass(frozen=True)
class ExportedConfig:
    """A config file read back: the config, how to calibrate, and where it came from."""

    config: QuantConfig
    calibration: dict[str, Any] | None
    provenance: dict[str, Any]
    where: str = "config"

    @classmethod
    def read(cls, path: str | Path) -> ExportedConfig:
        """Read a file written by :func:`export_trial` (or a bare ``QuantConfig`` mapping).

        Every section goes through a typed schema (a config may come from someone else): one
        :class:`SpecError` naming the file, the key and the value.
        """
        path = Path(path)
        raw = read_yaml(path, what="a quantuna config")
        where = str(path)
        if "config" not in raw:  # a bare QuantConfig mapping
            return cls(QuantConfig.from_dict(raw, where=where), None, {}, where)
        unknown = sorted(str(k) for k in set(raw) - {"quantuna_config", "config", "calibration",
                                                      "provenance", "measured"})
        if unknown:
            raise SpecError(f"{where}: unknown key {shorten(unknown[0], 60)}")
        if raw.get("quantuna_config", FORMAT_VERSION) != FORMAT_VERSION:
            raise SpecError(f"{where}: quantuna_config: {shorten(raw['quantuna_config'], 40)} is not "
                            f"{FORMAT_VERSION}, the format this quantuna reads")
        config = QuantConfig.from_dict(raw["config"], where=f"{where}: config")
        calibration = _checked_section(_CalibrationSchema, raw.get("calibration"), f"{where}: calibration")
        provenance = raw.get("provenance") or {}
        if not isinstance(provenance, dict):
            raise SpecError(f"{where}: provenance: a mapping, got {type(provenance).__name__}")
        _checked_section(_SourceModelSchema, provenance.get("source_model"),
                         f"{where}: provenance.source_model")
        _checked_section(_MeasuredSchema, raw.get("measured"), f"{where}: measured")
        return cls(config, calibration, dict(provenance), where)


class _CalibrationSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    loader: str | None = None
    inputs: dict[str, str | InputSource] | None = None
    constants: dict[str, str | int | float] | None = None
    size: StrictInt | None = Field(default=None, gt=0)
    batch_size: StrictInt = Field(default=32, gt=0)
    sha256: str | None = Field(default=None, pattern=SHA256)


class _SourceModelSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    sha256: str | None = Field(default=None, pattern=SHA256)


class _MeasuredSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_sha256: str | None = Field(default=None, pattern=SHA256)


def _checked_section(schema: type[BaseModel], value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(f"{where}: a mapping, got {type(value).__name__}")
    try:
        return schema.model_validate(value).model_dump(exclude_none=True)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"{where}.{cut(loc, 60)}: {cut(first['msg'], 120)} "
                        f"(got {shorten(first.get('input'), 80)})") from None


def _chosen(result: TuneResult, trial: int | None, rule: str,
            allow_infeasible: bool) -> tuple[TrialResult, str, dict[str, Any]]:
    """The trial to export, how it was chosen, and what its pick said."""
    if trial is None:
        pick = result.pick(rule)
        chosen, picked_by = pick.trial, f"rule {pick.rule}"
        said = {"feasible": pick.feasible, "reason": pick.reason, "note": pick.note}
    else:
        matches = [t for t in result.trials if t.number == trial]
        if not matches:
            numbers = ", ".join(str(t.number) for t in result.trials[:20])
            raise QuantunaError(f"trial {trial} is not a complete trial of the study (complete: {numbers})")
        chosen, picked_by = matches[0], "--trial"
        said = {"feasible": chosen.feasible, "reason": "" if chosen.feasible else
                f"trial {trial} does not meet the accuracy target", "note": ""}
    if not said["feasible"] and not allow_infeasible:
        raise QuantunaError(f"{said['reason']}; nothing written (export it anyway with --allow-infeasible)")
    if not said["feasible"]:
        logger.warning("trial %d does not meet the accuracy target", chosen.number)
    return chosen, picked_by, said


def export_trial(result: TuneResult, *, trial: int | None = None, rule: str = "weighted",
                 allow_infeasible: bool = False) -> dict[str, Any]:
    """The export document of one trial of a :class:`~quantuna.results.TuneResult`.

    Args:
        result: what :func:`quantuna.tune` (or :func:`quantuna.load_results`) returned.
        trial: a trial number; default: the trial ``rule`` picks.
        rule: a pick rule (``weighted``, ``score``, ``best:<objective>``).
        allow_infeasible: export a trial that misses the accuracy target (the best effort when
            no trial meets it); without it that is an error and nothing is written.

    Raises:
        QuantunaError: no such trial, or it misses the target and ``allow_infeasible`` is False.
    """
    session = result.session
    if session is None:
        raise QuantunaError("export needs the study's session: use quantuna.load_results(spec)")
    chosen, picked_by, said = _chosen(result, trial, rule, allow_infeasible)
    source = session.spec.data.calibration
    calibration = {
        "path": str(source.path) if source.path else None,
        "loader": source.loader,
        "inputs": source.inputs_as_plain() if source.inputs else None,
        "constants": dict(source.constants) if source.constants else None,
        "size": source.size,
        "batch_size": session.ranges.batch_size,
        "sha256": session.calibration.sha256,
    }
    return {
        "quantuna_config": FORMAT_VERSION,
        "config": chosen.config.to_dict(),
        "calibration": {k: v for k, v in calibration.items() if v is not None},
        "provenance": {
            "versions": versions(),
            "source_model": _source_model(session),
            "preparation": session.preparation.provenance() if session.preparation else None,
            "study": session.spec.name,
            "storage": redact_url(session.spec.storage),
            "trial": chosen.number,
            "picked_by": picked_by,
            "pick_note": said["note"] or None,
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "measured": {
            "objectives": chosen.values,
            "relative_to_fp32": chosen.relative,
            "feasible": chosen.feasible,
            "reason": said["reason"] or None,
            "latency": chosen.latency,
            "latency_confirmed": chosen.confirmed,
            "latency_cpu": None if chosen.cpu is None else chosen.cpu.label,
            "constraint": chosen.constraint,
            "model_sha256": chosen.model_sha256,
            "baseline": result.baseline.get("values", {}),
            "accuracy_target": result.baseline.get("accuracy_target"),
        },
    }


def _source_model(session: Any) -> dict[str, str]:
    """The user's file (before preparation) and its sha256."""
    prepared = session.preparation
    if prepared is None:
        return {"path": str(session.model.path), "sha256": session.model.sha256}
    return {"path": str(prepared.source), "sha256": prepared.source_sha256}


def write_export(document: dict[str, Any], out: str | Path) -> Path:
    """Write an export document as YAML (atomically: the file is whole or absent)."""
    return atomic_write(Path(out), yaml.safe_dump(document, sort_keys=False))


def _calibration_data(exported: ExportedConfig, model_info: Any, override: Any,
                      trust_code: bool) -> tuple[Dataset, int]:
    info = exported.calibration or {}
    where = f"{exported.where}: calibration"
    batch_size = int(info.get("batch_size", 32))
    if isinstance(override, Dataset):
        data = override
    else:
        mapping: dict[str, Any] = {"inputs": info.get("inputs"), "constants": info.get("constants"),
                                   "size": info.get("size")}
        if override is not None:
            source = _source(where, path=Path(override), **mapping)
        elif info.get("loader"):
            if not trust_code:
                raise SpecError(
                    f"{where}.loader: {shorten(info['loader'], 80)} is code named in a config file; "
                    "quantuna runs it only with --trust-code (API: trust_code=True), or give "
                    "--calibration FILE.npz"
                )
            source = _source(where, loader=info["loader"], **mapping)
        elif info.get("path"):
            source = _source(where, path=Path(info["path"]), **mapping)
        else:
            raise SpecError(
                "this config needs calibration data: pass calibration=... (CLI: --calibration FILE.npz)"
            )
        data = load_dataset(source, model_info, where=where)
        expected = info.get("sha256")
        if expected and data.sha256 != expected:
            logger.warning("the calibration data differs from the study's; the ranges will differ too")
    size = exported.config.calibration_size or 0
    if size > len(data):
        raise SpecError(f"{exported.where}: config.calibration_size: {size} samples asked, the "
                        f"calibration data has {len(data)}")
    return data, batch_size


def _source(where: str, **fields: Any) -> DataSource:
    try:
        return DataSource(**fields)
    except ValidationError as err:
        raise SpecError(f"{where}: {cut(err.errors()[0]['msg'], 160)}") from None


def _check_against_model(exported: ExportedConfig, info: Any) -> None:
    """The config's op types and nodes exist (in onnxruntime or the model)."""
    config = exported.config
    known = set(quantizable_op_types()) | set(info.op_types)
    unknown = [op for op in config.op_types if op not in known]
    if unknown:
        raise SpecError(f"{exported.where}: config.op_types: {shorten(unknown[0], 60)} is neither an "
                        f"op type onnxruntime quantizes nor one of the model's")
    nodes = set(info.compute_nodes)
    missing = [n for n in config.exclude_nodes if n not in nodes]
    if missing:
        logger.warning("%s: exclude_nodes: %s is not a compute node of this model",
                       exported.where, shorten(missing[0], 60))


def apply(
    config: QuantConfig | ExportedConfig | str | Path,
    model: str | Path,
    *,
    out: str | Path | None = None,
    calibration: Dataset | str | Path | None = None,
    trust_code: bool = False,
) -> Any:
    """Rebuild the quantized model a config describes.

    Args:
        config: a ``QuantConfig``, an ``ExportedConfig`` or the path of an exported YAML file.
        model: the fp32 ONNX model file.
        out: where to write the quantized model (default: a temporary file, removed).
        calibration: calibration data (a ``Dataset`` or an ``.npz`` path); default: the data the
            exported file names.
        trust_code: run a calibration ``loader`` the config names (``pkg.mod:fn``,
            ``file.py:fn``). Off by default: a config file is data, maybe from someone else, and
            never runs code unless you say so.

    Returns:
        The quantized ``onnx.ModelProto``.

    Example:
        >>> m = quantuna.apply("best.yaml", "model.onnx", out="model.int8.onnx")  # doctest: +SKIP
    """
    import onnx

    if out is not None:
        check_output_path(Path(out), where="output")
    if isinstance(config, QuantConfig):
        exported = ExportedConfig(config, None, {})
    elif isinstance(config, ExportedConfig):
        exported = config
    else:
        exported = ExportedConfig.read(config)
    source = inspect_model(Path(model), where="model")
    expected = exported.provenance.get("source_model", {}).get("sha256")
    if expected and expected != source.sha256:
        logger.warning("the model differs from the one the config was tuned on")
    with tempfile.TemporaryDirectory(prefix="quantuna-apply-") as tmp:
        info = _prepared(source.path, exported, Path(tmp))
        _check_against_model(exported, info)
        ranges = None
        if exported.config.approach == "static":
            data, batch_size = _calibration_data(exported, info, calibration, trust_code)
            ranges = Path(tmp) / "ranges.json"
            # the config's own op types: each tensor's range is computed on its own, so these are
            # the ranges the study's wider calibration gave the tensors this config quantizes
            compute_ranges(info.path, exported.config, data, batch_size, ranges,
                           op_types=exported.config.op_types)
        built = quantize(info, exported.config, Path(tmp) / "model.onnx", ranges=ranges)
        if out is not None:
            atomic_write(Path(out), built.read_bytes())
        return onnx.load(str(built))


def _prepared(model: Path, exported: ExportedConfig, tmp: Path) -> Any:
    """The model prepared as the study prepared it (the export's provenance says how)."""
    recorded = exported.provenance.get("preparation")
    if recorded is not None:
        settings = PrepareSettings.from_dict(recorded.get("settings") or {})
    else:  # a bare config: the default preparation, with the opset its format needs
        c = exported.config
        settings = PrepareSettings(needs_opset=13 if c.per_channel and c.quant_format == "QDQ" else 0)
    prepared = prepare_model(model, settings, tmp / "prepared")
    if recorded is not None and recorded.get("sha256") not in (None, prepared.sha256):
        logger.warning("the prepared model differs from the study's (other onnx/onnxruntime versions?)")
    return inspect_model(prepared.path, where="model (prepared)")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file (to compare a rebuilt model with the trial's ``model_sha256``)."""
    return sha256_file(Path(path))
