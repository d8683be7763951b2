"""SmoothQuant (Xiao et al., 2023) as a graph transform before static quantization.

onnxruntime's ``quantize_static(extra_options={"SmoothQuant": True})`` delegates to Intel Neural
Compressor (``neural_compressor.adaptor.ox_utils.smooth_quant``), which is not a dependency of
quantuna (its 2.x releases pin ``onnx<1.17``) and which needs a live calibration reader (it cannot
work from a range cache). This is the same transform, native and deterministic.

For every activation tensor ``X`` that feeds ``MatMul`` or ``Gemm`` nodes with a constant 2-d
float weight (used by that node alone), from the calibration data:
``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)`` per input channel ``j`` (``max|W_j|`` over
every such weight fed by ``X``, so one ``s`` serves them all; ``s_j = 1`` where either maximum is
0). The weights' input rows are multiplied by ``s`` and the activation divided by it, so the fp32
function is unchanged while the activation's outlier channels move into the weights, which are
quantized per channel or tolerate the range better:

- folded into the producing ``LayerNormalization``'s scale and bias (new initializers; a shared
  scale stays untouched) when every consumer of ``X`` is one of those nodes and ``X`` is no graph
  output (pre-LN transformers);
- else an fp32 ``Mul`` by ``1/s`` is inserted before those nodes (``<X>_smooth_quant``: post-LN
  BERT, where a LayerNorm's output also feeds the residual ``Add``); these ``Mul`` nodes are kept
  in fp32 by the quantizer.

The scales are computed once per calibration setting and stored in its range-cache entry
(:data:`SCALES_KEY`), so re-applying an exported config rebuilds the same model byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SCALES_KEY = "quantuna_smooth_quant"  # the range-cache JSON's extra key (onnxruntime ignores it)
MUL_SUFFIX = "_smooth_quant"
_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class Consumer:
    """A MatMul/Gemm node fed by a smoothed activation: its index, weight and input-channel axis."""

    index: int
    weight: str
    axis: int


def _uses(graph: Any) -> dict[str, int]:
    """How often each name is read, in the graph and in every subgraph."""
    counts: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:
                for name, count in _uses(sub).items():
                    counts[name] = counts.get(name, 0) + count
    for output in graph.output:
        counts[output.name] = counts.get(output.name, 0) + 1
    return counts


def _weight_axis(node: Any, weights: Mapping[str, Any]) -> int | None:
    """The input-channel axis of ``node``'s constant weight, or ``None`` if it has none."""
    if len(node.input) < 2 or node.input[1] not in weights or node.input[0] in weights:
        return None
    weight = weights[node.input[1]]
    if weight.data_type != _FLOAT or len(weight.dims) != 2:
        return None
    if node.op_type == "MatMul":
        return 0
    flags = {a.name: a.i for a in node.attribute}
    if node.op_type == "Gemm" and not flags.get("transA", 0):
        return 1 if flags.get("transB", 0) else 0
    return None


def smooth_targets(model: Any) -> dict[str, list[Consumer]]:
    """The activations to smooth, each with the nodes it feeds that take part, in graph order."""
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    uses = _uses(graph)
    targets: dict[str, list[Consumer]] = {}
    for index, node in enumerate(graph.node):
        axis = _weight_axis(node, weights) if node.op_type in ("MatMul", "Gemm") else None
        if axis is not None and uses.get(node.input[1]) == 1:
            targets.setdefault(node.input[0], []).append(Consumer(index, node.input[1], axis))
    return targets


