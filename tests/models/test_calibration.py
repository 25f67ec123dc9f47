"""Per-label Platt scaling shrunk toward a shared temperature (medfusion.models.calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medfusion.metrics import expected_calibration_error
from medfusion.models.calibration import SCALE_MAX, Calibration, fit_calibration, nll


def _simulate(rng: np.random.Generator, n: int, heads: list) -> tuple[np.ndarray, np.ndarray]:
    """Targets drawn from a calibrated model ``sigmoid(true)``, and each label's logits ``head(true)``."""
    true = rng.normal(0.0, 2.0, size=(n, len(heads)))  # (N, L) calibrated logits
    targets = (rng.uniform(size=true.shape) < 1 / (1 + np.exp(-true))).astype(float)
    logits = np.stack([head(true[:, j]) for j, head in enumerate(heads)], axis=1)
    return logits, targets


def _ece(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    return [expected_calibration_error(probs[:, j], targets[:, j]) for j in range(probs.shape[1])]


def test_per_label_platt_calibrates_heads_with_different_scales_and_offsets() -> None:
    """Label a: 4x over-confident; label b: 0.3x and offset -2. One temperature cannot fit both."""
    rng = np.random.default_rng(0)
    heads = [lambda t: 4.0 * t, lambda t: 0.3 * t - 2.0]
    val_z, val_y = _simulate(rng, 2000, heads)
    test_z, test_y = _simulate(rng, 2000, heads)  # scored on fresh studies
    fitted = fit_calibration(val_z, val_y)
    assert fitted.scale == pytest.approx((0.25, 1 / 0.3), rel=0.15)
    assert fitted.bias[1] == pytest.approx(2.0 / 0.3, rel=0.15)

    per_label = _ece(fitted.probabilities(test_z), test_y)
    # the best single temperature for both labels: the shared fit with no per-label freedom
    t_grid = np.exp(np.linspace(np.log(0.05), np.log(20), 400))
    t_best = min(t_grid, key=lambda t: nll(val_z / t, val_y))
    shared = _ece(Calibration.from_temperature(t_best, 2).probabilities(test_z), test_y)
    assert max(per_label) < 0.05  # sampling noise of a calibrated model's ECE at n = 2000 is ~0.02
    assert max(shared) > 0.15
    for j in range(2):  # a positive scale per label: each label's ranking is untouched
        assert roc_auc_score(test_y[:, j], fitted.probabilities(test_z)[:, j]) == roc_auc_score(
            test_y[:, j], test_z[:, j]
        )


def test_a_label_with_few_targets_far_from_zero_is_still_calibrated() -> None:
    """Centring: a compressed head whose logits sit around -4 needs scale 4 and bias 16, and 150 studies get it."""
    rng = np.random.default_rng(1)
    heads = [lambda t: t, lambda t: 0.25 * t - 4.0]
    val_z, val_y = _simulate(rng, 150, heads)
    test_z, test_y = _simulate(rng, 5000, heads)
    fitted = fit_calibration(val_z, val_y)
    # uncentred (the scale pivoting at z = 0), the bias prior holds the scale near 1.2 and label 1's ECE
    # near 0.15 (seeds 1-7); centred, scales 2.9-5.0 and ECE <= 0.06
    assert 2.5 < fitted.scale[1] < 6.0
    assert max(_ece(fitted.probabilities(test_z), test_y)) < 0.08


def test_a_label_with_no_known_target_gets_the_shared_temperature_and_no_bias() -> None:
    rng = np.random.default_rng(2)
    z, y = _simulate(rng, 1000, [lambda t: 4.0 * t, lambda t: t + 3.0])
    y[:, 1] = np.nan
    fitted = fit_calibration(z, y)
    shared = fitted.scale[1]
    assert fitted.bias[1] == 0.0 and shared == pytest.approx(0.25, rel=0.15)
    for other in (0.97 * shared, 1.03 * shared):  # the scale minimising the NLL of the one known label
        assert nll(z[:, :1] * shared, y[:, :1]) < nll(z[:, :1] * other, y[:, :1])
    assert fit_calibration(z, np.full_like(y, np.nan)) == Calibration.identity(2)


def test_separable_and_one_class_labels_stay_finite() -> None:
    """Validation that a huge scale or bias would fit perfectly: the prior keeps both finite."""
    rng = np.random.default_rng(3)
    n = 400
    y = np.stack([rng.integers(0, 2, n), np.ones(n), rng.integers(0, 2, n)], axis=1).astype(float)
    z = np.stack(
        [
            np.where(y[:, 0] == 1, 1.0, -1.0) + rng.uniform(0, 2, n) * np.sign(y[:, 0] - 0.5),
            rng.normal(size=n),
            rng.normal(size=n),
        ],
        axis=1,
    )  # label 0 perfectly separable at 0, label 1 only positives, label 2 noise
    fitted = fit_calibration(z, y)
    assert all(np.isfinite(fitted.scale)) and all(np.isfinite(fitted.bias))
    assert 1.0 < fitted.scale[0] <= SCALE_MAX
    assert fitted.bias[1] > 1.0  # only positives: probabilities lean to 1, but not to 1.0 exactly
    probs = fitted.probabilities(z)
    assert np.all((probs > 0) & (probs < 1))
    assert roc_auc_score(y[:, 0], probs[:, 0]) == 1.0


def test_logits_inverts_probabilities_for_numpy_and_torch() -> None:
    calibration = Calibration(scale=(0.3, 1.0, 4.0), bias=(-2.0, 0.0, 1.5))
    z = np.random.default_rng(4).uniform(-4, 4, size=(50, 3))  # calibrated logits within +-17.5
    assert calibration.logits(calibration.probabilities(z)) == pytest.approx(z, abs=1e-6)
    as_torch = calibration.probabilities(torch.tensor(z, dtype=torch.float32))
    assert as_torch.dtype == np.float64 and as_torch == pytest.approx(calibration.probabilities(z), abs=1e-6)
    scale, bias = (
        torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64),
        torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64),
    )
    expected = torch.sigmoid(torch.tensor(z) * scale + bias)
    assert calibration.probabilities(z) == pytest.approx(expected.numpy(), abs=1e-12)
    assert Calibration.identity(3).probabilities(np.array([[-800.0, 0.0, 800.0]])).tolist() == [[0.0, 0.5, 1.0]]
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3\) values"):
        calibration.probabilities(np.zeros((2, 4)))


@pytest.mark.parametrize(
    ("scale", "bias", "message"),
    [
        ((1.0, 0.0), (0.0, 0.0), "scales must be positive and finite"),
        ((1.0, float("inf")), (0.0, 0.0), "scales must be positive and finite"),
        ((1.0, 1.0), (0.0, float("nan")), "biases must be finite"),
        ((1.0, 1.0), (0.0,), "2 calibration scales but 1 biases"),
    ],
)
def test_invalid_calibrations_are_rejected(scale: tuple, bias: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration(scale=scale, bias=bias)
