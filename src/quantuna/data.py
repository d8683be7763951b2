"""Calibration and evaluation data: loaded once, checked against the model, hashed for the cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantuna._util import import_reference
from quantuna.errors import SpecError
from quantuna.model import InputInfo, ModelInfo
from quantuna.spec import DataSource

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """Arrays by model input name (first axis = samples), optional labels, and a content hash."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    sha256: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, size: int) -> Dataset:
        """The first ``size`` samples (hash recomputed)."""
        inputs = {k: v[:size] for k, v in self.inputs.items()}
        labels = None if self.labels is None else self.labels[:size]
        return Dataset(inputs, labels, _hash_arrays(inputs, labels))

    def batches(self, batch_size: int) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """Consecutive batches; the last may be shorter."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            labels = None if self.labels is None else self.labels[start:stop]
            yield {k: v[start:stop] for k, v in self.inputs.items()}, labels

    def equal_batches(self, batch_size: int) -> list[Batch]:
        """Batches that all have the same size (Entropy and Percentile calibration need it).

        The batch size is the largest divisor of the sample count not above ``batch_size``.
        """
        n = len(self)
        size = max(d for d in range(1, min(batch_size, n) + 1) if n % d == 0)
        return [batch for batch, _ in self.batches(size)]


def _hash_arrays(inputs: dict[str, np.ndarray], labels: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    if labels is not None:
        array = np.ascontiguousarray(labels)
        digest.update(f"labels|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _from_npz(source: DataSource, model: ModelInfo, where: str) -> tuple[dict, Any]:
    assert source.path is not None
    if not source.path.is_file():
        raise SpecError(f"{where}.path: file {source.path} not found")
    try:
        archive = np.load(source.path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as exc:
        raise SpecError(f"{where}.path: {source.path} is not a readable .npz file ({exc})") from None
    mapping = source.inputs
    if mapping is None:
        if len(model.inputs) != 1:
            names = ", ".join(i.name for i in model.inputs)
            raise SpecError(f"{where}.inputs: the model has several inputs ({names}); map each to a key")
        only = model.inputs[0].name
        mapping = {only: only if only in keys else "x"}
    for input_name, key in mapping.items():
        if key not in keys:
            raise SpecError(
                f"{where}.inputs.{input_name}: key {key!r} is not in {source.path.name} "
                f"(it holds: {', '.join(sorted(keys))})"
            )
    inputs = {name: archive[key] for name, key in mapping.items()}
    labels = None
    if source.labels is not None:
        if source.labels not in keys:
            raise SpecError(f"{where}.labels: key {source.labels!r} is not in {source.path.name}")
        labels = archive[source.labels]
    return inputs, labels


def _from_loader(source: DataSource, where: str) -> tuple[dict, Any]:
    assert source.loader is not None
    factory: Callable[[], Iterable[Any]] = import_reference(source.loader, where=f"{where}.loader")
    try:
        return _concat(factory(), where)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"{where}.loader: {source.loader} raised {type(exc).__name__}: {exc}") from None


def _concat(items: Iterable[Any], where: str) -> tuple[dict, Any]:
    parts: dict[str, list[np.ndarray]] = {}
    label_parts: list[np.ndarray] = []
    for item in items:
        batch, labels = item if isinstance(item, tuple) else (item, None)
        if not isinstance(batch, dict):
            raise SpecError(f"{where}: a batch must be a dict {{input_name: array}}, got {type(batch).__name__}")
        for name, value in batch.items():
            parts.setdefault(name, []).append(np.asarray(value))
        if labels is not None:
            label_parts.append(np.asarray(labels))
    if not parts:
        raise SpecError(f"{where}: no batch")
    inputs = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return inputs, np.concatenate(label_parts) if label_parts else None


def _check_fits(inputs: dict[str, np.ndarray], info: InputInfo, where: str) -> np.ndarray:
    array = inputs[info.name]
    if array.ndim != len(info.shape):
        raise SpecError(
            f"{where}: input {info.name!r} has shape {array.shape} but the model expects "
            f"{len(info.shape)} dims {_show(info.shape)}"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], info.shape[1:]), start=1):
        if want is not None and got != want:
            raise SpecError(
                f"{where}: input {info.name!r} has shape {array.shape} but the model expects "
                f"{_show(info.shape)} (axis {axis}: {got} != {want})"
            )
    try:
        return np.ascontiguousarray(array.astype(info.dtype, casting="same_kind"))
    except TypeError:
        raise SpecError(
            f"{where}: input {info.name!r} has dtype {array.dtype}, the model expects "
            f"{np.dtype(info.dtype)}"
        ) from None


def _check_finite(inputs: dict[str, np.ndarray], labels: np.ndarray | None, where: str) -> None:
    """NaN or Inf in the data would lower the baseline silently: refuse it."""
    arrays = dict(inputs) if labels is None else {**inputs, "labels": labels}
    for name, array in arrays.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            key = "labels" if name == "labels" and labels is not None else f"input {name!r}"
            raise SpecError(f"{where}: {key} holds {bad} NaN or Inf values; clean the data first")


def _show(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def load_dataset(
    source: DataSource | Iterable[Any],
    model: ModelInfo,
    *,
    where: str,
    need_labels: bool = False,
) -> Dataset:
    """Load a data source (or an iterable of batches) and check it against the model's inputs.

    Raises:
        SpecError: a missing file or key, a name the model does not have, a shape or dtype that
            does not fit, or labels whose count differs from the samples'.
    """
    size = source.size if isinstance(source, DataSource) else None
    if not isinstance(source, DataSource):
        inputs, labels = _concat(source, where)
    elif source.path is not None:
        inputs, labels = _from_npz(source, model, where)
    else:
        inputs, labels = _from_loader(source, where)
    model_names = {i.name for i in model.inputs}
    extra = sorted(set(inputs) - model_names)
    if extra:
        raise SpecError(
            f"{where}.inputs: {extra[0]!r} is not an input of the model "
            f"(its inputs: {', '.join(sorted(model_names))})"
        )
    missing = sorted(model_names - set(inputs))
    if missing:
        raise SpecError(f"{where}.inputs: no data for model input {missing[0]!r}")
    checked = {info.name: _check_fits(inputs, info, where) for info in model.inputs}
    counts = {len(a) for a in checked.values()}
    if len(counts) != 1:
        raise SpecError(f"{where}: inputs have different sample counts {sorted(counts)}")
    if counts == {0} or size == 0:
        raise SpecError(f"{where}: 0 samples; give at least one")
    _check_finite(checked, labels, where)
    if need_labels and labels is None:
        raise SpecError(f"{where}.labels: the accuracy metric needs labels; name the labels key")
    if labels is not None and len(labels) != counts.pop():
        raise SpecError(f"{where}.labels: {len(labels)} labels for {len(checked[model.inputs[0].name])} samples")
    if size is not None:
        available = len(checked[model.inputs[0].name])
        if size > available:
            raise SpecError(f"{where}.size: {size} samples asked, {available} available")
        checked = {k: v[:size] for k, v in checked.items()}
        labels = None if labels is None else labels[:size]
    return Dataset(checked, labels, _hash_arrays(checked, labels))
