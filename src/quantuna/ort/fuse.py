"""``graph_optimization``: onnxruntime's transformer fusions applied before quantization, cached.

``bert`` runs ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` with
onnxruntime's own session optimisations off (``opt_level=0``: only the Python fusions, so the file
does not depend on this machine's CPU): ``Attention``, ``EmbedLayerNormalization``,
``SkipLayerNormalization``, ``BiasGelu`` and friends replace their subgraphs, so the search can
quantize them (``Attention`` -> ``QAttention`` in dynamic quantization) or keep them fp32 as op
types. Nodes the fusions leave unnamed get a stable name (quantuna needs node names).

The fused model is computed once per (model sha256, kind, settings, onnxruntime version), written
atomically with a sha256 beside it under ``$XDG_CACHE_HOME/quantuna/fused/`` (default
``~/.cache/quantuna/fused/``), under a file lock; an entry whose checksum does not hold is
computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from quantuna._util import atomic_write, file_lock, sha256_file
from quantuna.model import ModelInfo, inspect_model
from quantuna.ort._capture import captured, scratch_cwd

logger = logging.getLogger(__name__)
FUSE_VERSION = 2
# num_heads and hidden_size (0: onnxruntime detects) are read off the model (attention_shape)
OPTIMIZER_SETTINGS = {"bert": {"model_type": "bert", "num_heads": 0, "hidden_size": 0, "opt_level": 0}}


def cache_dir() -> Path:
    """Where fused models are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "quantuna" / "fused"


def fused_key(model_sha256: str, kind: str) -> str:
    """The cache key of ``kind``'s fusion of a model."""
    import onnxruntime

    payload = json.dumps({"v": FUSE_VERSION, "model": model_sha256, "kind": kind,
                          "settings": OPTIMIZER_SETTINGS[kind], "ort": onnxruntime.__version__},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _constant_values(graph: Any) -> dict[str, list[int]]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i).ravel().tolist() for i in graph.initializer
              if i.data_type == 7 and len(i.dims) <= 1}  # int64 vectors and scalars
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if tensor.data_type == 7 and len(tensor.dims) <= 1:
                values[node.output[0]] = numpy_helper.to_array(tensor).ravel().tolist()
    return values


def attention_shape(model: Any) -> tuple[int, int]:
    """(num_heads, hidden_size) of a BERT-like graph, or (0, 0) for onnxruntime to detect.

    onnxruntime's detection fails on current exporters (the head split is a Reshape to a shape
    built by Concat): the hidden size is the most common LayerNormalization width, the head size
    the constant last entry of the 4-d Reshape shapes that split the heads.
    """
    graph = model.graph
    sizes = {i.name: list(i.dims) for i in graph.initializer}
    widths = Counter(sizes[n.input[1]][0] for n in graph.node
                     if n.op_type == "LayerNormalization" and len(sizes.get(n.input[1], [])) == 1)
    if not widths:
        return 0, 0
    hidden = widths.most_common(1)[0][0]
    values = _constant_values(graph)
    made = {o: n for n in graph.node for o in n.output}
    heads: Counter[int] = Counter()
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = values.get(node.input[1])
        concat = made.get(node.input[1])
        if shape is None and concat is not None and concat.op_type == "Concat":
            parts = [values.get(i, [0]) for i in concat.input]
            shape = [v for part in parts for v in part] if all(len(p) == 1 for p in parts) else None
        if shape and len(shape) == 4 and shape[3] > 0 and hidden % shape[3] == 0 and shape[3] < hidden:
            heads[hidden // shape[3]] += 1
    return (heads.most_common(1)[0][0], hidden) if heads else (0, 0)


def _sound(path: Path) -> bool:
    checksum = path.with_name(path.name + ".sha256")
    try:
        return path.is_file() and sha256_file(path) == checksum.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False


def fuse(source: Path, out: Path, kind: str) -> None:
    """Write ``kind``'s fusion of ``source`` to ``out`` (atomically, its sha256 beside it)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    settings = dict(OPTIMIZER_SETTINGS[kind])
    if kind == "bert":
        settings["num_heads"], settings["hidden_size"] = attention_shape(
            onnx.load(str(source), load_external_data=False))
    with captured(f"graph optimization {kind}"), scratch_cwd("quantuna-fuse-"):  # its stray files
        optimized = optimize_model(str(Path(source).resolve()), **settings)
    model = optimized.model
    declared = {o.domain for o in model.opset_import}
    for domain in sorted({n.domain for n in model.graph.node} - declared - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))  # com.microsoft fused ops
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if not node.name:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            node.name = f"{node.op_type}_fused_{counts[node.op_type]}"
    payload = model.SerializeToString()
    atomic_write(out.with_name(out.name + ".sha256"), hashlib.sha256(payload).hexdigest() + "\n")
    atomic_write(out, payload)


def fused_model(model: ModelInfo, kind: str, directory: Path | None = None) -> ModelInfo:
    """``model`` after ``kind``'s fusions, computed on first use and cached on disk."""
    directory = directory or cache_dir()
    path = directory / f"{model.path.stem}-{kind}-{fused_key(model.sha256, kind)}.onnx"
    if not _sound(path):
        directory.mkdir(parents=True, exist_ok=True)
        with file_lock(path):
            if not _sound(path):
                logger.info("fusing %s for %s (onnxruntime's transformer optimizer)", model.path.name, kind)
                fuse(model.path, path, kind)
    return inspect_model(path, where=f"{kind} fusion of {model.path}")
