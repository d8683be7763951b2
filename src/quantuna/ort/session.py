"""onnxruntime sessions and the one evaluation loop (accuracy pass, sensitivity ranking)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantuna.data import Dataset
from quantuna.errors import SpecError
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return (text or type(exc).__name__)[:300]


def check_runs(path: Path, dataset: Dataset, batch_size: int, *, where: str,
               shown: str | None = None) -> None:
    """Run one real batch of ``dataset`` through the model: whatever the baseline would hit.

    ``shown`` names the model in messages (the user's file rather than its prepared copy).

    Raises:
        SpecError: onnxruntime cannot load the model, or cannot run the batch (one line: the
            data, onnxruntime's reason and the shapes fed).
    """
    try:
        session = open_session(path, 1)
    except Exception as exc:
        raise SpecError(f"{where}: onnxruntime cannot load the model {shown or path} "
                        f"({_one_line(exc)})") from None
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the reason is raised, not also printed
    batch = next(dataset.batches(batch_size))[0]
    try:
        session.run(None, batch, quiet)
    except Exception as exc:
        fed = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in batch.items())
        expected = ", ".join(f"{i.name} {i.shape} {i.type}" for i in session.get_inputs())
        raise SpecError(f"{where}: the fp32 model cannot run one batch ({_one_line(exc)}); fed "
                        f"{fed}; the model takes {expected}") from None
