"""A custom objective written the Neural Compressor way, importable as custom_objectives:BatchTimer."""

from __future__ import annotations

import time

from quantuna.objective import Objective


class BatchTimer(Objective):
    """Milliseconds per evaluation batch, set up in start() and recorded in end()."""

    representation = "batchtime"
    higher_is_better = False
    unit = "ms"
    calls = 0

    def start(self) -> None:
        self._started = time.perf_counter()

    def end(self) -> None:
        self._result_list.append((time.perf_counter() - self._started) * 1000)
        type(self).calls += 1
