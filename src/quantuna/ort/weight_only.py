"""Weight-only quantization: a ``weight_only`` ``QuantConfig`` -> onnxruntime's MatMulNBits quantizer.

Calibration-free: the MatMul (and, at 4 bits, Gather) weights are rounded block by block to 4 or
8 bits, activations stay fp32 (``MatMulNBits`` / ``GatherBlockQuantized`` nodes). The option
spellings come from :mod:`quantuna.ort.options`; what onnxruntime logs goes through
:func:`quantuna.ort._capture.captured`.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from quantuna.config import QuantConfig
from quantuna.errors import TrialError
from quantuna.ort._capture import captured
from quantuna.ort.options import weight_only_kwargs

_MODULE = "onnxruntime.quantization.matmul_nbits_quantizer"


def load_quantizer() -> ModuleType:
    """onnxruntime's ``matmul_nbits_quantizer``, imported without the side effect of its import.

    The module calls ``logging.basicConfig(level=INFO)`` when imported: the root logger's handlers
    and level are put back as they were, so its INFO lines never reach the user's terminal.

    Raises:
        TrialError: a package the quantizer needs is missing (the message names the pip command).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return importlib.import_module(_MODULE)
    except ImportError as exc:
        raise TrialError(
            f"weight-only quantization needs {exc.name or 'a missing package'} "
            f"(onnxruntime's MatMulNBits quantizer imports it): pip install onnx-ir ml-dtypes"
        ) from exc
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def quantize_weight_only(source: Path, out: Path, config: QuantConfig,
                         nodes_to_exclude: list[str]) -> None:
    """Write ``source`` with its weights quantized as ``config`` says to ``out``."""
    import onnx

    module = load_quantizer()
    with captured("weight-only quantize"):
        quantizer = module.MatMulNBitsQuantizer(
            onnx.load(str(source)), **weight_only_kwargs(config, nodes_to_exclude)
        )
        quantizer.process()
    onnx.save(quantizer.model.model, str(out))


# Nodes that compute with low-bit (int4/int8) weights after weight-only quantization: any int8-op
# count must include them, or a weight-only model reads as "the fp32 model".
LOW_BIT_OP_TYPES = ("MatMulNBits", "GatherBlockQuantized")
_LOW_BIT_TYPES = (2, 3, 21, 22)  # onnx TensorProto UINT8, INT8, UINT4, INT4


def low_bit_nodes(model: Any) -> list[str]:
    """Names of the nodes of an ``onnx.ModelProto`` that compute with low-bit weights:
    ``MatMulNBits``, ``GatherBlockQuantized``, and ``DequantizeLinear`` of an int4/int8 weight
    (the QDQ form of weight-only quantization)."""
    weights = {i.name for i in model.graph.initializer if i.data_type in _LOW_BIT_TYPES}
    return [n.name for n in model.graph.node
            if n.op_type in LOW_BIT_OP_TYPES
            or (n.op_type == "DequantizeLinear" and n.input and n.input[0] in weights)]
