"""``export_trial()`` and ``apply()``: a chosen trial -> a YAML config -> the same quantized model.

The exported file (:mod:`quantuna.export_doc`) carries the config, its calibration data and one
provenance block (study, trial, storage, the source and quantized models' sha256, versions, host
facts), every path relative to the YAML. ``apply`` finds the files it names (relative to the YAML,
or by name and sha256 along a search path: :mod:`quantuna.export_files`), maps the calibration's
input names onto the model's (:mod:`quantuna.export_inputs`), recalibrates and quantizes with the
same code path as the study, so with the same model, data and versions the rebuilt file is
byte-identical.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantuna._util import atomic_write, check_output_path, cut, sha256_file, shorten
from quantuna.config import QuantConfig
from quantuna.data import Dataset, load_dataset
from quantuna.errors import SpecError
from quantuna.export_doc import FORMAT_VERSION, export_trial, versions, write_export
from quantuna.export_files import RecordedFile, locate
from quantuna.export_inputs import map_calibration
from quantuna.export_read import ExportedConfig
from quantuna.model import inspect_model
from quantuna.ort.calibrate import compute_ranges
from quantuna.ort.options import calibrated_op_types, quantizable_op_types
from quantuna.ort.prepare import PrepareSettings, prepare_model
from quantuna.ort.quantize import quantize
from quantuna.spec import DataSource

__all__ = ["FORMAT_VERSION", "ExportedConfig", "apply", "export_trial", "file_sha256", "versions",
           "write_export"]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Finding:
    """How ``apply`` finds what the config names: the search path and the input-name map."""

    search_path: Sequence[str | Path] = ()
    input_map: Mapping[str, str] = field(default_factory=dict)


def _calibration_data(exported: ExportedConfig, model_info: Any, override: Any,
                      trust_code: bool, finding: _Finding) -> tuple[Dataset, int]:
    where = f"{exported.where}: calibration"
    info = exported.calibration or {}
    batch_size = int(info.get("batch_size", 32))
    if isinstance(override, Dataset):
        data = override
    else:
        names = [i.name for i in model_info.inputs]
        info = map_calibration(info, names, finding.input_map, where)
        renamed = info.get("inputs") != (exported.calibration or {}).get("inputs")
        data = load_dataset(_data_source(exported, info, override, trust_code, finding),
                            model_info, where=where)
        expected = info.get("data_sha256")
        if expected and not renamed and data.sha256 != expected:
            logger.warning("the calibration data differs from the study's; the ranges will differ too")
    size = exported.config.calibration_size or 0
    if size > len(data):
        raise SpecError(f"{exported.where}: config.calibration_size: {size} samples asked, the "
                        f"calibration data has {len(data)}")
    return data, batch_size


def _data_source(exported: ExportedConfig, info: dict[str, Any], override: Any, trust_code: bool,
                 finding: _Finding) -> DataSource:
    """Where the calibration data is: ``--calibration``, the loader, or the recorded file."""
    where = f"{exported.where}: calibration"
    mapping: dict[str, Any] = {"inputs": info.get("inputs"), "constants": info.get("constants"),
                               "size": info.get("size")}
    if override is not None:
        return _source(where, path=Path(override), **mapping)
    if info.get("loader"):
        if not trust_code:
            raise SpecError(
                f"{where}.loader: {shorten(info['loader'], 80)} is code named in a config file; "
                "quantuna runs it only with --trust-code (API: trust_code=True), or give "
                "--calibration FILE.npz"
            )
        return _source(where, loader=info["loader"], **mapping)
    if not info.get("path"):
        raise SpecError(
            "this config needs calibration data: pass calibration=... (CLI: --calibration FILE.npz)"
        )
    recorded = RecordedFile(info["path"], info.get("sha256"), where=f"{where}.path")
    path = locate(recorded, exported.base, finding.search_path, hint=" or --calibration FILE.npz")
    if recorded.sha256 and sha256_file(path) != recorded.sha256:
        logger.warning("%s: %s is not the file the study calibrated with (sha256 differs)",
                       where, path)
    return _source(where, path=path, **mapping)


def _source(where: str, **fields: Any) -> DataSource:
    try:
        return DataSource(**fields)
    except ValidationError as err:
        raise SpecError(f"{where}: {cut(err.errors()[0]['msg'], 160)}") from None


def _check_against_model(exported: ExportedConfig, info: Any) -> None:
    """The config's op types and nodes exist (in onnxruntime or the model)."""
    config = exported.config
    known = set(quantizable_op_types()) | set(info.op_types) | set(info.subgraph_op_types)
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
    model: str | Path | None = None,
    *,
    out: str | Path | None = None,
    calibration: Dataset | str | Path | None = None,
    trust_code: bool = False,
    search_path: Sequence[str | Path] = (),
    input_map: Mapping[str, str] | None = None,
) -> Any:
    """Rebuild the quantized model a config describes.

    Args:
        config: a ``QuantConfig``, an ``ExportedConfig`` or the path of an exported YAML file.
        model: the fp32 ONNX model file; default: the source model the exported file names
            (found like the calibration data).
        out: where to write the quantized model (default: a temporary file, removed).
        calibration: calibration data (a ``Dataset`` or an ``.npz`` path); default: the file the
            exported config names, relative to the YAML, or found by name and sha256 in
            ``search_path`` and the current directory.
        trust_code: run a calibration ``loader`` the config names (``pkg.mod:fn``,
            ``file.py:fn``). Off by default: a config file is data, maybe from someone else, and
            never runs code unless you say so.
        search_path: folders to look in for a file the config names that is not where it says.
        input_map: ``{config input name: model input name}`` when the model names its inputs
            otherwise than the study's did (a single input is mapped without it, and logged).

    Returns:
        The quantized ``onnx.ModelProto``.

    Raises:
        SpecError: a file not found (named with its sha256 and the folders searched), input
            names that do not line up, or a config value this model or onnxruntime refuses.

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
    finding = _Finding(tuple(search_path), dict(input_map or {}))
    source = inspect_model(_model_path(exported, model, finding), where="model")
    expected = (exported.provenance.get("source_model") or {}).get("sha256")
    if expected and expected != source.sha256:
        logger.warning("the model differs from the one the config was tuned on")
    with tempfile.TemporaryDirectory(prefix="quantuna-apply-") as tmp:
        info = _prepared(source.path, exported, Path(tmp))
        _check_against_model(exported, info)
        ranges = None
        if exported.config.approach == "static":
            data, batch_size = _calibration_data(exported, info, calibration, trust_code, finding)
            ranges = Path(tmp) / "ranges.json"
            # the config's own op types and the activations folded into them: each tensor's range
            # is computed on its own, so these are the ranges the study's wider calibration gave
            # the tensors this config quantizes
            compute_ranges(info.path, exported.config, data, batch_size, ranges,
                           op_types=calibrated_op_types(exported.config.op_types))
        built = quantize(info, exported.config, Path(tmp) / "model.onnx", ranges=ranges)
        if out is not None:
            atomic_write(Path(out), built.read_bytes())
        return onnx.load(str(built))


def _model_path(exported: ExportedConfig, model: str | Path | None, finding: _Finding) -> Path:
    """The model given, or the source model the config names (found like any recorded file)."""
    if model is not None:
        return Path(model)
    recorded = exported.provenance.get("source_model") or {}
    if not recorded.get("path"):
        raise SpecError(f"{exported.where}: names no source model; give the fp32 model "
                        "(CLI: --model FILE.onnx)")
    return locate(RecordedFile(str(recorded["path"]), recorded.get("sha256"),
                               where=f"{exported.where}: provenance.source_model"),
                  exported.base, finding.search_path, hint=" or --model FILE.onnx")


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
