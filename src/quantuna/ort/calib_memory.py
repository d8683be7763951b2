"""Calibration memory: what onnxruntime's calibrators will hold, estimated before, measured during.

onnxruntime's calibrators keep every calibrated tensor of every calibration sample in memory
until the end (``collect_data`` appends each batch's outputs; the histogram calibrators then
concatenate them per tensor, a second copy, and take absolute values or histograms, a third):
on a transformer, thousands of activations x hundreds of samples exhaust memory (onnxruntime
issue #10503). :func:`estimate_bytes` sizes that from the model's inferred shapes at the
calibration data's own shapes; :func:`check_fits` refuses, in one line, a setting whose estimate
exceeds the memory the machine has available; :class:`PeakMemory` measures the resident-memory
peak while calibrating.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnx

from quantuna.errors import SpecError

# copies of the collected tensors alive at the peak, per calibration method (see the docstring)
COPIES = {"MinMax": 2, "MovingAverage": 2, "Entropy": 3, "Percentile": 3, "Distribution": 3}
_ELEM_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8}
MIB = 2**20


def tensor_bytes_per_sample(model_path: Path, op_types: Sequence[str],
                            sample_shapes: dict[str, tuple[int, ...]]) -> int:
    """Bytes of the float tensors onnxruntime calibrates (inputs and outputs of ``op_types``
    nodes, initializers excepted) for one sample of the given shapes (batch axis first)."""
    model = onnx.load(str(model_path), load_external_data=False)
    for value in model.graph.input:
        shape = sample_shapes.get(value.name)
        if shape is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, (1, *shape[1:])):
            dim.Clear()
            dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (a model past 2 GiB, a custom op: no estimate, no refusal)
        return 0
    graph = inferred.graph
    kinds = {v.name: v.type.tensor_type for v in [*graph.input, *graph.value_info, *graph.output]}
    weights = {i.name for i in graph.initializer}
    names = {t for n in graph.node if n.op_type in op_types for t in [*n.input, *n.output]}
    total = 0
    for name in names - weights - {""}:
        kind = kinds.get(name)
        if kind is None or kind.elem_type not in _ELEM_BYTES:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in kind.shape.dim]
        if all(dims):  # a dimension inference could not fix is left out (an underestimate)
            total += math.prod(dims) * _ELEM_BYTES[kind.elem_type]
    return total


def estimate_bytes(per_sample: int, method: str, samples: int) -> int:
    """The peak bytes onnxruntime's ``method`` calibrator holds for ``samples`` samples."""
    return per_sample * samples * COPIES.get(method, 3)


def available_bytes() -> int | None:
    """The memory this machine has available now (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(per_sample: int, settings: Sequence[tuple[str, int]], *, where: str,
               available: int | None = None) -> None:
    """Refuse the first (method, samples) setting whose estimate exceeds available memory."""
    available = available_bytes() if available is None else available
    if not available:
        return
    for method, samples in settings:
        need = estimate_bytes(per_sample, method, samples)
        if need > available:
            fix = "a smaller calibration_size or fewer op types"
            raise SpecError(
                f"{where}: space.calibrate_method: {method} on {samples} samples would hold about "
                f"{need / MIB:,.1f} MiB of activations in onnxruntime's calibrator, more than the "
                f"{available / MIB:,.1f} MiB available: use "
                + (fix if method == "MinMax" else f"MinMax, {fix}"))


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """The resident-memory peak of this process over a ``with`` block, above its start (bytes).

    A thread samples ``/proc/self/statm`` every ``interval`` seconds (0 where it does not exist).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def added_bytes(self) -> int:
        """How far the peak rose above the start."""
        return max(0, self.peak - self.start)


def sample_shapes(inputs: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shapes of a data set's arrays (first axis = samples)."""
    return {name: tuple(int(d) for d in array.shape) for name, array in inputs.items()}
