"""``prepare_model()``: a model file as shipped, made ready to quantize, once per setting.

Real exported files are not what onnxruntime's quantizers expect: weights held in ``Constant``
nodes (a "quantized" copy grows), nodes without names (they cannot be kept in fp32), an opset too
old for per-channel QDQ (``DequantizeLinear`` has no ``axis`` before 13), shapes the quantizer
cannot see. Preparation, in this order:

1. ``Constant`` nodes holding a tensor become initializers (every graph, subgraphs included);
2. the opset: ``keep``; ``N``: converted with ``onnx.version_converter`` (a failure is a spec
   error); ``auto``: converted to the opset the space needs (per-channel QDQ: 13) when the model
   is older; a failed conversion is a note, and the settings that need it leave the space;
3. onnxruntime's ``quant_pre_process`` (``on``, ``off``, ``auto``): ``auto`` runs it and, when a
   step fails, retries without symbolic shape inference, then without the optimisation too, and
   goes on without it when nothing works; what was applied is recorded;
4. unnamed nodes get deterministic names (``<op type>_<index>``, subgraphs prefixed by their
   graph's name): a model is never refused for unnamed nodes.

The result is cached on disk, keyed by the source file's sha256, the settings and the versions
of onnx, onnxruntime and sympy (without sympy, symbolic shape inference cannot run); it is
written to a temporary file and moved into place (``os.replace``) with a sidecar holding its
sha256, under a file lock, so local workers prepare a model once and a torn or edited entry is
rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from quantuna._util import file_lock, sha256_file
from quantuna.errors import SpecError
from quantuna.model import default_opset
from quantuna.ort._capture import captured, scratch_cwd

logger = logging.getLogger(__name__)
PREPARE_VERSION = 1
# (skip_symbolic_shape, skip_optimization) tried in turn by ``preprocess: auto``
_ATTEMPTS = ((False, False), (True, False), (True, True))


@dataclass(frozen=True)
class PrepareSettings:
    """How a model is prepared (the spec's ``prepare`` section plus what the space needs).

    Attributes:
        preprocess: ``auto``, ``on`` or ``off`` (onnxruntime's ``quant_pre_process``).
        opset: ``auto``, ``keep`` or an opset number.
        needs_opset: the opset the space needs (``auto`` upgrades to it; 0: none).
    """

    preprocess: str = "auto"
    opset: str | int = "auto"
    needs_opset: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain types (the cache key and the export's provenance)."""
        return {"preprocess": self.preprocess, "opset": self.opset, "needs_opset": self.needs_opset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareSettings:
        """The inverse of :meth:`to_dict`."""
        return cls(str(data.get("preprocess", "auto")), data.get("opset", "auto"),
                   int(data.get("needs_opset", 0)))


@dataclass(frozen=True)
class Prepared:
    """A prepared model: where it is, what was done, and what could not be."""

    path: Path
    sha256: str
    source: Path
    source_sha256: str
    settings: PrepareSettings
    applied: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def provenance(self) -> dict[str, Any]:
        """What the export records (``apply`` redoes the same preparation)."""
        return {"settings": self.settings.to_dict(), "applied": list(self.applied),
                "sha256": self.sha256}


def _versions() -> dict[str, str]:
    out = {}
    for package in ("onnx", "onnxruntime", "sympy"):  # sympy: symbolic shape inference runs
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def prepare_key(source_sha256: str, settings: PrepareSettings) -> str:
    """The cache key of a preparation."""
    payload = {"v": PREPARE_VERSION, "source": source_sha256, "settings": settings.to_dict(),
               "versions": _versions()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def prepare_model(source: Path, settings: PrepareSettings, cache_dir: Path, *,
                  where: str = "model") -> Prepared:
    """The prepared copy of ``source`` (from the cache, or made now under a file lock).

    Raises:
        SpecError: the file cannot be loaded, or an explicit setting (``preprocess: on``,
            ``opset: N``) cannot be applied.
    """
    source_sha = sha256_file(source)
    out = cache_dir / f"{prepare_key(source_sha, settings)}.onnx"
    cached = _read_cached(out, source, source_sha, settings)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out.with_suffix(".lock")):
        cached = _read_cached(out, source, source_sha, settings)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="prepare-", dir=cache_dir) as tmp:
            model, applied, notes = _prepare(source, settings, Path(tmp), where)
            staged = Path(tmp) / "model.onnx"
            onnx.save(model, str(staged))
            sha = sha256_file(staged)
            meta = {"sha256": sha, "applied": applied, "notes": notes}
            staged_meta = Path(tmp) / "model.json"
            staged_meta.write_text(json.dumps(meta), encoding="utf-8")
            os.replace(staged, out)
            os.replace(staged_meta, out.with_suffix(".json"))
    logger.info("prepared %s: %s", source.name, "; ".join(applied) or "nothing to do")
    return Prepared(out, sha, source, source_sha, settings, tuple(applied), tuple(notes))


def cached_prepared(source: Path, settings: PrepareSettings, cache_dir: Path) -> Prepared | None:
    """The prepared copy of ``source`` already in ``cache_dir`` (read only), or None."""
    source_sha = sha256_file(source)
    return _read_cached(cache_dir / f"{prepare_key(source_sha, settings)}.onnx", source, source_sha,
                        settings)


def commit_prepared(prepared: Prepared, cache_dir: Path) -> Prepared:
    """``prepared`` (made in a scratch folder) moved into ``cache_dir``, atomically, under the
    entry's lock; an entry another process committed meanwhile is used instead."""
    out = cache_dir / prepared.path.name
    if prepared.path == out:
        return prepared
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out.with_suffix(".lock")):
        done = _read_cached(out, prepared.source, prepared.source_sha256, prepared.settings)
        if done is not None:
            return done
        for suffix in (".onnx", ".json"):
            staged = out.with_name(f".{out.stem}.{os.getpid()}{suffix}")
            shutil.copyfile(prepared.path.with_suffix(suffix), staged)
            os.replace(staged, out.with_suffix(suffix))
    return replace(prepared, path=out)


def _read_cached(out: Path, source: Path, source_sha: str,
                 settings: PrepareSettings) -> Prepared | None:
    meta_path = out.with_suffix(".json")
    if not out.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["sha256"] != sha256_file(out):
            return None  # torn or edited: rebuilt
        return Prepared(out, meta["sha256"], source, source_sha, settings,
                        tuple(meta["applied"]), tuple(meta["notes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare(source: Path, settings: PrepareSettings, tmp: Path,
             where: str) -> tuple[onnx.ModelProto, list[str], list[str]]:
    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise SpecError(f"{where}: {source} cannot be loaded as ONNX ({_reason(exc)})") from None
    applied: list[str] = []
    notes: list[str] = []
    moved = constants_to_initializers(model.graph)
    if moved:
        applied.append(f"{moved} Constant weights made initializers")
    model = _convert_opset(model, settings, applied, notes, where)
    if settings.preprocess != "off":
        model = _preprocess(model, settings, tmp, applied, notes, where)
    named = name_nodes(model.graph)
    if named:
        applied.append(f"{named} unnamed nodes named")
    return model, applied, notes


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _convert_opset(model: onnx.ModelProto, settings: PrepareSettings, applied: list[str],
                   notes: list[str], where: str) -> onnx.ModelProto:
    current = default_opset(model)
    if settings.opset == "keep":
        return model
    target = settings.opset if isinstance(settings.opset, int) else settings.needs_opset
    if not target or target == current or (settings.opset == "auto" and target < current):
        return model
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        _loads(converted)
    except Exception as exc:
        if isinstance(settings.opset, int):
            raise SpecError(f"{where}: prepare.opset: {current} -> {target} failed "
                            f"({_reason(exc)}); use opset: keep") from None
        notes.append(f"opset {current} -> {target} failed ({_reason(exc)}); per-channel QDQ "
                     f"(needs opset {target}) leaves the space")
        return model
    applied.append(f"opset {current} -> {target}")
    return converted


def _preprocess(model: onnx.ModelProto, settings: PrepareSettings, tmp: Path,
                applied: list[str], notes: list[str], where: str) -> onnx.ModelProto:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    given = tmp / "in.onnx"
    onnx.save(model, str(given))
    attempts = _ATTEMPTS if settings.preprocess == "auto" else _ATTEMPTS[:1]
    failures: list[str] = []
    for skip_symbolic, skip_optimization in attempts:
        out = tmp / f"pre-{len(failures)}.onnx"
        try:
            with captured("pre-process"), scratch_cwd("quantuna-pre-"):  # its stray files
                quant_pre_process(str(given.resolve()), str(out.resolve()),
                                  skip_optimization=skip_optimization,
                                  skip_symbolic_shape=skip_symbolic)
            result = onnx.load(str(out))
            onnx.checker.check_model(result)
            _loads(result)
        except Exception as exc:
            failures.append(_reason(exc))
            continue
        skipped = [name for name, on in (("symbolic shape inference", skip_symbolic),
                                         ("optimisation", skip_optimization)) if on]
        reason = failures[0][:100] + ("..." if len(failures[0]) > 100 else "") if failures else ""
        applied.append("quant_pre_process" + (f" without {' and '.join(skipped)} ({reason})"
                                              if skipped else ""))
        return result
    if settings.preprocess == "on":
        raise SpecError(f"{where}: prepare.preprocess: quant_pre_process failed ({failures[0]}); "
                        "use preprocess: auto or off")
    notes.append(f"quant_pre_process failed in every form ({failures[-1]}); the model is "
                 "quantized without it")
    return model


def _loads(model: onnx.ModelProto) -> None:
    """Raise unless onnxruntime can load ``model`` (a step's result must stay runnable)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found.append(attr.g)
            found.extend(attr.graphs)
    return found


def constants_to_initializers(graph: onnx.GraphProto) -> int:
    """Move ``Constant`` nodes holding a tensor into the graph's initializers; how many moved.

    A Constant that is a graph output stays a node (an initializer cannot be an output).
    """
    outputs = {o.name for o in graph.output}
    kept = []
    moved = 0
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and node.output[0] not in outputs:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved + sum(constants_to_initializers(sub) for sub in _subgraphs(graph))


def name_nodes(graph: onnx.GraphProto, prefix: str = "") -> int:
    """Give every unnamed node ``<prefix><op type>_<index>`` (unique); how many were named."""
    taken = {n.name for n in graph.node if n.name}
    named = 0
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{prefix}{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named + sum(name_nodes(sub, f"{prefix}{sub.name}/") for sub in _subgraphs(graph))
