"""Each built-in objective on the digits model, fp32 and one int8 config, beside an independent
measurement taken by separate code (not quantuna's objectives).

    python studies/checks/objectives_truth.py

Prints one line per objective and model: quantuna's value, the independent value, their ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from quantuna.config import QuantConfig
from quantuna.ort.quantize import quantize
from quantuna.spec import load_spec
from quantuna.study.baseline import measure_model
from quantuna.study.session import prepare

HERE = Path(__file__).resolve().parents[1]
RSS = r"""
import sys, numpy as np, onnxruntime as ort
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
s.run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})
print((status("VmHWM") - before) / 1024)
"""


def independent(path: Path, x: np.ndarray, y: np.ndarray, iterations: int) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0]
    accuracy = float((logits.argmax(1) == y).mean())
    one = {"input": x[:1]}
    for _ in range(50):
        session.run(None, one)
    times = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        session.run(None, one)
        times.append((time.perf_counter_ns() - t) / 1e6)
    rss = [float(subprocess.run([sys.executable, "-c", RSS, str(path)], capture_output=True,
                                text=True, check=True).stdout) for _ in range(3)]
    return {"accuracy": accuracy, "performance": statistics.median(times),
            "footprint": statistics.median(rss), "modelsize": path.stat().st_size / 2**20}


def main() -> None:
    spec = load_spec(HERE / "digits.yaml")
    spec = spec.__class__(**{**spec.__dict__, "tuning": spec.tuning.model_copy(update={
        "multi_objectives": spec.tuning.multi_objectives.model_copy(update={
            "objective": ["accuracy", "performance", "footprint", "modelsize"],
            "higher_is_better": None, "weight": None})})})
    session = prepare(spec)
    data = np.load(HERE / "data" / "digits_eval.npz")
    int8 = QuantConfig(approach="static", quant_format="QDQ", types="U8S8", per_channel=False,
                       reduce_range=False, activation_symmetric=False, weight_symmetric=True,
                       calibrate_method="MinMax", calibration_size=200, op_types=("Conv", "Gemm"),
                       first_node_fp32=False, last_node_fp32=False)
    with tempfile.TemporaryDirectory() as tmp:
        for label, config in (("fp32", QuantConfig()), ("int8 U8S8 QDQ MinMax", int8)):
            ranges = session.ranges.get(config).path if config.approach == "static" else None
            path = quantize(session.model, config, Path(tmp) / f"{config.key()}.onnx", ranges=ranges)
            ours = measure_model(session, path).values
            other = independent(path, data["x"], data["y"], spec.measure.performance.iterations)
            for name in ("accuracy", "performance", "footprint", "modelsize"):
                print(f"{label:22s} {name:12s} quantuna {ours[name]:10.4f}  independent "
                      f"{other[name]:10.4f}  ratio {ours[name] / other[name]:.3f}")


if __name__ == "__main__":
    main()
