"""``RangeCache``: tensor ranges computed once per calibration setting, kept on disk.

The key is ours: (model sha256, calibration method and its parameters, calibration size,
calibration data sha256, the op types calibrated). onnxruntime's own ``calibration_cache_path``
checks only the method. Each entry is written atomically (a temporary file in the same folder,
fsync, rename) with a sha256 beside it (``<entry>.json.sha256``); an entry whose checksum or JSON
does not hold (a truncated file, garbage, a hand edit) is discarded with one warning and computed
again, so a bad entry never fails a trial. A study calibrates the tensors of every op type its space can quantize
(the ``op.*`` knobs), so trials that quantize fewer op types reuse the same ranges, and no more
than that: each tensor's range is computed on its own, so a wider set would only cost time. A
file lock makes concurrent local workers compute each setting once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantuna._util import atomic_write, file_lock
from quantuna.config import QuantConfig
from quantuna.data import Batch, Dataset
from quantuna.ort._capture import captured
from quantuna.ort.calib_memory import PeakMemory
from quantuna.ort.options import calibrator_options, quantizable_op_types
from quantuna.ort.smooth import SCALES_KEY, smooth_model

logger = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: non-finite activations clipped (ranges made before were [-inf, x])
_REPORTED: set[Path] = set()  # bad entries already warned about in this process


@dataclass(frozen=True)
class Ranges:
    """Where a calibration setting's ranges lie, and whether this call computed them."""

    path: Path
    reused: bool
    seconds: float
    peak_bytes: int | None = None  # resident-memory peak of the calibration (computed now only)


class _Reader:
    """An onnxruntime ``CalibrationDataReader`` over equal-size batches."""

    def __init__(self, batches: list[Batch]) -> None:
        self._batches = batches
        self._iter: Iterator[Batch] = iter(batches)

    def get_next(self) -> Batch | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def range_key(model_sha256: str, setting: dict[str, Any], data_sha256: str) -> str:
    """The cache key of a calibration setting."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "model": model_sha256, "setting": setting, "data": data_sha256},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def compute_ranges(
    model_path: Path, config: QuantConfig, calibration: Dataset, batch_size: int, out: Path,
    op_types: Sequence[str] | None = None,
) -> int:
    """Run onnxruntime's calibrator for ``config``'s setting and save the ranges to ``out``.

    ``op_types``: whose input and output tensors are calibrated (default: every op type
    onnxruntime can quantize). Returns how far resident memory rose while calibrating (bytes).
    """
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    assert config.calibration_setting is not None and config.calibration_size is not None
    method, options = calibrator_options(config)
    if op_types is None:
        op_types = quantizable_op_types()
    data = calibration.head(config.calibration_size)
    reader = _Reader(data.equal_batches(batch_size))
    with tempfile.TemporaryDirectory(prefix="quantuna-calib-") as tmp:
        scales = None
        if config.smooth_quant:  # the ranges of the smoothed model, its scales kept beside them
            import onnx

            smoothed, scales = smooth_model(model_path, float(config.smooth_quant_alpha or 0.5),
                                            data.equal_batches(batch_size))
            model_path = Path(tmp) / "smoothed.onnx"
            onnx.save(smoothed, str(model_path))
        calibrator = create_calibrator(
            model_path,
            list(op_types),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=options,
        )
        calibrator.infer_session = FiniteOutputs(calibrator.infer_session)
        with captured("calibrate"), PeakMemory() as memory:
            calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        del calibrator
        staged = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, staged)
        payload = staged.read_bytes()
        if scales is not None:
            payload = json.dumps({**json.loads(payload), SCALES_KEY: scales}).encode()
    # the checksum first: whoever sees the entry sees its checksum
    atomic_write(_checksum_path(out), hashlib.sha256(payload).hexdigest() + "\n")
    atomic_write(out, payload)
    return memory.added_bytes


def _checksum_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".sha256")


def entry_problem(entry: Path) -> str | None:
    """Why a range-cache entry cannot be trusted, or ``None`` when it holds (absent: ``None``)."""
    if not entry.is_file():
        return None
    try:
        payload = entry.read_bytes()
        expected = _checksum_path(entry).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return f"no readable checksum ({type(exc).__name__})"
    if hashlib.sha256(payload).hexdigest() != expected:
        return "its checksum does not match"
    try:
        json.loads(payload)
    except ValueError as exc:
        return f"not JSON ({exc})"
    return None


def clip_non_finite(array: np.ndarray) -> np.ndarray:
    """``array`` with -inf/+inf clipped to its finite extremes and NaN to the nearest of them to 0.

    An attention mask of -inf, a log of 0: one non-finite value makes onnxruntime's histogram
    fail (``supplied range of [-inf, inf] is not finite``) for the whole calibration, and gives
    MinMax a range int8 cannot represent. Clipped, the range covers the finite values.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    values = array[finite]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    nan = min(max(0.0, low), high)
    return np.nan_to_num(array, nan=nan, posinf=high, neginf=low)


