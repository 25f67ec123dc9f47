"""The randomisation check's rank correlation (the check itself runs in ``test_saliency.py`` on a trained detector)."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.explain.randomisation import rankdata, spearman, ssim


def test_spearman_averages_ties_and_matches_a_hand_computed_value() -> None:
    assert rankdata(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    # ranks (1, 2, 3, 4) vs (1, 3, 2, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert np.isnan(spearman(np.zeros(4), np.arange(4.0)))


def test_ssim_is_one_for_equal_maps_and_lower_for_unrelated_ones() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((32, 32)).astype(np.float32)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, rng.random((32, 32)).astype(np.float32)) < 0.2
