"""onnxruntime sessions and the one evaluation loop (accuracy pass, sensitivity ranking)."""

from __future__ import annotations

import re
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
        raise SpecError(f"{where}: onnxruntime cannot run {shown or path} ({ort_reason(exc, 100)})") from None
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the reason is raised, not also printed
    batch = next(dataset.batches(batch_size))[0]
    try:
        session.run(None, batch, quiet)
    except Exception as exc:
        fed = ", ".join(f"{k} {list(v.shape)} {v.dtype}" for k, v in batch.items())
        expected = ", ".join(f"{i.name} {i.shape} {i.type}" for i in session.get_inputs())
        raise SpecError(f"{where}: the fp32 model cannot run one batch ({ort_reason(exc)}); fed "
                        f"{fed}; the model takes {expected}") from None


_ORT_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |Load model from \S+ failed:|"
                        r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*")


def ort_reason(exc: BaseException, limit: int = 150) -> str:
    """onnxruntime's error without its source paths and C++ signatures, head and tail kept."""
    text = " ".join(_ORT_NOISE.sub("", str(exc)).split()) or type(exc).__name__
    if len(text) <= limit:
        return text
    return f"{text[: limit // 3]} ... {text[-(limit - limit // 3 - 5):]}"
