"""Figure 7: transformers on this CPU: fp32, plain quantize_dynamic, quantuna's pick, int4 weight-only.

On the BERT-like example (``studies/bert_like.yaml``; its model must be built, which needs torch
and transformers once, see ``studies/bert_like.py``), side by side in one run:

- fp32;
- plain ``onnxruntime.quantization.quantize_dynamic`` on MatMul (the default optimum-style recipe);
- quantuna's best feasible pick after a ``--trials`` study of the spec's space (export's rule);
- weight-only int4 (MatMulNBits, RTN, symmetric) at its best block size of 32, 64, 128 (highest
  agreement, then lowest latency);
- static QDQ int8 on MatMul without and with SmoothQuant (``smooth_quant_alpha`` 0.5).

Per row: latency at batch 1, one thread, timed round-robin (``--rounds`` rounds, ~0.3 s per model
per round, the order rotating) so a slow spell of the shared machine hits every model: the median
of the per-round ratios to fp32 and to plain quantize_dynamic, each with a 95 % interval;
file size; the bytes of the MatMul weights; top-1 agreement and mean cosine of the logits with
fp32 on the 128 seeded evaluation sentences.

    python studies/benchmarks/transformers.py [--trials 24] [--rounds 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SPEC = C.STUDIES / "bert_like.yaml"
DYNAMIC = "quantize_dynamic (MatMul)"
MATMUL_OPS = {"MatMul", "MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "Attention",
              "QAttention", "DynamicQuantizeLinear", "DequantizeLinear"}


def matmul_weight_bytes(path: Path) -> int:
    """Bytes of the initializers read by the MatMul-like nodes (weights, scales, zero points)."""
    import onnx

    model = onnx.load(str(path))
    sizes = {i.name: len(i.raw_data) or onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer}
    names = {t for n in model.graph.node if n.op_type in MATMUL_OPS for t in n.input[1:]}
    # QDQ: the int8 weight is the first input of its DequantizeLinear (activations are no initializers)
    names |= {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return sum(sizes[n] for n in names if n in sizes)


def _logits(path: Path, batches: list) -> np.ndarray:
    session = C.one_thread_session(path)
    return np.concatenate([session.run(None, x)[0] for x, _ in batches])


def _quality(logits: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    cos = np.sum(logits * ref, 1) / np.maximum(np.linalg.norm(logits, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return agreement, float(cos.mean())


def _time(paths: dict[str, Path], x: dict, rounds: int) -> dict[str, np.ndarray]:
    """Per round, each model's median over a block of ~0.3 s of runs; the order rotates."""
    sessions = {name: C.one_thread_session(p) for name, p in paths.items()}
    times = C.round_robin(sessions, x, rounds, block_seconds=0.3, min_runs=3)
    return {name: np.array([float(np.median(r)) for r in per]) for name, per in times.items()}


def _ratio(model: np.ndarray, reference: np.ndarray) -> str:
    """The median of the per-round ratios with its 95 % interval (a seeded bootstrap)."""
    ratios = model / reference
    index = np.random.default_rng(0).integers(0, len(ratios), (2000, len(ratios)))
    low, high = np.percentile(np.median(ratios[index], axis=1), [2.5, 97.5])
    return f"{np.median(ratios):.3f} [{low:.3f}, {high:.3f}]"


