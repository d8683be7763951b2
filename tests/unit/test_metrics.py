"""The built-in metrics score what they say: cosine of identical outputs is exactly 1."""

from __future__ import annotations

import numpy as np
import pytest

from quantuna.metrics import BUILTIN_METRICS, cosine, mse, top_k


def test_cosine_of_identical_outputs_is_exactly_one_whatever_their_norm():
    rng = np.random.default_rng(0)
    maps = rng.normal(0, 1, (8, 2, 5, 5)).astype(np.float32)
    maps[:3] = 0.0  # mostly-empty detector maps: all-zero rows
    maps[3] *= 1e-30  # a row of near-zero norm
    assert cosine(maps, maps.copy()) == 1.0


def test_cosine_scores_a_zero_row_against_a_nonzero_row_zero():
    a = np.array([[0.0, 0.0], [1.0, 0.0]])
    b = np.array([[1.0, 2.0], [1.0, 0.0]])
    assert cosine(a, b) == pytest.approx(0.5)  # row 0: 0, row 1: 1


def test_cosine_is_the_mean_row_cosine_and_stays_within_its_bounds():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [-3.0, 0.0]])
    assert cosine(a, b) == pytest.approx((0.0 + 1.0 - 1.0) / 3)
    low, high = BUILTIN_METRICS["cosine"].sample_bounds or (0, 0)
    assert low == -1.0 and high == 1.0


def test_top1_and_mse_are_what_the_readme_says():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top_k(1)(scores, np.array([1, 1, 1])) == pytest.approx(2 / 3)
    assert mse(np.array([1.0, 3.0]), np.array([1.0, 1.0])) == pytest.approx(2.0)
