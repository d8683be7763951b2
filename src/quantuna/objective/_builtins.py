"""The built-in objectives, measured truthfully: Accuracy, Performance, Footprint, ModelSize."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.objective._base import MIB, Objective, objective_registry
from quantuna.objective._memory import CLEAR_REFS, METHODS, PeakProbe, choose_method

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


@objective_registry
class Footprint(Objective):
    """Peak resident memory (MiB) the region adds, native allocations included.

    ``start()`` takes the resident set and starts tracking the peak; ``end()`` appends the
    peak minus that baseline and sets :attr:`method` to what measured it: ``vmhwm`` (Linux:
    the kernel's peak counter, reset by ``5`` to ``/proc/self/clear_refs``; exact),
    ``peak_wset`` (Windows, psutil) or ``ru_maxrss`` (macOS, BSD, Linux without ``clear_refs``):
    exact when the region sets the process's peak, else ``sampled`` (a thread polls RSS every
    ~1 ms, a lower bound). See :mod:`quantuna.objective._memory` for the table.

    Args:
        method: force a method (``vmhwm``, ``peak_wset``, ``ru_maxrss``, ``sampled``); default:
            the platform's (:func:`~quantuna.objective._memory.choose_method`).
    """

    representation = "footprint"
    unit = "MiB"
    clear_refs_path = CLEAR_REFS

    def __init__(self, method: str | None = None) -> None:
        """Create a peak-memory objective."""
        super().__init__()
        if method is not None and method not in METHODS:
            raise ValueError(f"footprint method {method!r}: use one of {', '.join(METHODS)}")
        self.forced = method
        self.method: str | None = None  # what measured the last region
        self._probe: PeakProbe | None = None

    def start(self) -> None:
        """Take the baseline and start tracking the peak."""
        if self._probe is not None and self._probe.sampler is not None:  # start() again: drop it
            self._probe.sampler.finish()
        method = self.forced or choose_method(clear_refs=self.clear_refs_path)
        self._probe = PeakProbe(method, clear_refs=self.clear_refs_path)

    def end(self) -> None:
        """Append the peak minus the baseline, in MiB."""
        if self._probe is None:
            raise RuntimeError("Footprint.end() called without start()")
        kib, self.method = self._probe.finish()
        self._probe = None
        self._result_list.append(kib * 1024 / MIB)


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

