"""``compact()``: what onnxruntime's quantizers leave in a file that the graph never needs.

onnxruntime writes one scale and one zero point per quantized tensor, most of them equal (every
uint8 activation of a Relu network has zero point 0, every symmetric int8 weight zero point 0),
imports nine opset domains whatever the graph uses, and keeps the fp32 model's ``value_info``
for tensors it renamed. On the digits example that is ~0.6 kB of a 160 kB file, the difference
between quantuna's file and Neural Compressor's (studies/benchmarks/RESULTS.md, figure 8).

Each step is lossless: the graph computes the same values from the same tensors, only fewer
copies of them are stored. The same input gives the same output bytes (no set order, no clock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import onnx


def compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with identical initializers stored once, unused initializers, ``value_info``
    and opset imports dropped (changed in place and returned)."""
    graph = model.graph
    _merge_identical_initializers(graph)
    _drop_unused_initializers(graph)
    _drop_stale_value_info(graph)
    _drop_unused_opsets(model)
    return model


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every control-flow body inside it, depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    yield from graphs(body)


def _defined_in_bodies(graph: onnx.GraphProto) -> set[str]:
    """The names a control-flow body defines itself (they shadow the outer graph's)."""
    names: set[str] = set()
    for body in list(graphs(graph))[1:]:
        names.update(i.name for i in body.input)
        names.update(i.name for i in body.initializer)
        names.update(o for n in body.node for o in n.output)
    return names


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` or of its bodies reads, and the graph outputs."""
    used = {o.name for o in graph.output}
    for g in graphs(graph):
        used.update(name for node in g.node for name in node.input if name)
        used.update(o.name for o in g.output)
    return used


def _merge_identical_initializers(graph: onnx.GraphProto) -> None:
    """Initializers equal in type, shape and bytes stored once, under the first one's name.

    Left alone: initializers also listed as graph inputs (a caller may feed them other values),
    graph outputs, names a control-flow body redefines, and data stored outside the file."""
    protected = {i.name for i in graph.input} | {o.name for o in graph.output} | _defined_in_bodies(graph)
    first: dict[bytes, str] = {}
    renamed: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.name in protected or tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = ""
        copy.doc_string = ""
        key = copy.SerializeToString(deterministic=True)
        if key in first:
            renamed[tensor.name] = first[key]
        else:
            first[key] = tensor.name
    if not renamed:
        return
    for g in graphs(graph):
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
    _keep(graph.initializer, lambda t: t.name not in renamed)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers no node reads (neither graph inputs nor outputs)."""
    keep = _used_names(graph) | {i.name for i in graph.input}
    _keep(graph.initializer, lambda t: t.name in keep)


def _drop_stale_value_info(graph: onnx.GraphProto) -> None:
    """``value_info`` of tensors no node produces any more (renamed by the quantizer)."""
    produced = {o for node in graph.node for o in node.output} | {t.name for t in graph.initializer}
    _keep(graph.value_info, lambda v: v.name in produced)


def _keep(entries: Any, wanted: Callable[[Any], bool]) -> None:
    """Keep only the ``wanted`` entries of a repeated protobuf field, in their order."""
    if all(wanted(e) for e in entries):
        return
    kept = [e for e in entries if wanted(e)]
    del entries[:]
    entries.extend(kept)


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Opset imports of domains no node and no local function uses (the default domain stays)."""
    used = {""} | {n.domain for g in graphs(model.graph) for n in g.node}
    for function in model.functions:
        used.add(function.domain)
        used.update(n.domain for n in function.node)
    used.add("ai.onnx")  # the default domain's other spelling
    if all(o.domain in used for o in model.opset_import):
        return
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
