"""``export_trial()`` and ``apply()``: a chosen trial -> a YAML config -> the same quantized model.

The exported file carries the config and its provenance (versions, sha256 of the source model and
of the calibration data, study and trial, the measured objectives and the baseline). ``apply``
recalibrates from the named calibration data and quantizes with the same code path as the study,
so with the same model, data and versions the rebuilt file is byte-identical.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from quantuna._util import sha256_file
from quantuna.config import QuantConfig
from quantuna.data import Dataset, load_dataset
from quantuna.errors import QuantunaError, SpecError
from quantuna.model import inspect_model
from quantuna.ort.calibrate import compute_ranges
from quantuna.ort.prepare import PrepareSettings, prepare_model
from quantuna.ort.quantize import quantize
from quantuna.spec import DataSource, redact_url

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1


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

    @classmethod
    def read(cls, path: str | Path) -> ExportedConfig:
        """Read a file written by :func:`export_trial` (or a bare ``QuantConfig`` mapping)."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: a quantuna config is a YAML mapping")
        if "config" not in raw:  # a bare QuantConfig mapping
            return cls(QuantConfig.from_dict(raw, where=str(path)), None, {})
        unknown = sorted(set(raw) - {"quantuna_config", "config", "calibration", "provenance", "measured"})
        if unknown:
            raise SpecError(f"{path}: unknown key {unknown[0]!r}")
        config = QuantConfig.from_dict(raw["config"], where=f"{path}: config")
        return cls(config, raw.get("calibration"), dict(raw.get("provenance") or {}))


def export_trial(result: Any, *, trial: int | None = None, rule: str = "weighted") -> dict[str, Any]:
    """The export document of one trial of a :class:`~quantuna.results.TuneResult`.

    Args:
        result: what :func:`quantuna.tune` (or :func:`quantuna.load_results`) returned.
        trial: a trial number; default: the trial ``rule`` picks.
        rule: a pick rule (``weighted``, ``score``, ``best:<objective>``).
    """
    session = result.session
    if trial is None:
        pick = result.pick(rule)
        chosen, picked_by, feasible_pick = pick.trial, f"rule {pick.rule}", pick.feasible
    else:
        matches = [t for t in result.trials if t.number == trial]
        if not matches:
            numbers = ", ".join(str(t.number) for t in result.trials[:20])
            raise QuantunaError(f"trial {trial} is not a complete trial of the study (complete: {numbers})")
        chosen, picked_by, feasible_pick = matches[0], "--trial", matches[0].feasible
    if not feasible_pick:
        logger.warning("trial %d does not meet the accuracy target", chosen.number)
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
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "measured": {
            "objectives": chosen.values,
            "relative_to_fp32": chosen.relative,
            "feasible": chosen.feasible,
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
    """Write an export document as YAML."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return out


def _calibration_data(exported: ExportedConfig, model_info: Any, override: Any) -> tuple[Dataset, int]:
    info = exported.calibration or {}
    batch_size = int(info.get("batch_size", 32))
    if isinstance(override, Dataset):
        return override, batch_size
    mapping: dict[str, Any] = {"inputs": info.get("inputs"), "constants": info.get("constants"),
                               "size": info.get("size")}
    if override is not None:
        source = DataSource(path=Path(override), **mapping)
    elif info.get("path") or info.get("loader"):
        path = Path(info["path"]) if info.get("path") else None
        source = DataSource(path=path, loader=info.get("loader"), **mapping)
    else:
        raise SpecError(
            "this config needs calibration data: pass calibration=... (CLI: --calibration FILE.npz)"
        )
    data = load_dataset(source, model_info, where="calibration")
    expected = info.get("sha256")
    if expected and data.sha256 != expected:
        logger.warning("the calibration data differs from the study's; the ranges will differ too")
    return data, batch_size


def apply(
    config: QuantConfig | ExportedConfig | str | Path,
    model: str | Path,
    *,
    out: str | Path | None = None,
    calibration: Dataset | str | Path | None = None,
) -> Any:
    """Rebuild the quantized model a config describes.

    Args:
        config: a ``QuantConfig``, an ``ExportedConfig`` or the path of an exported YAML file.
        model: the fp32 ONNX model file.
        out: where to write the quantized model (default: a temporary file, removed).
        calibration: calibration data (a ``Dataset`` or an ``.npz`` path); default: the data the
            exported file names.

    Returns:
        The quantized ``onnx.ModelProto``.

    Example:
        >>> m = quantuna.apply("best.yaml", "model.onnx", out="model.int8.onnx")  # doctest: +SKIP
    """
    import onnx

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
        ranges = None
        if exported.config.approach == "static":
            data, batch_size = _calibration_data(exported, info, calibration)
            ranges = Path(tmp) / "ranges.json"
            # the config's own op types: each tensor's range is computed on its own, so these are
            # the ranges the study's wider calibration gave the tensors this config quantizes
            compute_ranges(info.path, exported.config, data, batch_size, ranges,
                           op_types=exported.config.op_types)
        built = quantize(info, exported.config, Path(tmp) / "model.onnx", ranges=ranges)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, out)
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
