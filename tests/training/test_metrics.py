"""Metrics against sklearn, ECE, threshold tuning and calibration of over-confident logits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medfusion.metrics import compute_metrics, evaluate, expected_calibration_error, tune_thresholds
from medfusion.models.calibration import Calibration, fit_calibration, nll

LABELS = ["a", "b", "c"]


def _data(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n, 3)).astype(float)
    probs = np.clip(0.3 * targets + rng.uniform(0, 0.7, size=(n, 3)), 0, 1)
    targets[rng.uniform(size=(n, 3)) < 0.1] = np.nan  # unknown labels
    return probs, targets


def test_per_label_and_macro_match_sklearn() -> None:
    probs, targets = _data()
    cuts = [0.4, 0.5, 0.6]
    metrics = compute_metrics(probs, targets, LABELS, cuts)
    aurocs = []
    for j, name in enumerate(LABELS):
        keep = ~np.isnan(targets[:, j])
        y, p = targets[keep, j], probs[keep, j]
        assert metrics[f"auroc_{name}"] == pytest.approx(roc_auc_score(y, p))
        assert metrics[f"auprc_{name}"] == pytest.approx(average_precision_score(y, p))
        assert metrics[f"f1_{name}"] == pytest.approx(f1_score(y, p >= cuts[j]))
        aurocs.append(roc_auc_score(y, p))
    assert metrics["macro_auroc"] == pytest.approx(np.mean(aurocs))


def test_single_class_labels_are_skipped_with_a_reason() -> None:
    probs, targets = _data()
    targets[:, 1] = np.where(np.isnan(targets[:, 1]), np.nan, 0.0)
    targets[:, 2] = np.nan
    report = evaluate(probs, targets, LABELS)
    assert "only negatives" in report.skipped["b"]
    assert report.skipped["c"] == "no known targets"
    assert "auroc_b" not in report.metrics and "auroc_c" not in report.metrics
    assert report.metrics["macro_auroc"] == pytest.approx(report.metrics["auroc_a"])
    all_unknown = evaluate(probs, np.full_like(targets, np.nan), LABELS)
    assert np.isnan(all_unknown.metrics["macro_auroc"]) and np.isnan(all_unknown.metrics["ece"])


def test_ece_is_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.shape) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.01
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(overconfident, y) > 0.2
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0  # p = 1 lands in the top bin


def test_thresholds_maximise_validation_f1() -> None:
    probs, targets = _data(2)
    cuts = tune_thresholds(probs, targets)
    for j in range(3):
        keep = ~np.isnan(targets[:, j])
        y, p = targets[keep, j] == 1, probs[keep, j]
        predicted = p[None, :] >= np.unique(p)[:, None]  # (cuts, N): every distinct cut, brute force
        tp, fp, fn = (predicted & y).sum(1), (predicted & ~y).sum(1), (~predicted & y).sum(1)
        best = (2 * tp / (2 * tp + fp + fn)).max()
        assert f1_score(y, p >= cuts[j]) == pytest.approx(best)
        above, below = p[p >= cuts[j]].min(), p[p < cuts[j]].max()
        assert cuts[j] == pytest.approx((above + below) / 2) and below < cuts[j] < above  # between two studies
    targets[:, 0] = 1.0
    assert tune_thresholds(probs, targets)[0] == 0.5  # unscorable label: default threshold


def test_calibration_fixes_overconfident_logits() -> None:
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0, 1.5, size=(2000, 3))
    targets = (rng.uniform(size=true_logits.shape) < 1 / (1 + np.exp(-true_logits))).astype(float)
    targets[:50, 0] = np.nan
    overconfident = 4.0 * true_logits
    calibration = fit_calibration(overconfident, targets)
    assert calibration.scale == pytest.approx((0.25,) * 3, rel=0.2)
    assert calibration.bias == pytest.approx((0.0,) * 3, abs=0.2)
    assert nll(overconfident, targets, calibration) < nll(overconfident, targets) - 0.1
    before = expected_calibration_error(Calibration.identity(3).probabilities(overconfident), targets)
    after = expected_calibration_error(calibration.probabilities(overconfident), targets)
    assert after < 0.05 < before
    # ranking (AUROC) unchanged
    keep = ~np.isnan(targets[:, 0])
    assert roc_auc_score(targets[keep, 0], calibration.probabilities(overconfident)[keep, 0]) == pytest.approx(
        roc_auc_score(targets[keep, 0], overconfident[keep, 0])
    )
    assert fit_calibration(overconfident, np.full_like(targets, np.nan)) == Calibration.identity(3)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"must both be \(N, 3\)"):
        evaluate(np.zeros((4, 2)), np.zeros((4, 2)), LABELS)
