"""Multi-label evaluation: AUROC, AUPRC, F1 at tuned thresholds, expected calibration error.

Targets are ``(N, L)`` arrays of 1/0 with NaN for unknown; unknown entries are left out of every
metric. A label whose known targets hold a single class has no AUROC/AUPRC/F1: it is skipped, with
the reason recorded, and macro averages are over the remaining labels.

Metric names (flat ``dict[str, float]``, ready for MLflow): ``auroc_<label>``, ``auprc_<label>``,
``f1_<label>``, ``ece_<label>``, ``macro_auroc``, ``macro_auprc``, ``macro_f1`` and ``ece`` (all
known entries of all labels pooled).

:func:`bootstrap_ci` gives each of them a percentile bootstrap interval, resampling patients (a
patient's studies stay together), vectorised over resamples (:func:`bootstrap_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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

    The threshold lies halfway between the F1-best validation probability and the next lower one, not
    on a validation probability: the validation decisions (and F1) are the same, but no validation
    study's probability sits on the threshold, where rounding noise (1e-8 from a different batch
    composition) flips its decision. Below the lowest validation probability, halfway to 0.

    Args:
        probs: (N, L) probabilities (validation set, calibrated as at inference).
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
        cut = cuts[int(np.argmax(f1))]
        below = p[p < cut]
        thresholds[j] = float((cut + below.max()) / 2 if below.size else cut / 2)
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


# ---------------------------------------------------------------------------------------- bootstrap

BOOTSTRAP_RESAMPLES = 1000
#: Resamples are drawn in chunks of at most this many (resample, study, label) weights (memory bound).
_BOOTSTRAP_CHUNK = 4_000_000


def bootstrap_weights(groups: Sequence[Any] | np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Patient-level bootstrap resamples as per-study weights.

    Each resample draws ``G`` patients with replacement out of the ``G`` in ``groups``; a study's
    weight is how often its patient was drawn, so a patient's studies are always in or out together.

    Args:
        groups: (N,) the patient of each study (any hashable values).
        n_boot: Number of resamples ``B``.
        rng: Random generator.

    Returns:
        (B, N) float64 weights; each row's weights sum to N only on average (patients differ in size).
    """
    _, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)  # (N,) 0..G-1
    n_groups = int(index.max()) + 1 if len(index) else 0
    counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot) if n_groups else None
    return np.zeros((n_boot, 0)) if counts is None else counts[:, index].astype(np.float64)


def _sums_by_value(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B, K) column sums of ``w`` (B, n) over runs of equal ``values`` (n,), ``values`` sorted."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.add.reduceat(w, starts, axis=1)


