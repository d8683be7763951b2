"""onnxruntime sessions and the one evaluation loop (accuracy pass, sensitivity ranking)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.data import Dataset
from quantuna.ort.options import session_options


def open_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session at full graph optimisation (fixed threads when ``threads``)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def output_chunks(
    session: Any,
    dataset: Dataset,
    batch_size: int,
    output: str | None,
    *,
    around: Callable[[], Any] | None = None,
) -> Iterator[np.ndarray]:
    """Run ``dataset`` through ``session`` in batches; yield the chosen output of each batch.

    Args:
        session: an onnxruntime session.
        dataset: the samples.
        batch_size: samples per run.
        output: the output name (default: the model's first output).
        around: a context-manager factory entered around every ``run`` (custom objectives'
            ``start()``/``end()``).
    """
    name = output or session.get_outputs()[0].name
    for batch, _ in dataset.batches(batch_size):
        if around is None:
            (result,) = session.run([name], batch)
        else:
            with around():
                (result,) = session.run([name], batch)
        yield result