class FiniteOutputs:
    """The calibrator's augmented session, its outputs with non-finite values clipped.

    Every calibration method reads tensor values through this session: MinMax would otherwise
    keep a range of [-inf, x] (a quantized model that computes garbage, silently), and the
    histograms of Entropy and Percentile would fail the whole calibration.
    """

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, output_names: Any, feed: Any, *args: Any) -> list[Any]:
        outputs = self._session.run(output_names, feed, *args)
        return [clip_non_finite(o) if isinstance(o, np.ndarray) else o for o in outputs]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class RangeCache:
    """Tensor ranges on disk under ``directory``, one JSON file per calibration setting.

    Args:
        directory: the cache folder (``<spec>.quantuna/ranges`` for a study).
        model_path: the fp32 model.
        model_sha256: its hash (part of the key).
        calibration: the calibration data set (its hash is part of the key).
        batch_size: the calibration batch size (batches are made equal in size).
        op_types: the op types whose tensors are calibrated (part of the key; default: every op
            type onnxruntime can quantize).
    """

    def __init__(
        self,
        directory: Path,
        model_path: Path,
        model_sha256: str,
        calibration: Dataset,
        batch_size: int,
        op_types: Sequence[str] | None = None,
    ) -> None:
        self.op_types = None if op_types is None else sorted(set(op_types))
        self.directory = directory
        self.model_path = model_path
        self.model_sha256 = model_sha256
        self.calibration = calibration
        self.batch_size = batch_size

    def path_for(self, config: QuantConfig) -> Path:
        """The cache file of ``config``'s calibration setting."""
        assert config.calibration_setting is not None
        setting = dict(config.calibration_setting, batch_size=self.batch_size)
        if self.op_types is not None:
            setting["op_types"] = self.op_types
        key = range_key(self.model_sha256, setting, self.calibration.sha256)
        return self.directory / f"{config.calibrate_method}-{key}.json"

    def _valid(self, path: Path) -> bool:
        """True when ``path`` is a sound entry; a bad one is removed (and logged once).

        Called under the entry's lock: only its holder writes or removes the entry.
        """
        problem = entry_problem(path)
        if problem is None:
            return path.is_file()
        if path not in _REPORTED:
            _REPORTED.add(path)
            logger.warning("range cache entry %s is discarded and computed again: %s", path.name, problem)
        for stale in (path, _checksum_path(path)):
            stale.unlink(missing_ok=True)
        return False

    def get(self, config: QuantConfig) -> Ranges:
        """The ranges of ``config``'s setting, computed now if no process has computed them yet."""
        start = time.perf_counter()
        path = self.path_for(config)
        if path.is_file() and entry_problem(path) is None:
            return Ranges(path, True, time.perf_counter() - start)
        with file_lock(path):
            if self._valid(path):  # another local worker computed it while we waited
                return Ranges(path, True, time.perf_counter() - start)
            logger.info("calibrating %s (%s samples)", config.calibrate_method, config.calibration_size)
            peak = compute_ranges(self.model_path, config, self.calibration, self.batch_size,
                                  path, self.op_types)
        return Ranges(path, False, time.perf_counter() - start, peak)
