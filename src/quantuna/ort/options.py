"""The one table of onnxruntime option spellings.

quantuna's typed config says *what* to do; this module says how onnxruntime spells it (its
``QuantType`` names, the CamelCase ``extra_options`` keys, the calibrator's options, the session
options). No other module writes an onnxruntime option name.
"""

from __future__ import annotations

from typing import Any

from quantuna.config import QuantConfig

# quantuna's type-pair knob -> (activation type, weight type), onnxruntime QuantType names.
TYPE_PAIRS = {"U8S8": ("QUInt8", "QInt8"), "U8U8": ("QUInt8", "QUInt8"), "S8S8": ("QInt8", "QInt8")}


def quantizer_extra_options(config: QuantConfig, *, subgraphs: bool = False) -> dict[str, object]:
    """``extra_options`` of ``quantize_static`` / ``quantize_dynamic`` for ``config``.

    ``subgraphs``: the model has control-flow bodies; dynamic quantization enters them
    (onnxruntime's static quantizers cannot: QOperator fails, QDQ leaves them in float).
    """
    options: dict[str, object] = {"WeightSymmetric": bool(config.weight_symmetric)}
    if config.approach == "static":
        options["ActivationSymmetric"] = bool(config.activation_symmetric)
    if config.approach == "dynamic" and subgraphs:
        options["EnableSubgraph"] = True
    if config.graph_optimization:  # shape inference stops at the fused com.microsoft ops
        import onnx

        options["DefaultTensorType"] = onnx.TensorProto.FLOAT
    return options


def quantizable_by_mode() -> dict[str, frozenset[str]]:
    """The op types each way of quantizing handles: ``dynamic`` and ``QOperator`` by their
    registries; QDQ wraps any op type in Q/DQ pairs, so it is left out (no limit)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QLinearOpsRegistry

    return {"dynamic": frozenset(IntegerOpsRegistry), "QOperator": frozenset(QLinearOpsRegistry)}


def follower_op_types() -> dict[str, frozenset[str]]:
    """The op types each static format quantizes only after a quantized neighbour (onnxruntime's
    direct-8-bit ops such as Reshape and MaxPool, and the removable activations): a set of them
    alone quantizes nothing."""
    from onnxruntime.quantization.operators.activation import QDQRemovableActivation
    from onnxruntime.quantization.operators.direct_q8 import Direct8BitOp, QDQDirect8BitOp
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    def followers(registry: dict[str, Any], kinds: tuple[type, ...]) -> frozenset[str]:
        return frozenset(op for op, kind in registry.items() if issubclass(kind, kinds))

    return {"QDQ": followers(QDQRegistry, (QDQDirect8BitOp, QDQRemovableActivation)),
            "QOperator": followers(QLinearOpsRegistry, (Direct8BitOp,))}


def folded_activations() -> frozenset[str]:
    """The activations onnxruntime folds into the quantized node before them (its QDQ registry's
    removable activations: Relu, Clip): that node's output is quantized with the activation's
    range and the activation dropped, in both static formats, as Neural Compressor does.
    Otherwise the node's output is quantized, dequantized for an fp32 Relu and quantized again."""
    from onnxruntime.quantization.operators.activation import QDQRemovableActivation
    from onnxruntime.quantization.registry import QDQRegistry

    return frozenset(op for op, kind in QDQRegistry.items() if issubclass(kind, QDQRemovableActivation))


def folds_activations(config: QuantConfig) -> bool:
    """Whether ``config``'s quantizer folds :func:`folded_activations` (static, asymmetric
    activations: onnxruntime keeps them, with Q/DQ pairs around, when activations are symmetric)."""
    return config.approach == "static" and not config.activation_symmetric


def calibrated_op_types(op_types: list[str] | tuple[str, ...]) -> list[str]:
    """The op types whose tensors are calibrated for configs quantizing ``op_types``: those and
    the :func:`folded_activations` (a fold needs the activation's output range)."""
    return sorted(set(op_types) | folded_activations())


