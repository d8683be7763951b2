"""An exported config read back: typed, bounded, both formats (1: absolute paths; 2: portable).

A config may come from someone else: every section goes through a schema, and a bad value is one
:class:`SpecError` naming the file, the key and the value. Format 1 files (absolute paths, the
calibration ``sha256`` of the arrays, ``measured.model_sha256``) are read into format 2's names,
so ``apply`` has one shape to work with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from quantuna._util import cut, read_yaml, shorten
from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.export_doc import FORMAT_VERSION, READ_VERSIONS
from quantuna.sections import InputSource

SHA256 = r"^[0-9a-f]{64}$"
TOP_KEYS = {"quantuna_config", "config", "calibration", "provenance", "measured"}


@dataclass(frozen=True)
class ExportedConfig:
    """A config file read back: the config, how to calibrate, and where it came from.

    Attributes:
        calibration: the calibration section in format 2's names (``sha256``: the file's,
            ``data_sha256``: the arrays').
        base: the folder relative paths are read against (the YAML's own; the current
            directory for a config made in code).
    """

    config: QuantConfig
    calibration: dict[str, Any] | None
    provenance: dict[str, Any]
    where: str = "config"
    base: Path = field(default_factory=Path.cwd)

    @classmethod
    def read(cls, path: str | Path) -> ExportedConfig:
        """Read a file written by :func:`~quantuna.export.export_trial` (either format) or a
        bare ``QuantConfig`` mapping."""
        path = Path(path)
        raw = read_yaml(path, what="a quantuna config")
        where, base = str(path), path.resolve().parent
        if "config" not in raw:  # a bare QuantConfig mapping
            return cls(QuantConfig.from_dict(raw, where=where), None, {}, where, base)
        unknown = sorted(str(k) for k in set(raw) - TOP_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown key {shorten(unknown[0], 60)}")
        version = raw.get("quantuna_config", FORMAT_VERSION)
        if version not in READ_VERSIONS or isinstance(version, bool):
            raise SpecError(f"{where}: quantuna_config: {shorten(version, 40)} is not a format this "
                            f"quantuna reads ({', '.join(str(v) for v in READ_VERSIONS)})")
        config = QuantConfig.from_dict(raw["config"], where=f"{where}: config")
        calibration = _checked_section(_CalibrationSchema, raw.get("calibration"), f"{where}: calibration")
        provenance = raw.get("provenance") or {}
        if not isinstance(provenance, dict):
            raise SpecError(f"{where}: provenance: a mapping, got {type(provenance).__name__}")
        provenance = dict(provenance)
        for key in ("source_model", "quantized_model"):
            _checked_section(_FileSchema, provenance.get(key), f"{where}: provenance.{key}")
        measured = _checked_section(_MeasuredSchema, raw.get("measured"), f"{where}: measured") or {}
        if version == 1:
            calibration, provenance = _from_format_1(calibration, provenance, measured)
        return cls(config, calibration, provenance, where, base)


def _from_format_1(calibration: dict[str, Any] | None, provenance: dict[str, Any],
                   measured: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Format 1's names as format 2's: its calibration ``sha256`` was the arrays' hash."""
    if calibration is not None and "sha256" in calibration:
        calibration = {**calibration, "data_sha256": calibration["sha256"]}
        del calibration["sha256"]
    if measured.get("model_sha256") and "quantized_model" not in provenance:
        provenance["quantized_model"] = {"sha256": measured["model_sha256"]}
    return calibration, provenance


class _CalibrationSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    sha256: str | None = Field(default=None, pattern=SHA256)
    loader: str | None = None
    inputs: dict[str, str | InputSource] | None = None
    constants: dict[str, str | int | float] | None = None
    size: StrictInt | None = Field(default=None, gt=0)
    batch_size: StrictInt = Field(default=32, gt=0)
    data_sha256: str | None = Field(default=None, pattern=SHA256)


class _FileSchema(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    path: str | None = None
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
