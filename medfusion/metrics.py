"""Multi-label evaluation: AUROC, AUPRC, F1 at tuned thresholds, expected calibration error.

Targets are ``(N, L)`` arrays of 1/0 with NaN for unknown; unknown entries are left out of every
metric. A label whose known targets hold a single class has no AUROC/AUPRC/F1: it is skipped, with
the reason recorded, and macro averages are over the remaining labels.

Metric names (flat ``dict[str, float]``, ready for MLflow): ``auroc_<label>``, ``auprc_<label>``,
``f1_<label>``, ``ece_<label>``, ``macro_auroc``, ``macro_auprc``, ``macro_f1`` and ``ece`` (all
known entries of all labels pooled).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from medfusion.results import decide

log = logging.getLogger(__name__)

ECE_BINS = 15
DEFAULT_THRESHOLD = 0.5


@dataclass
class EvalReport:
    """Metrics of one evaluation.

    Attributes:
        metrics: Flat metric name -> value (see the module docstring).
        skipped: Label -> why it has no AUROC/AUPRC/F1.
    """

    metrics: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)


def _known(targets: np.ndarray, j: int) -> np.ndarray:
    return ~np.isnan(targets[:, j])


def skip_reason(y: np.ndarray) -> str | None:
    """Why a label's known targets ``y`` cannot be scored, or None when they can."""
    if len(y) == 0:
        return "no known targets"
    positives = int(y.sum())
    if positives == 0:
        return f"only negatives among {len(y)} known targets"
    if positives == len(y):
        return f"only positives among {len(y)} known targets"
    return None


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of binary probabilities: ``sum_b |bin_b| / n * |mean(y in b) - mean(p in b)|``.

    Args:
        probs: Probabilities, any shape.
        targets: Same shape, 1/0 with NaN for unknown (left out).
        n_bins: Equal-width bins over [0, 1].

    Returns:
        The ECE, NaN when no target is known.
    """
    p, y = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    p, y = p[keep], y[keep]
    if len(y) == 0:
        return float("nan")
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.sum() / len(y) * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(ece)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per label, the threshold maximising F1 (predict positive when ``p >= threshold``).

    Args:
        probs: (N, L) probabilities (validation set, temperature-scaled as at inference).
        targets: (N, L) 1/0 with NaN for unknown.

    Returns:
        (L,) thresholds; :data:`DEFAULT_THRESHOLD` for labels that cannot be scored.
    """
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for j in range(probs.shape[1]):
        keep = _known(targets, j)
        y, p = targets[keep, j], probs[keep, j]
        if skip_reason(y) is not None:
            continue
        precision, recall, cuts = precision_recall_curve(y, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)  # (len(cuts),)
        thresholds[j] = float(cuts[int(np.argmax(f1))])
    return thresholds


def evaluate(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float] | np.ndarray | None = None,
    n_bins: int = ECE_BINS,
) -> EvalReport:
    """Per-label and macro metrics.

    Args:
        probs: (N, L) probabilities.
        targets: (N, L) 1/0 with NaN for unknown.
        labels: L names.
        thresholds: (L,) decision thresholds for F1; default 0.5 each.
        n_bins: ECE bins.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if probs.shape != targets.shape or probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} must both be (N, {len(labels)})")
    cuts = np.full(len(labels), DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for j, name in enumerate(labels):
        keep = _known(targets, j)
        y, p = targets[keep, j], probs[keep, j]
        metrics[f"ece_{name}"] = expected_calibration_error(p, y, n_bins)
        reason = skip_reason(y)
        if reason is not None:
            skipped[name] = reason
            continue
        metrics[f"auroc_{name}"] = float(roc_auc_score(y, p))
        metrics[f"auprc_{name}"] = float(average_precision_score(y, p))
        metrics[f"f1_{name}"] = float(f1_score(y, decide(p, cuts[j]).astype(int), zero_division=0))
    for kind in ("auroc", "auprc", "f1"):
        values = [metrics[f"{kind}_{n}"] for n in labels if f"{kind}_{n}" in metrics]
        metrics[f"macro_{kind}"] = float(np.mean(values)) if values else float("nan")
    metrics["ece"] = expected_calibration_error(probs, targets, n_bins)
    if skipped:
        log.debug("labels skipped in evaluation: %s", skipped)
    return EvalReport(metrics=metrics, skipped=skipped)


def compute_metrics(
    probs: np.ndarray, targets: np.ndarray, labels: Sequence[str], thresholds: Sequence[float] | None = None
) -> dict[str, float]:
    """:func:`evaluate`'s metrics only (skipped labels are absent from the per-label keys)."""
    return evaluate(probs, targets, labels, thresholds).metrics


def label_table(metrics: dict[str, float], labels: Sequence[str], thresholds: Sequence[float]) -> str:
    """Per-label AUROC, AUPRC, F1 at the label's threshold and ECE, as aligned text (one row per label).

    Args:
        metrics: :func:`evaluate`'s metrics (``auroc_<label>``...; a skipped label shows ``-``).
        labels: The label names, in row order.
        thresholds: (L,) the thresholds F1 was computed at.

    Returns:
        A header line and one line per label.
    """
    width = max(len("label"), *(len(n) for n in labels))
    lines = [f"{'label':<{width}}  {'AUROC':>6}  {'AUPRC':>6}  {'F1':>6}  {'thr':>5}  {'ECE':>6}"]
    for name, cut in zip(labels, thresholds, strict=True):
        cells = []
        for kind in ("auroc", "auprc", "f1"):
            value = metrics.get(f"{kind}_{name}", float("nan"))
            cells.append(f"{value:6.3f}" if np.isfinite(value) else f"{'-':>6}")
        ece = metrics.get(f"ece_{name}", float("nan"))
        ece_cell = f"{ece:6.3f}" if np.isfinite(ece) else f"{'-':>6}"
        lines.append(f"{name:<{width}}  {'  '.join(cells)}  {float(cut):5.2f}  {ece_cell}")
    return "\n".join(lines)
