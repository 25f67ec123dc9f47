"""Evaluation plots logged with every run: ROC curves, calibration, confusion at thresholds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from medfusion.results import decide


def _valid(y: np.ndarray) -> np.ndarray:
    return ~np.isnan(y)


def roc_figure(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> Figure:
    """One ROC curve per label.

    Args:
        probs: (N, L) predicted probabilities.
        targets: (N, L) 0/1 targets, NaN where unknown.
        labels: L label names.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(labels):
        keep = _valid(targets[:, j])
        y, p = targets[keep, j], probs[keep, j]
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curves (test)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(probs: np.ndarray, targets: np.ndarray, labels: list[str], n_bins: int = 10) -> Figure:
    """Reliability diagram (all labels pooled and per label).

    Args:
        probs: (N, L) predicted probabilities.
        targets: (N, L) 0/1 targets, NaN where unknown.
        labels: L label names.
        n_bins: Equal-width probability bins.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    edges = np.linspace(0, 1, n_bins + 1)
    series = [("all labels", probs[_valid(targets)], targets[_valid(targets)])]
    series += [(n, probs[_valid(targets[:, j]), j], targets[_valid(targets[:, j]), j]) for j, n in enumerate(labels)]
    for name, p, y in series:
        idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
        xs = [p[idx == b].mean() for b in range(n_bins) if np.any(idx == b)]
        ys = [y[idx == b].mean() for b in range(n_bins) if np.any(idx == b)]
        ax.plot(xs, ys, "o-" if name == "all labels" else ".-", lw=2 if name == "all labels" else 0.8, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.set(xlabel="Predicted probability", ylabel="Observed frequency", title="Calibration (test)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(probs: np.ndarray, targets: np.ndarray, labels: list[str], thresholds: list[float]) -> Figure:
    """A 2x2 confusion matrix per label at its decision threshold.

    Args:
        probs: (N, L) predicted probabilities.
        targets: (N, L) 0/1 targets, NaN where unknown.
        labels: L label names.
        thresholds: L decision thresholds.
    """
    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.8), squeeze=False)
    for j, (name, ax) in enumerate(zip(labels, axes[0], strict=True)):
        keep = _valid(targets[:, j])
        y = targets[keep, j].astype(int)
        d = decide(probs[keep, j], thresholds[j]).astype(int)
        matrix = np.array([[np.sum((y == t) & (d == p)) for p in (0, 1)] for t in (0, 1)])
        ax.imshow(matrix, cmap="Blues")
        for (r, c), v in np.ndenumerate(matrix):
            ax.text(c, r, str(v), ha="center", va="center")
        ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="true", title=f"{name}\n@{thresholds[j]:.2f}")
    fig.tight_layout()
    return fig
