"""``quantize()``: a ``QuantConfig`` turned into onnxruntime quantization calls, nothing more.

The option spellings come from :mod:`quantuna.ort.options`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from quantuna.config import QuantConfig
from quantuna.errors import TrialError
from quantuna.model import ModelInfo
from quantuna.ort._capture import captured
from quantuna.ort.compact import compact, graphs
from quantuna.ort.fuse import fused_model
from quantuna.ort.options import (
    folded_activations,
    folds_activations,
    quantizer_kwargs,
    static_kwargs,
)
from quantuna.ort.smooth import SCALES_KEY, apply_smoothing
from quantuna.ort.weight_only import quantize_weight_only


def nodes_to_exclude(config: QuantConfig, model: ModelInfo) -> list[str]:
    """Node names kept in fp32: the first/last compute node when asked, plus ``exclude_nodes``."""
    names = list(config.exclude_nodes)
    if config.first_node_fp32 and model.first_compute_node:
        names.append(model.first_compute_node)
    if config.last_node_fp32 and model.last_compute_node:
        names.append(model.last_compute_node)
    return sorted(set(names))


def quantize(
    model: ModelInfo, config: QuantConfig, out: Path, *, ranges: Path | None = None
) -> Path:
    """Write the model that ``config`` describes to ``out``, compacted (:mod:`~quantuna.ort.compact`).

    Args:
        model: the fp32 model.
        config: the configuration; ``fp32`` copies the model unchanged.
        out: where the quantized model is written.
        ranges: the tensor-range file of ``config``'s calibration setting (static only;
            ``weight_only`` needs none).

    Raises:
        TrialError: onnxruntime rejected the configuration (the message says why).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")  # renamed when whole
    if config.is_fp32:
        shutil.copyfile(model.path, staged)
        os.replace(staged, out)
        return out
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    if config.graph_optimization:  # quantize the fused model (cached, keyed by the model's sha256)
        try:
            model = fused_model(model, config.graph_optimization)
        except Exception as exc:
            raise TrialError(f"onnxruntime's {config.graph_optimization} fusions failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    excluded = nodes_to_exclude(config, model)
    common = ({} if config.approach == "weight_only"
              else quantizer_kwargs(config, excluded, subgraphs=model.has_subgraphs))
    if config.approach == "static" and ranges is None:
        raise TrialError("static quantization needs calibrated ranges")
    try:
        with captured("quantize"), tempfile.TemporaryDirectory(prefix="quantuna-q-") as tmp:
            # onnxruntime writes (and deletes) ``<model>-inferred.onnx`` beside a model given as a
            # path: two trials quantizing one prepared model at once (threads, workers) would race
            # on that file. Given the loaded model, it infers shapes in a private temp folder.
            if config.approach == "weight_only":
                quantize_weight_only(model.path, staged, config, excluded)
            elif config.approach == "dynamic":
                quantize_dynamic(onnx.load(str(model.path)), staged, **common)
            else:
                assert ranges is not None
                source = model.path
                if config.smooth_quant:
                    source = _smoothed(model.path, ranges, Path(tmp), common["nodes_to_exclude"])
                proto = onnx.load(str(source))
                if folds_activations(config):
                    unsafe = unfoldable_activations(proto.graph, ranges, config)
                    if "" in unsafe:  # an unnamed one cannot be kept in fp32: fold none
                        common["op_types_to_quantize"] = list(config.op_types)
                    common["nodes_to_exclude"] += unsafe
                quantize_static(
                    proto, staged, calibration_data_reader=None,
                    calibration_cache_path=ranges, **static_kwargs(config), **common,
                )
            onnx.save(compact(onnx.load(str(staged))), str(staged))
        os.replace(staged, out)
    except Exception as exc:
        staged.unlink(missing_ok=True)
        raise TrialError(f"onnxruntime cannot quantize {config.summary()}: {exc}") from exc
    return out


def unfoldable_activations(graph: onnx.GraphProto, ranges: Path, config: QuantConfig) -> list[str]:
    """The :func:`~quantuna.ort.options.folded_activations` nodes (outside ``config.op_types``)
    onnxruntime could not fold safely, kept in fp32 as before folding: those whose input another
    node also reads (QOperator would then drop the activation, QDQ add a Q/DQ pair), whose input or
    output is a graph input or output, or whose input or output has no calibrated range."""
    from onnxruntime.quantization import load_tensors_data

    calibrated = set(load_tensors_data(ranges))
    readers: dict[str, int] = {}
    for g in graphs(graph):
        for node in g.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
    boundary = {i.name for i in graph.input} | {o.name for o in graph.output}
    folded = folded_activations() - set(config.op_types)
    return [
        node.name for node in graph.node
        if node.op_type in folded
        and (readers.get(node.input[0], 0) != 1 or {node.input[0], node.output[0]} & boundary
             or not {node.input[0], node.output[0]} <= calibrated)
    ]


def _smoothed(source: Path, ranges: Path, tmp: Path, excluded: list[str]) -> Path:
    """``source`` smoothed by the SmoothQuant scales of its range file, written under ``tmp``;
    the inserted ``Mul`` nodes are added to ``excluded`` (they stay fp32)."""
    import onnx

    scales = json.loads(ranges.read_text(encoding="utf-8")).get(SCALES_KEY)
    if scales is None:
        raise TrialError(f"{ranges.name} holds no SmoothQuant scales (calibrated without it)")
    smoothed, muls = apply_smoothing(onnx.load(str(source)), scales)
    excluded.extend(muls)
    path = tmp / "smoothed.onnx"
    onnx.save(smoothed, str(path))
    return path