def _weighted_auroc_auprc(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision (sklearn's definitions, ties grouped) under (B, n) study weights."""
    order = np.argsort(-p, kind="stable")  # descending scores
    p, y, w = p[order], y[order], w[:, order]
    pos = _sums_by_value(w * y, p)  # (B, K) positive weight at each distinct score, descending
    neg = _sums_by_value(w * (1 - y), p)
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        neg_below = n_neg[:, None] - np.cumsum(neg, axis=1)  # negatives strictly below each score
        auroc = (pos * (neg_below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        auprc = (pos / n_pos[:, None] * precision).sum(1)  # sum over thresholds of (R_k - R_k-1) P_k
    undefined = (n_pos == 0) | (n_neg == 0)
    auroc[undefined], auprc[undefined] = np.nan, np.nan
    return auroc, auprc


def _weighted_ece(p: np.ndarray, y: np.ndarray, w: np.ndarray, n_bins: int) -> np.ndarray:
    """(B,) :func:`expected_calibration_error` under (B, n) study weights."""
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    gap = np.zeros((len(p), n_bins))
    gap[np.arange(len(p)), bins] = y - p  # (n, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(w @ gap).sum(1) / w.sum(1)


def bootstrap_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    weights: np.ndarray,
    thresholds: Sequence[float] | np.ndarray | None = None,
    n_bins: int = ECE_BINS,
) -> dict[str, np.ndarray]:
    """:func:`evaluate`'s metrics on each resample, given as study weights (vectorised over resamples).

    Weight ``k`` on a study is the same as ``k`` copies of it, so each row of the result equals
    :func:`evaluate` on the resampled set. A label without both classes in a resample is NaN there
    and left out of that resample's macro averages.

    Args:
        probs: (N, L) probabilities.
        targets: (N, L) 1/0 with NaN for unknown.
        labels: L names.
        weights: (B, N) study weights (:func:`bootstrap_weights`).
        thresholds: (L,) decision thresholds for F1; default 0.5 each.
        n_bins: ECE bins.

    Returns:
        Metric name -> (B,) values, the names of :func:`evaluate`.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    cuts = np.full(len(labels), DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(labels):
        keep = _known(targets, j)
        y, p, w = targets[keep, j], probs[keep, j], weights[:, keep]
        out[f"ece_{name}"] = _weighted_ece(p, y, w, n_bins)
        if skip_reason(y) is not None:
            continue
        out[f"auroc_{name}"], out[f"auprc_{name}"] = _weighted_auroc_auprc(p, y, w)
        pred = decide(p, cuts[j]).astype(np.float64)
        tp, fp, fn = w @ (y * pred), w @ ((1 - y) * pred), w @ (y * (1 - pred))
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1[np.isnan(out[f"auroc_{name}"])] = np.nan  # a single class in this resample: no F1 either
        out[f"f1_{name}"] = f1
    for kind in ("auroc", "auprc", "f1"):
        per_label = [out[f"{kind}_{n}"] for n in labels if f"{kind}_{n}" in out]
        if per_label:
            stacked = np.stack(per_label)  # (L', B)
            valid = ~np.isnan(stacked)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"macro_{kind}"] = np.where(valid, stacked, 0).sum(0) / valid.sum(0)
    known = ~np.isnan(targets)  # the pooled ECE: every known (study, label) entry weighted by its study
    rows = np.nonzero(known)[0]
    out["ece"] = _weighted_ece(probs[known], targets[known], weights[:, rows], n_bins)
    return out


def bootstrap_ci(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[Any] | np.ndarray | None = None,
    thresholds: Sequence[float] | np.ndarray | None = None,
    *,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of :func:`evaluate`'s metrics, resampling patients.

    Studies of one patient are correlated, so resampling studies would make intervals too narrow;
    whole patients are resampled instead (:func:`bootstrap_weights`). Seeded: the same inputs and
    seed give the same intervals.

    Args:
        probs: (N, L) probabilities.
        targets: (N, L) 1/0 with NaN for unknown.
        labels: L names.
        groups: (N,) patient of each study; None treats every study as its own patient.
        thresholds: (L,) decision thresholds for F1 (fixed, as tuned on validation).
        n_boot: Resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        Metric name -> ``(low, high)``; only metrics defined in at least half of the resamples.
    """
    n = len(probs)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    groups = np.arange(n) if groups is None else groups
    step = max(1, _BOOTSTRAP_CHUNK // (n * max(1, len(labels))))
    chunks: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, step):
        weights = bootstrap_weights(groups, min(step, n_boot - start), rng)  # (b, N)
        chunks.append(bootstrap_metrics(probs, targets, labels, weights, thresholds))
    draws = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    tail = 100 * (1 - level) / 2
    out: dict[str, tuple[float, float]] = {}
    for name, values in draws.items():
        finite = values[np.isfinite(values)]
        if len(finite) >= n_boot / 2:
            low, high = np.percentile(finite, [tail, 100 - tail])
            out[name] = (float(low), float(high))
    return out


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


def paired_bootstrap_difference(
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    groups: Sequence[Any] | np.ndarray,
    *,
    metric: str = "macro_auroc",
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``metric`` of model A minus model B on the same studies, with a 95 % patient-level bootstrap interval.

    Both models are scored on the same resamples (paired), so what the studies have in common cancels.

    Args:
        probs_a: (N, L) probabilities of model A.
        probs_b: (N, L) probabilities of model B, the same studies in the same order.
        targets: (N, L) 1/0 with NaN for unknown.
        labels: L names.
        groups: (N,) the patient of each study.
        metric: A key of :func:`evaluate`'s metrics (e.g. ``macro_auroc``).
        n_boot: Resamples.
        seed: Resampling seed.

    Returns:
        ``(difference, low, high)``; NaN bounds where no resample scores the metric.
    """
    point = evaluate(probs_a, targets, labels).metrics[metric] - evaluate(probs_b, targets, labels).metrics[metric]
    weights = bootstrap_weights(groups, n_boot, np.random.default_rng(seed))  # (B, N), shared by both models
    draws = (
        bootstrap_metrics(probs_a, targets, labels, weights)[metric]
        - bootstrap_metrics(probs_b, targets, labels, weights)[metric]
    )  # (B,)
    if not np.isfinite(draws).any():
        return float(point), float("nan"), float("nan")
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)