def _channel_max(weight: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(weight).max(axis=1 - axis)


def smoothing_scales(model: Any, activation_max: Mapping[str, np.ndarray],
                     alpha: float) -> dict[str, list[float]]:
    """``s`` per smoothed activation (float32 values, as lists), from its per-channel maxima."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    scales: dict[str, list[float]] = {}
    for tensor, consumers in smooth_targets(model).items():
        x_max = activation_max.get(tensor)
        w_max = np.max([_channel_max(numpy_helper.to_array(weights[c.weight]), c.axis)
                        for c in consumers], axis=0).astype(np.float64)
        if x_max is None or x_max.shape != w_max.shape:
            continue
        x_max = x_max.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = np.power(x_max, alpha) / np.power(w_max, 1.0 - alpha)
        s = np.where((x_max > 0) & (w_max > 0) & np.isfinite(s), s, 1.0)
        scales[tensor] = np.clip(s, 1e-5, 1e5).astype(np.float32).tolist()
    return scales


def activation_maxima(model_path: Any, tensors: Iterable[str],
                      batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each of ``tensors`` over ``batches`` (finite values)."""
    import onnx
    import onnxruntime as ort

    from quantuna.ort.options import session_options

    model = onnx.load(str(model_path))
    tensors = list(tensors)
    fed = [t for t in tensors if t in {i.name for i in model.graph.input}]  # read off the batch
    outputs = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in outputs and name not in fed:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, _FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), session_options(0),
                                   providers=["CPUExecutionProvider"])
    wanted = [t for t in tensors if t not in fed]
    maxima: dict[str, np.ndarray] = {}
    for batch in batches:
        run = session.run(wanted, dict(batch)) if wanted else []  # [] would run every output
        values = [*run, *(batch[name] for name in fed)]
        for name, value in zip([*wanted, *fed], values, strict=True):
            flat = np.abs(np.asarray(value, np.float64)).reshape(-1, np.shape(value)[-1])
            flat = np.where(np.isfinite(flat), flat, 0.0).max(axis=0)
            maxima[name] = flat if name not in maxima else np.maximum(maxima[name], flat)
    return maxima


def _foldable(graph: Any, tensor: str, consumers: list[Consumer], uses: Mapping[str, int],
              weights: Mapping[str, Any]) -> Any:
    """The LayerNormalization that produces ``tensor`` if ``1/s`` can fold into it, else ``None``."""
    producer = next((n for n in graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "LayerNormalization" or producer.output[0] != tensor:
        return None
    axis = next((a.i for a in producer.attribute if a.name == "axis"), -1)
    constant = len(producer.input) == 3 and all(producer.input[i] in weights for i in (1, 2))
    return producer if axis == -1 and constant and uses.get(tensor) == len(consumers) else None


def apply_smoothing(model: Any, scales: Mapping[str, list[float]]) -> tuple[Any, list[str]]:
    """``model`` (changed in place) smoothed by ``scales``; and the names of the inserted Muls."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    uses = _uses(graph)
    targets = smooth_targets(model)
    inserted: list[tuple[int, Any]] = []
    for tensor in sorted(set(scales) & set(targets)):
        s = np.asarray(scales[tensor], np.float32)
        consumers = targets[tensor]
        for c in consumers:
            w = numpy_helper.to_array(weights[c.weight])
            w = w * (s[:, None] if c.axis == 0 else s[None, :])
            weights[c.weight].CopyFrom(numpy_helper.from_array(w.astype(np.float32), c.weight))
        norm = _foldable(graph, tensor, consumers, uses, weights)
        if norm is not None:
            for slot, kind in ((1, "scale"), (2, "bias")):
                value = numpy_helper.to_array(weights[norm.input[slot]]) / s
                name = f"{norm.name or tensor}.smooth_quant_{kind}"
                graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
                norm.input[slot] = name
            continue
        smoothed, inverse = tensor + MUL_SUFFIX, tensor + MUL_SUFFIX + "_inverse"
        graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inverse))
        for c in consumers:
            graph.node[c.index].input[0] = smoothed
        mul = helper.make_node("Mul", [tensor, inverse], [smoothed], name=smoothed)
        inserted.append((min(c.index for c in consumers), mul))
    for index, mul in sorted(inserted, key=lambda pair: -pair[0]):  # from the back: indices hold
        graph.node.insert(index, mul)
    return model, [mul.name for _, mul in inserted]


def smooth_model(model_path: Any, alpha: float,
                 batches: Iterable[Mapping[str, np.ndarray]]) -> tuple[Any, dict[str, list[float]]]:
    """The smoothed model of ``model_path`` and its scales, from calibration ``batches``."""
    import onnx

    model = onnx.load(str(model_path))
    maxima = activation_maxima(model_path, smooth_targets(model), batches)
    scales = smoothing_scales(model, maxima, alpha)
    smoothed, _ = apply_smoothing(model, scales)
    return smoothed, scales
