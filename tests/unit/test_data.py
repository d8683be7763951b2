"""Data sets: equal calibration batches, content hashes, loaders."""

from __future__ import annotations

import numpy as np

from quantuna.data import Dataset, _hash_arrays


def _dataset(n: int) -> Dataset:
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return Dataset({"x": x}, None, _hash_arrays({"x": x}, None))


def test_equal_batches_never_leave_a_short_last_batch() -> None:
    for n, asked in [(40, 8), (50, 20), (37, 16), (200, 20)]:
        sizes = {len(b["x"]) for b in _dataset(n).equal_batches(asked)}
        assert len(sizes) == 1 and sizes.pop() <= asked
        assert sum(len(b["x"]) for b in _dataset(n).equal_batches(asked)) == n


def test_hash_follows_content_and_size() -> None:
    assert _dataset(10).sha256 == _dataset(10).sha256
    assert _dataset(10).sha256 != _dataset(11).sha256
    assert _dataset(10).head(5).sha256 == _dataset(5).sha256
