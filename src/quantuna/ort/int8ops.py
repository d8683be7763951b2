"""``count_int8_ops()``: how much integer computation a quantized graph holds (onnx only).

A quantizer can write a file with nothing quantized: an op-type set the approach cannot quantize
(``dynamic [Gemm]``), an exclusion list covering every node, data that calibrates nothing. Such a
file *is* the fp32 model, slower by a few casts at most. This count tells them apart:

- operators that compute in integers: every ``QLinear*`` op, ``QGemm``, ``QAttention``,
  ``ConvInteger``, ``MatMulInteger``, ``DynamicQuantizeMatMul``, ``DynamicQuantizeLSTM``,
  ``MatMulNBits``, ``QEmbedLayerNormalization``, and ``DynamicQuantizeLinear`` (dynamic
  quantization's activation step);
- QDQ groups: a float node fed by a ``DequantizeLinear`` of an integer weight initializer, or a
  node whose float inputs all come from ``DequantizeLinear`` and whose outputs all go to
  ``QuantizeLinear`` (onnxruntime runs both in integers).

Subgraphs of ``If``/``Loop``/``Scan`` are counted too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from quantuna.ort.compact import graphs

INTEGER_OP_TYPES = frozenset({
    "QGemm", "QAttention", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM", "MatMulNBits", "QEmbedLayerNormalization", "DynamicQuantizeLinear",
    "MatMulIntegerToFloat", "GatherBlockQuantized",  # weight-only int4/int8 (MatMulNBits above)
})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _count_graph(graph: onnx.GraphProto, counts: Counter[str]) -> None:
    weights = {i.name for i in graph.initializer if i.data_type != onnx.TensorProto.FLOAT}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type.startswith("QLinear") or node.op_type in INTEGER_OP_TYPES:
            counts[node.op_type] += 1
            continue
        if node.op_type in _QDQ:
            continue
        sources = [producer.get(name) for name in node.input if name]
        dq_inputs = [s for s in sources if s is not None and s.op_type == "DequantizeLinear"]
        if any(s.input[0] in weights for s in dq_inputs):
            counts[f"QDQ {node.op_type}"] += 1
            continue
        float_inputs = [s for s in sources if s is not None]
        outputs_quantized = all(
            consumers.get(out) and all(c.op_type == "QuantizeLinear" for c in consumers[out])
            for out in node.output
        )
        if float_inputs and len(dq_inputs) == len(float_inputs) and outputs_quantized:
            counts[f"QDQ {node.op_type}"] += 1


def count_int8_ops(model: Path | onnx.ModelProto) -> dict[str, int]:
    """The integer computations of a model, by op type (QDQ groups as ``"QDQ <op>"``).

    An empty result means the model computes in float only: it is the fp32 model.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    counts: Counter[str] = Counter()
    for graph in graphs(proto.graph):
        _count_graph(graph, counts)
    return dict(sorted(counts.items()))
