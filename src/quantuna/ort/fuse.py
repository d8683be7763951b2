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
from pathlib import Path

from quantuna._util import atomic_write, file_lock, sha256_file
from quantuna.model import ModelInfo, inspect_model
from quantuna.ort._capture import captured

logger = logging.getLogger(__name__)
FUSE_VERSION = 1
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

    with captured(f"graph optimization {kind}"):
        optimized = optimize_model(str(source), **OPTIMIZER_SETTINGS[kind])
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
