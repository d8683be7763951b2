"""The built-in objectives, measured truthfully: Accuracy, Performance, Footprint, ModelSize."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.objective._base import MIB, Objective, objective_registry

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

logger = logging.getLogger("quantuna.objective")


@objective_registry
class Accuracy(Objective):
    """The number the evaluation returns; ``end(acc)`` records it."""

    representation = "accuracy"
    higher_is_better = True

    def start(self) -> None:
        """Do nothing: accuracy is handed to ``end``."""

    def end(self, acc: float) -> None:  # type: ignore[override]
        """Record ``acc``."""
        self._result_list.append(acc)


@objective_registry
class Performance(Objective):
    """Wall time of the region in milliseconds (``time.perf_counter``); ``result`` is the median."""

    representation = "performance"
    unit = "ms"

    def __init__(self) -> None:
        """Create a latency objective."""
        super().__init__()
        self._t0: float | None = None

    def start(self) -> None:
        """Take the start time."""
        self._t0 = time.perf_counter()

    def end(self) -> None:
        """Append the milliseconds since ``start()``."""
        if self._t0 is None:
            raise RuntimeError("Performance.end() called without start()")
        self._result_list.append((time.perf_counter() - self._t0) * 1000.0)
        self._t0 = None

    def result(self, start: int | None = None, end: int | None = None) -> float:
        """Return the MEDIAN latency (ms) of the slice; INC returns the mean."""
        values = self._slice(start, end)
        return float(np.median(values)) if values else 0.0

    def throughput(self, batch_size: int = 1) -> float:
        """Return samples per second from the median latency (0.0 without measurements)."""
        median_ms = self.result()
        return batch_size * 1000.0 / median_ms if median_ms > 0 else 0.0


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _RssSampler(threading.Thread):
    """Polls VmRSS every ``interval`` seconds and keeps the maximum (KiB)."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(name="quantuna-footprint", daemon=True)
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = _proc_status_kib("VmRSS") or 0

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self.peak = max(self.peak, _proc_status_kib("VmRSS") or 0)

    def finish(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _proc_status_kib("VmRSS") or 0)


@objective_registry
class Footprint(Objective):
    """Peak resident memory (MiB) the region adds, native allocations included.

    Linux: ``start()`` resets the kernel's peak-RSS counter (``5`` to ``/proc/self/clear_refs``)
    and reads VmRSS; ``end()`` appends VmHWM minus that baseline. If ``clear_refs`` is not
    writable, a thread samples VmRSS every ~1 ms instead (it can miss very short peaks). Without
    ``/proc`` (macOS, BSD) the growth of ``ru_maxrss`` is recorded: a lower bound that stays 0
    unless the region sets a new process-wide peak. Without ``resource`` (Windows) it records 0.0
    and logs a warning.
    """

    representation = "footprint"
    unit = "MiB"
    clear_refs_path = "/proc/self/clear_refs"

    def __init__(self) -> None:
        """Create a peak-memory objective."""
        super().__init__()
        self._baseline_kib: int | None = None
        self._sampler: _RssSampler | None = None
        self._mode = ""

    def _reset_peak(self) -> bool:
        try:
            with open(self.clear_refs_path, "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    def start(self) -> None:
        """Take the baseline and start tracking the peak."""
        if self._sampler is not None:  # start() again without end(): drop the old sampler
            self._sampler.finish()
            self._sampler = None
        rss = _proc_status_kib("VmRSS")
        if rss is not None and self._reset_peak():
            self._mode, self._baseline_kib = "hwm", _proc_status_kib("VmRSS")
        elif rss is not None:
            self._mode, self._sampler = "sample", _RssSampler()
            self._baseline_kib = self._sampler.peak
            self._sampler.start()
        else:
            self._mode, self._baseline_kib = "maxrss", _maxrss_kib()

    def end(self) -> None:
        """Append the peak minus the baseline, in MiB."""
        if self._baseline_kib is None:
            raise RuntimeError("Footprint.end() called without start()")
        if self._mode == "hwm":
            peak = _proc_status_kib("VmHWM") or self._baseline_kib
        elif self._mode == "sample" and self._sampler is not None:
            peak, self._sampler = self._sampler.finish(), None
        else:
            peak = _maxrss_kib()
        self._result_list.append(max(peak - self._baseline_kib, 0) * 1024 / MIB)
        self._baseline_kib = None


def _maxrss_kib() -> int:
    if resource is None:  # pragma: no cover - Windows
        logger.warning("Footprint cannot measure memory on this platform; recording 0.0")
        return 0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # macOS reports bytes


def _external_locations(model: Any) -> set[str]:
    def graph_tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from graph_tensors(sub)

    tensors = list(graph_tensors(model.graph))
    tensors += [t for f in model.functions for n in f.node for t in node_tensors(n)]
    return {
        entry.value
        for tensor in tensors
        if tensor.data_location == 1  # onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


def model_size_bytes(model: Any, base_dir: str | os.PathLike[str] | None = None) -> int:
    """Return the serialized size of a model in bytes, external data files included.

    Args:
        model: An ``onnx.ModelProto`` or the path of an ``.onnx`` file.
        base_dir: Where a ModelProto's external data files live (a path's own folder is used).

    Raises:
        ValueError: If a ModelProto refers to external data and ``base_dir`` is not given.
        FileNotFoundError: If the model or one of its external data files is missing.
    """
    if isinstance(model, (str, os.PathLike)):
        import onnx

        path = Path(model)
        proto_bytes = path.stat().st_size
        proto = onnx.load(str(path), load_external_data=False)
        base_dir = path.parent
    else:
        proto, proto_bytes = model, model.ByteSize()
    locations = _external_locations(proto)
    if locations and base_dir is None:
        raise ValueError(
            f"the model refers to external data {sorted(locations)}; pass the model's path "
            "or base_dir so that ModelSize can count it"
        )
    return proto_bytes + sum(Path(base_dir or ".", loc).stat().st_size for loc in locations)


@objective_registry
class ModelSize(Objective):
    """Serialized size of ``model`` in MiB (``bytes / 2**20``), external data included."""

    representation = "modelsize"
    unit = "MiB"

    def start(self) -> None:
        """Do nothing: the size does not depend on a region."""

    def end(self) -> None:
        """Append the size of ``self.model`` (a ModelProto or a path)."""
        if self.model is None:
            raise RuntimeError("ModelSize.end() needs a model; set objective.model first")
        self._result_list.append(model_size_bytes(self.model) / MIB)

