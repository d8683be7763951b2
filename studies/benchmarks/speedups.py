"""Figure 0: what int8 buys on this CPU for the ResNet-18-shaped model (raw onnxruntime).

Each variant is quantized once with ``onnxruntime.quantization.quantize_static`` (MinMax, the 32
seeded calibration images, Conv and Gemm), then every model is timed at batch 1 with one
intra-op thread. The models are timed round-robin (``--rounds`` rounds of ~0.4 s each) so that a
slow spell of the shared machine hits them all; a model's latency is the median over all its
runs, a speed-up is fp32 median / int8 median, measured in the same run.

    python studies/benchmarks/speedups.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VARIANTS = {  # name: (format, activation, weight, per_channel, reduce_range)
    "U8S8 QDQ": ("QDQ", "QUInt8", "QInt8", False, False),
    "U8S8 QDQ per-channel": ("QDQ", "QUInt8", "QInt8", True, False),
    "U8S8 QDQ reduce_range": ("QDQ", "QUInt8", "QInt8", False, True),
    "U8S8 QOperator": ("QOperator", "QUInt8", "QInt8", False, False),
    "U8S8 QOperator reduce_range": ("QOperator", "QUInt8", "QInt8", False, True),
    "U8U8 QOperator": ("QOperator", "QUInt8", "QUInt8", False, False),
    "S8S8 QDQ": ("QDQ", "QInt8", "QInt8", False, False),
    "S8S8 QOperator": ("QOperator", "QInt8", "QInt8", False, False),
}


def _quantize(model: Path, out: Path, variant: tuple, batches: list) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fmt, act, wt, pc, rr = variant

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.it, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(model), str(out), Reader(), quant_format=QuantFormat[fmt],
            activation_type=QuantType[act], weight_type=QuantType[wt], per_channel=pc,
            reduce_range=rr, op_types_to_quantize=["Conv", "Gemm"],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    C.quiet()
    sys.path.insert(0, str(C.STUDIES))
    import resnet18_like as R

    model = R.ensure_model()
    batches = list(R.calibration_batches())
    x = {R.INPUT: batches[0][R.INPUT][:1]}
    with C.scratch("speedups-") as tmp:
        paths = {"fp32": model}
        for name, variant in VARIANTS.items():
            paths[name] = tmp / (name.replace(" ", "_") + ".onnx")
            _quantize(model, paths[name], variant, batches)
        sessions = {name: C.one_thread_session(p) for name, p in paths.items()}
        times = C.round_robin(sessions, x, args.rounds, block_seconds=0.4, min_runs=2)
        runs = {name: [t for r in per for t in r] for name, per in times.items()}
        sizes = {name: p.stat().st_size for name, p in paths.items()}
    base = float(np.median(runs["fp32"]))
    rows = []
    C.say(f"fp32 latency (batch 1, 1 thread): {base * 1e3:.1f} ms, {sizes['fp32'] / 2**20:.1f} MiB")
    for name in VARIANTS:
        lat = float(np.median(runs[name]))
        speedup, smaller = base / lat, sizes["fp32"] / sizes[name]
        C.say(f"speed-up {name} vs fp32: {speedup:.2f}x ({lat * 1e3:.1f} ms); {smaller:.2f}x smaller")
        rows.append([name, f"{lat * 1e3:.1f}", f"**{speedup:.2f}x**", f"{smaller:.2f}x", len(runs[name])])
    body = (
        "ResNet-18-shaped model (`studies/resnet18_like.yaml`), batch 1, one intra-op thread; "
        f"static MinMax quantization of Conv and Gemm with onnxruntime. fp32: {base * 1e3:.1f} ms, "
        f"{sizes['fp32'] / 2**20:.1f} MiB. Speed-up = fp32 median latency / int8 median latency, "
        f"timed round-robin in one run ({args.rounds} rounds). The issue expects 1.6-2.0x for U8S8 "
        "and no speed-up for S8S8.\n\n"
        + C.table(["variant", "median ms", "speed-up vs fp32", "smaller", "runs"], rows)
    )
    C.update_results("speedups", "0. What int8 buys here (ResNet-18-shaped, raw onnxruntime)", body)


if __name__ == "__main__":
    main()