def _static(info: Any, tmp: Path, alpha: float | None) -> tuple[str, Path]:
    """Static QDQ U8S8 MinMax per-tensor on MatMul, with SmoothQuant at ``alpha`` or without."""
    import bert_like as B

    from quantuna.config import QuantConfig
    from quantuna.data import Dataset
    from quantuna.ort.calibrate import compute_ranges
    from quantuna.ort.quantize import quantize

    config = QuantConfig(approach="static", quant_format="QDQ", types="U8S8", per_channel=False,
                         reduce_range=False, activation_symmetric=False, weight_symmetric=True,
                         calibrate_method="MinMax", calibration_size=32, op_types=("MatMul",),
                         smooth_quant=alpha is not None, smooth_quant_alpha=alpha)
    batches = B.calibration()
    data = Dataset({k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, None, "bert-like")
    ranges = tmp / f"ranges-{alpha}.json"
    compute_ranges(info.path, config, data, B.BATCH, ranges, op_types=config.op_types)
    return config.summary(), quantize(info, config, tmp / f"static-{alpha}.onnx", ranges=ranges)


def _quantuna_pick(tmp: Path, trials: int) -> Any:
    import quantuna
    from quantuna.spec import load_spec

    spec = load_spec(SPEC, storage=f"sqlite:///{tmp / 'study.db'}")
    from dataclasses import replace

    spec = replace(spec, workdir=tmp / "work")
    result = quantuna.tune(spec, n_trials=trials)
    return result.best().config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    C.quiet()
    sys.path.insert(0, str(C.STUDIES))
    import bert_like as B
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from quantuna.config import QuantConfig
    from quantuna.model import inspect_model
    from quantuna.ort.quantize import quantize

    model = B.ensure_model()
    info = inspect_model(model)
    batches = B.evaluation()
    x = {k: v[:1] for k, v in batches[0][0].items()}
    with C.scratch("transformers-") as tmp:
        paths = {"fp32": model}
        paths[DYNAMIC] = tmp / "dynamic.onnx"
        quantize_dynamic(model, paths[DYNAMIC], op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
        pick = _quantuna_pick(tmp, args.trials)
        paths[f"quantuna pick: {pick.summary()}"] = quantize(info, pick, tmp / "pick.onnx")
        ref = _logits(model, batches)
        best: tuple[float, int, Path] | None = None
        for block in (32, 64, 128):
            config = QuantConfig(approach="weight_only", op_types=("MatMul",), weight_symmetric=True,
                                 bits=4, block_size=block, accuracy_level=4, algorithm="RTN")
            path = quantize(info, config, tmp / f"int4-b{block}.onnx")
            agreement, _ = _quality(_logits(path, batches), ref)
            C.say(f"int4 block {block}: agreement {agreement:.3f}")
            if best is None or agreement > best[0]:
                best = (agreement, block, path)
        assert best is not None
        paths[f"weight-only int4 RTN b{best[1]} acc4"] = best[2]
        for alpha in (None, 0.5):
            name, path = _static(info, tmp, alpha)
            paths[name] = path
        runs = _time(paths, x, args.rounds)
        rows = []
        base_w = matmul_weight_bytes(model)
        for name, path in paths.items():
            lat = float(np.median(runs[name]))
            agreement, cos = _quality(_logits(path, batches), ref)
            weights = matmul_weight_bytes(path)
            size = path.stat().st_size
            to_fp32, to_dynamic = _ratio(runs[name], runs["fp32"]), _ratio(runs[name], runs[DYNAMIC])
            C.say(f"{name}: {lat * 1e3:.2f} ms ({to_fp32} x fp32, {to_dynamic} x quantize_dynamic), "
                  f"{size / 2**20:.1f} MiB, MatMul weights {base_w / max(weights, 1):.1f}x smaller, "
                  f"agreement {agreement:.3f}, cosine {cos:.4f}")
            rows.append([name, f"{lat * 1e3:.2f}", f"**{to_fp32}**", to_dynamic, f"{size / 2**20:.1f}",
                         f"{base_w / max(weights, 1):.1f}x", f"{agreement:.3f}", f"{cos:.4f}"])
    body = (
        "BERT-like classifier (`studies/bert_like.yaml`: 4 layers, hidden 256, seeded weights), "
        f"batch 1 (sequence {x['input_ids'].shape[1]}), one intra-op thread, {args.rounds} "
        "round-robin rounds (the order rotates; each model's median over a ~0.3 s block per round); "
        "latency ratios = median of the per-round ratios to fp32 and to plain quantize_dynamic, "
        "[95 % bootstrap interval]; agreement and cosine against fp32's logits on 128 seeded "
        f"sentences. quantuna's pick: export's weighted rule after {args.trials} trials of the "
        "spec's space. Static rows: QDQ U8S8 MinMax per-tensor on MatMul, calibrated on the spec's "
        "32 sentences, without and with SmoothQuant (alpha 0.5). Targets (issue 12): a feasible "
        "pick at least as fast as plain quantize_dynamic with better agreement and >= 1.5x faster "
        "than fp32 (ratio <= 0.67); int4 weight-only >= 5x smaller in its MatMul weights.\n\n"
        + C.table(["model", "median ms", "latency / fp32", "latency / quantize_dynamic", "MiB",
                   "MatMul weights smaller", "agreement", "cosine"], rows)
    )
    C.update_results("transformers", "7. Transformers: dynamic, quantuna's pick, int4 weight-only", body)


if __name__ == "__main__":
    main()
