"""What quantuna needs to know about an ONNX model: inputs, compute nodes, op types, sha256."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from quantuna._util import cut, file_lock, import_reference, sha256_file
from quantuna.errors import SpecError
from quantuna.phases import phase

logger = logging.getLogger(__name__)

# Operator types that carry the arithmetic; the others follow their neighbours' precision.
COMPUTE_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "LSTM", "GRU")
# Operator types onnxruntime quantizes that a spec may give an int8/fp32 knob by default.
DEFAULT_KNOB_OP_TYPES = COMPUTE_OP_TYPES + ("Add", "Mul", "Concat", "AveragePool", "MaxPool")
_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.BOOL: np.bool_,
}


@dataclass(frozen=True)
class InputInfo:
    """One graph input: name, numpy dtype and shape (``None`` for a symbolic dimension)."""

    name: str
    dtype: type
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A model file, checked, with what the search space and the data checks need."""

    path: Path
    sha256: str
    inputs: tuple[InputInfo, ...]
    outputs: tuple[str, ...]
    op_types: tuple[str, ...]
    compute_nodes: tuple[str, ...]
    opset: int = 0
    subgraph_op_types: tuple[str, ...] = ()  # op types found only inside control-flow bodies
    has_subgraphs: bool = False

    @property
    def first_compute_node(self) -> str | None:
        """The first compute node in graph order."""
        return self.compute_nodes[0] if self.compute_nodes else None

    @property
    def last_compute_node(self) -> str | None:
        """The last compute node in graph order."""
        return self.compute_nodes[-1] if self.compute_nodes else None


def inspect_model(path: Path, *, where: str = "model") -> ModelInfo:
    """Load and check an ONNX model file.

    Raises:
        SpecError: the file is missing, is not ONNX, or fails ``onnx.checker``.
    """
    if not path.is_file():
        raise SpecError(f"{where}: model file {path} not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"{where}: {path} is not a valid ONNX model ({reason[:200]})") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        inputs.append(InputInfo(value.name, _ONNX_TO_NUMPY.get(tensor.elem_type, np.float32), dims))
    # unnamed nodes are not refused: model preparation (quantuna.ort.prepare) names them
    compute = tuple(n.name for n in graph.node if n.op_type in COMPUTE_OP_TYPES and n.name)
    top = {n.op_type for n in graph.node}
    inner = _subgraph_op_types(graph)
    return ModelInfo(
        path=path,
        sha256=sha256_file(path),
        inputs=tuple(inputs),
        outputs=tuple(o.name for o in graph.output),
        op_types=tuple(sorted(top)),
        compute_nodes=compute,
        opset=default_opset(model),
        subgraph_op_types=tuple(sorted(inner - top)),
        has_subgraphs=any(n.op_type in ("If", "Loop", "Scan") for n in graph.node),
    )


def default_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _subgraph_op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of the nodes inside control-flow bodies (If, Loop, Scan), at any depth."""
    found: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                found |= {n.op_type for n in sub.node} | _subgraph_op_types(sub)
    return found


def build_model(path: Path, build: str, *, where: str) -> Path:
    """Build a model on first use: ``build(tmp)`` writes it, then it is renamed to ``path``
    (returned).

    Once, under a file lock (kept in the per-user lock folder: a failing build leaves nothing
    beside the model); a half-built file never appears at ``path``.
    """
    if path.is_file():
        return path
    builder = import_reference(build, where=where)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        if path.is_file():
            return path
        staged = path.with_name(f".{path.stem}.{os.getpid()}.building{path.suffix}")
        try:
            with phase(f"building {path.name} with {build} (once)"):
                builder(staged)
            if staged.is_file():
                os.replace(staged, path)
        except Exception as exc:
            raise SpecError(f"{where}: {build} failed: {type(exc).__name__}: {cut(str(exc))}") from None
        finally:
            staged.unlink(missing_ok=True)
    if not path.is_file():
        raise SpecError(f"{where}: {build} did not write the file it was given (for {path})")
    return path
