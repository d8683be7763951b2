"""Footprint: the peak resident memory a session of a model adds, measured in a fresh process.

In a long-lived process freed pages are reused and a session's memory would not show as new
resident memory, so the number would depend on what ran before. The child is spawned and imports
onnxruntime before the measured region starts (the library is not the model). A fresh process
also makes the peak counters that cannot be reset (Windows' peak working set, ``ru_maxrss``)
exact: the session sets the child's peak.
"""

from __future__ import annotations

import gc
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.errors import TrialError
from quantuna.objective import Footprint
from quantuna.ort.session import open_session


def _footprint_child(path: str, batch: dict[str, np.ndarray], threads: int, queue: Any,
                     method: str | None = None) -> None:
    """Child process: the peak resident memory that creating a session and one run add."""
    try:
        import onnxruntime  # noqa: F401  (loaded before the region: the library is not the model)

        objective = Footprint(method)
        gc.collect()
        objective.start()
        session = open_session(Path(path), threads)
        session.run(None, batch)
        objective.end()
        queue.put(("ok", (objective.result(), objective.method)))
    except Exception as exc:  # reported to the parent, which fails the trial
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_footprint(path: Path, batch: dict[str, np.ndarray], threads: int,
                      method: str | None = None) -> tuple[float, str]:
    """Peak resident MiB that a session of ``path`` adds, measured in a fresh process, and the
    method that measured it (``vmhwm``, ``peak_wset``, ``ru_maxrss``, ``sampled``: see
    :class:`~quantuna.objective.Footprint`); ``method`` forces one."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_footprint_child, args=(str(path), batch, threads, queue, method))
    child.start()
    try:
        status, value = queue.get(timeout=600)
    except Exception:
        status, value = "error", f"the footprint process died (exit code {child.exitcode})"
    child.join(timeout=60)
    if status != "ok":
        raise TrialError(f"footprint run failed: {value}")
    mib, measured_by = value
    return float(mib), str(measured_by)
