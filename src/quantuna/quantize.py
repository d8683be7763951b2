"""``quantize()``: a ``QuantConfig`` turned into onnxruntime quantization calls, nothing more.

This module holds the one mapping table from quantuna's option names to onnxruntime's spellings.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from quantuna.config import QuantConfig
from quantuna.errors import TrialError
from quantuna.modelinfo import ModelInfo

logger = logging.getLogger(__name__)

# quantuna's type-pair knob -> (activation type, weight type), onnxruntime QuantType names.
TYPE_PAIRS = {"U8S8": ("QUInt8", "QInt8"), "U8U8": ("QUInt8", "QUInt8"), "S8S8": ("QInt8", "QInt8")}


def nodes_to_exclude(config: QuantConfig, model: ModelInfo) -> list[str]:
    """Node names kept in fp32: the first/last compute node when asked, plus ``exclude_nodes``."""
    names = list(config.exclude_nodes)
    if config.first_node_fp32 and model.first_compute_node:
        names.append(model.first_compute_node)
    if config.last_node_fp32 and model.last_compute_node:
        names.append(model.last_compute_node)
    return sorted(set(names))


def _extra_options(config: QuantConfig) -> dict[str, object]:
    options: dict[str, object] = {"WeightSymmetric": bool(config.weight_symmetric)}
    if config.approach == "static":
        options["ActivationSymmetric"] = bool(config.activation_symmetric)
    return options


def quantize(
    model: ModelInfo, config: QuantConfig, out: Path, *, ranges: Path | None = None
) -> Path:
    """Write the model that ``config`` describes to ``out``.

    Args:
        model: the fp32 model.
        config: the configuration; ``fp32`` copies the model unchanged.
        out: where the quantized model is written.
        ranges: the tensor-range file of ``config``'s calibration setting (static only).

    Raises:
        TrialError: onnxruntime rejected the configuration (the message says why).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    if config.is_fp32:
        shutil.copyfile(model.path, out)
        return out
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    activation, weight = TYPE_PAIRS[config.types or "U8S8"]
    common = {
        "op_types_to_quantize": list(config.op_types),
        "per_channel": bool(config.per_channel),
        "reduce_range": bool(config.reduce_range),
        "weight_type": QuantType[weight],
        "nodes_to_exclude": nodes_to_exclude(config, model),
        "extra_options": _extra_options(config),
    }
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), _quiet_ort_logging():
            if config.approach == "dynamic":
                quantize_dynamic(model.path, out, **common)
            else:
                if ranges is None:
                    raise TrialError("static quantization needs calibrated ranges")
                quantize_static(
                    model.path,
                    out,
                    calibration_data_reader=None,
                    quant_format=QuantFormat[config.quant_format or "QDQ"],
                    activation_type=QuantType[activation],
                    calibrate_method=CalibrationMethod[config.calibrate_method or "MinMax"],
                    calibration_cache_path=ranges,
                    **common,
                )
    except TrialError:
        raise
    except Exception as exc:
        raise TrialError(f"onnxruntime cannot quantize {config.summary()}: {exc}") from exc
    return out


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger; keep it at debug level for us."""
    root = logging.getLogger()
    previous = root.level
    if previous < logging.ERROR:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
