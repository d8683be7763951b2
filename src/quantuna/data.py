"""Calibration and evaluation data: loaded once, checked against the model, hashed for the cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantuna._util import import_reference
from quantuna.errors import SpecError
from quantuna.model import InputInfo, ModelInfo
from quantuna.spec import DataSource

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """Arrays by model input name, optional labels, constants and a content hash.

    The samples of an input lie on axis 0 unless ``axes`` names another; ``constants`` are fed
    unchanged with every batch (an RNN's state, a sample rate).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    sha256: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    axes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        name, array = next(iter(self.inputs.items()))
        return int(array.shape[self.axes.get(name, 0)])

    def _slice(self, start: int, stop: int) -> Batch:
        out = {}
        for name, array in self.inputs.items():
            index = [slice(None)] * array.ndim
            index[self.axes.get(name, 0)] = slice(start, stop)
            out[name] = array[tuple(index)]
        return out

    def head(self, size: int) -> Dataset:
        """The first ``size`` samples (hash recomputed)."""
        inputs = self._slice(0, size)
        labels = None if self.labels is None else self.labels[:size]
        return Dataset(inputs, labels, _hash_arrays(inputs, labels, self.constants, self.axes),
                       self.constants, self.axes)

    def batches(self, batch_size: int) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """Consecutive batches, constants included; the last may be shorter."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            labels = None if self.labels is None else self.labels[start:stop]
            yield {**self._slice(start, stop), **self.constants}, labels

    def equal_batches(self, batch_size: int) -> list[Batch]:
        """Batches that all have the same size (Entropy and Percentile calibration need it).

        The batch size is the largest divisor of the sample count not above ``batch_size``.
        """
        n = len(self)
        size = max(d for d in range(1, min(batch_size, n) + 1) if n % d == 0)
        return [batch for batch, _ in self.batches(size)]


def _hash_arrays(inputs: dict[str, np.ndarray], labels: np.ndarray | None,
                 constants: dict[str, np.ndarray] | None = None,
                 axes: dict[str, int] | None = None) -> str:
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        axis = (axes or {}).get(name, 0)
        digest.update(f"{name}|{array.dtype}|{array.shape}{f'|axis {axis}' if axis else ''}".encode())
        digest.update(array.tobytes())
    for name in sorted(constants or {}):
        array = np.ascontiguousarray((constants or {})[name])
        digest.update(f"constant {name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    if labels is not None:
        array = np.ascontiguousarray(labels)
        digest.update(f"labels|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


Loaded = tuple[dict[str, np.ndarray], Any, dict[str, Any]]


def _from_npz(source: DataSource, model: ModelInfo, where: str) -> Loaded:
    assert source.path is not None
    if not source.path.is_file():
        raise SpecError(f"{where}.path: file {source.path} not found")
    try:
        archive = np.load(source.path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as exc:
        raise SpecError(f"{where}.path: {source.path} is not a readable .npz file ({exc})") from None
    constants = dict(source.constants or {})
    if source.inputs is None:
        fed = [i.name for i in model.inputs if i.name not in constants]
        if len(fed) != 1:
            raise SpecError(f"{where}.inputs: the model has several inputs ({', '.join(fed)}); "
                            "map each to a key, or give it in constants")
        mapping = {fed[0]: fed[0] if fed[0] in keys else "x"}
    else:
        mapping = {name: source.key_of(name) for name in source.inputs}
    named = [(f"inputs.{n}", k) for n, k in mapping.items()]
    named += [(f"constants.{n}", v) for n, v in constants.items() if isinstance(v, str)]
    for place, key in named:
        if key not in keys:
            raise SpecError(f"{where}.{place}: key {key!r} is not in {source.path.name} "
                            f"(it holds: {', '.join(sorted(keys))})")
    inputs = {name: archive[key] for name, key in mapping.items()}
    values = {n: archive[v] if isinstance(v, str) else v for n, v in constants.items()}
    labels = None
    if source.labels is not None:
        if source.labels not in keys:
            raise SpecError(f"{where}.labels: key {source.labels!r} is not in {source.path.name}")
        labels = archive[source.labels]
    return inputs, labels, values


def _from_loader(source: DataSource, where: str) -> Loaded:
    assert source.loader is not None
    factory: Callable[[], Iterable[Any]] = import_reference(source.loader, where=f"{where}.loader")
    try:
        inputs, labels = _concat(factory(), where, source)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"{where}.loader: {source.loader} raised {type(exc).__name__}: {exc}") from None
    return inputs, labels, dict(source.constants or {})


def _concat(items: Iterable[Any], where: str, source: DataSource | None = None) -> tuple[dict, Any]:
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
    axis = source.batch_axis if source is not None else (lambda name: 0)
    inputs = {name: np.concatenate(chunks, axis=axis(name)) for name, chunks in parts.items()}
    return inputs, np.concatenate(label_parts) if label_parts else None


def _mismatch(origin: str, info: InputInfo, array: np.ndarray, detail: str) -> SpecError:
    return SpecError(f"{origin}: input {info.name!r} has shape {tuple(array.shape)} but the model "
                     f"expects {_show(info.shape)} ({detail})")


def _check_fits(array: np.ndarray, info: InputInfo, axis: int, origin: str) -> np.ndarray:
    if array.ndim != len(info.shape):
        hint = "; a value fed unchanged to every batch goes in constants" if axis == 0 else ""
        raise _mismatch(origin, info, array, f"{array.ndim} dims, not {len(info.shape)}{hint}")
    if axis >= array.ndim:
        raise _mismatch(origin, info, array, f"batch_axis {axis} is not an axis of it")
    for i, (got, want) in enumerate(zip(array.shape, info.shape)):
        if i != axis and want is not None and got != want:
            raise _mismatch(origin, info, array, f"axis {i}: {got} != {want}; samples on axis {axis}"
                            + ("" if axis else ", set batch_axis if they lie on another"))
    return _cast(array, info, origin)


def _cast(array: np.ndarray, info: InputInfo, origin: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(array.astype(info.dtype, casting="same_kind"))
    except TypeError:
        raise SpecError(
            f"{origin}: input {info.name!r} has dtype {array.dtype}, the model expects "
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


def _constant(value: Any, info: InputInfo, origin: str) -> np.ndarray:
    """A constant input: a number takes the model's rank (a scalar, or ones), an array must fit."""
    array = np.asarray(value)
    if array.ndim == 0 and info.shape:
        array = array.reshape([1] * len(info.shape))
    if array.ndim != len(info.shape) or any(
        w is not None and g != w for g, w in zip(array.shape, info.shape)
    ):
        raise _mismatch(origin, info, array, "as a constant, fed unchanged to every batch")
    if np.issubdtype(np.dtype(info.dtype), np.integer) and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise SpecError(f"{origin}: constant {info.name!r} = {value!r} is not a whole number, "
                            f"the model expects {np.dtype(info.dtype)}")
    return np.array(array, dtype=info.dtype, order="C")  # (ascontiguousarray makes scalars 1-d)


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
            does not fit (named with the file, the input and both shapes), or labels whose count
            differs from the samples'.
    """
    spec_source = source if isinstance(source, DataSource) else None
    if spec_source is None:
        inputs, labels = _concat(source, where)
        given: dict[str, Any] = {}
    elif spec_source.path is not None:
        inputs, labels, given = _from_npz(spec_source, model, where)
    else:
        inputs, labels, given = _from_loader(spec_source, where)
    origin = f"{where} ({spec_source.path.name if spec_source and spec_source.path else 'batches'})"
    _check_names(inputs, given, model, where)
    infos = {i.name: i for i in model.inputs}
    axes = {n: spec_source.batch_axis(n) for n in inputs if spec_source and spec_source.batch_axis(n)}
    checked = {n: _check_fits(inputs[n], infos[n], axes.get(n, 0), origin) for n in inputs}
    constants = {n: _constant(v, infos[n], origin) for n, v in given.items()}
    counts = {int(a.shape[axes.get(n, 0)]) for n, a in checked.items()}
    if len(counts) != 1:
        raise SpecError(f"{origin}: inputs have different sample counts {sorted(counts)}")
    available = counts.pop()
    size = spec_source.size if spec_source is not None else None
    if available == 0 or size == 0:
        raise SpecError(f"{where}: 0 samples; give at least one")
    _check_finite(checked, labels, where)
    if need_labels and labels is None:
        raise SpecError(f"{where}.labels: the accuracy metric needs labels; name the labels key")
    if labels is not None and len(labels) != available:
        raise SpecError(f"{where}.labels: {len(labels)} labels for {available} samples")
    data = Dataset(checked, labels, "", constants, axes)
    if size is not None and size > available:
        raise SpecError(f"{where}.size: {size} samples asked, {available} available")
    return data.head(size if size is not None else available)


def _check_names(inputs: dict[str, Any], constants: dict[str, Any], model: ModelInfo,
                 where: str) -> None:
    model_names = {i.name for i in model.inputs}
    for place, names in (("inputs", inputs), ("constants", constants)):
        extra = sorted(set(names) - model_names)
        if extra:
            raise SpecError(f"{where}.{place}: {extra[0]!r} is not an input of the model "
                            f"(its inputs: {', '.join(sorted(model_names))})")
    missing = sorted(model_names - set(inputs) - set(constants))
    if missing:
        raise SpecError(f"{where}.inputs: no data for model input {missing[0]!r}")
    if not inputs:
        raise SpecError(f"{where}.inputs: every input is a constant; map one to its samples")


OUTLIER_RATIO = 10.0  # a sample this many times past the typical sample's range is an outlier


def outlier_inputs(dataset: Dataset, ratio: float = OUTLIER_RATIO) -> dict[str, float]:
    """The float inputs whose largest sample range exceeds ``ratio`` x the median sample's.

    Each sample's range is its largest absolute value; the answer maps an input to its largest
    range / the median range. A few such samples stretch a MinMax calibration's range (the
    other samples then fall in a few int8 steps); the warm start tries ``MovingAverage`` first.
    """
    found = {}
    for name, array in dataset.inputs.items():
        if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
            continue
        per_sample = np.abs(np.moveaxis(array, dataset.axes.get(name, 0), 0)).reshape(len(dataset), -1).max(axis=1)
        typical = float(np.median(per_sample))
        if typical > 0 and float(per_sample.max()) > ratio * typical:
            found[name] = float(per_sample.max()) / typical
    return found