def quantizer_kwargs(config: QuantConfig, nodes_to_exclude: list[str], *,
                     subgraphs: bool = False) -> dict[str, Any]:
    """The keyword arguments both onnxruntime quantizers take, for ``config``; a static
    config's op types include the :func:`folded_activations` (see :func:`folds_activations`)."""
    from onnxruntime.quantization import QuantType

    _, weight = TYPE_PAIRS[config.types or "U8S8"]
    op_types = list(config.op_types)
    if folds_activations(config):
        op_types += sorted(folded_activations() - set(op_types))
    return {
        "op_types_to_quantize": op_types,
        "per_channel": bool(config.per_channel),
        "reduce_range": bool(config.reduce_range),
        "weight_type": QuantType[weight],
        "nodes_to_exclude": nodes_to_exclude,
        "extra_options": quantizer_extra_options(config, subgraphs=subgraphs),
    }


def static_kwargs(config: QuantConfig) -> dict[str, Any]:
    """The keyword arguments only ``quantize_static`` takes (format, activation type, method)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    activation, _ = TYPE_PAIRS[config.types or "U8S8"]
    return {
        "quant_format": QuantFormat[config.quant_format or "QDQ"],
        "activation_type": QuantType[activation],
        "calibrate_method": CalibrationMethod[ort_method(config.calibrate_method)],
    }


def ort_method(method: str | None) -> str:
    """onnxruntime's ``CalibrationMethod`` name: ``MovingAverage`` is its MinMax with
    ``moving_average``."""
    return "MinMax" if method in (None, "MovingAverage") else method


def calibrator_options(config: QuantConfig) -> tuple[Any, dict[str, Any]]:
    """The calibration method and the ``extra_options`` of ``create_calibrator``."""
    from onnxruntime.quantization import CalibrationMethod

    method = CalibrationMethod[ort_method(config.calibrate_method)]
    options: dict[str, Any] = {"symmetric": bool(config.activation_symmetric)}
    if config.calibrate_method == "MovingAverage":
        options["moving_average"] = True  # onnxruntime's averaging_constant: 0.01
    if method == CalibrationMethod.Percentile:
        options["percentile"] = config.percentile
    return method, options


def session_options(threads: int) -> Any:
    """CPU session options at full graph optimisation (fixed threads when ``threads``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def quantizable_op_types(*, static_only: bool = False) -> list[str]:
    """Every op type onnxruntime can quantize: static (QOperator or QDQ) and, unless
    ``static_only``, dynamic (LSTM, Attention... are integer ops only)."""
    from onnxruntime.quantization.registry import (
        IntegerOpsRegistry,
        QDQRegistry,
        QLinearOpsRegistry,
    )

    found = set(QLinearOpsRegistry) | set(QDQRegistry)
    return sorted(found if static_only else found | set(IntegerOpsRegistry))


def weight_only_kwargs(config: QuantConfig, nodes_to_exclude: list[str]) -> dict[str, Any]:
    """The keyword arguments of ``MatMulNBitsQuantizer`` for a weight-only ``config``.

    ``RTN`` is the quantizer's ``DEFAULT`` algorithm (block-wise round to nearest, MatMulNBits,
    QOperator); ``algo_config`` carries the same settings, as onnxruntime reads them from there.
    """
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig

    assert config.approach == "weight_only" and config.algorithm == "RTN"
    settings: dict[str, Any] = {
        "bits": config.bits,
        "block_size": config.block_size,
        "is_symmetric": bool(config.weight_symmetric),
        "accuracy_level": config.accuracy_level,
        "quant_format": QuantFormat.QOperator,
        "op_types_to_quantize": tuple(config.op_types),
    }
    return {**settings, "nodes_to_exclude": nodes_to_exclude,
            "algo_config": DefaultWeightOnlyQuantConfig(**settings)}
