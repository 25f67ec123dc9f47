"""Stacking: a per-label convex combination of the fused logits and each modality's own logits.

A fused model can score below its best single modality when one modality is uninformative or lets
the fused head overfit. After the branches are trained, :func:`fit_stacking` chooses, per label, weights
``w = (w_fused, w_image, w_text)`` (non-negative, sum 1) on the validation split, so the final logit is::

    logit_l = w_fused,l * fused_l + w_image,l * image_l + w_text,l * text_l

``image_l``/``text_l`` are the modality heads' own logits (the affine head on each modality's slot,
trained by ``fusion.aux_loss_weight``). A sample without modality ``m`` moves ``w_m`` onto the fused
logit (which already ignores the absent modality), so a missing input never reads a branch that saw
only the learned *missing* embedding.

Choice: every point of a simplex grid (step :data:`GRID_STEP`) is scored by the validation
cross-entropy of a Platt-rescaled combination (``a * s + b``, with ``s`` the standardised combined
logit, ``a >= 0`` and a small ridge on ``a``: only how well the combination *ranks and separates*
counts, not its scale; a combination that ranks backwards scores as the base rate, since the weights
cannot flip it), plus a simplicity prior ``prior * (1 - w_fused)`` toward the fused head. The grid minimum
overfits a small validation split: with one modality pure noise, a few hundred studies still find a
blend that gives the noise branch some weight. So the choice follows the *one-standard-error rule*
(Breiman et al., CART): every grid point whose score is within one standard error of the minimum
(the paired standard error of the per-study cross-entropy difference to the minimum) is as good as the
minimum on this evidence, and among those the *sparsest* combination (fewest non-zero weights: a single
candidate before a blend of two before all three) with the lowest score wins; ties go to the fused head.
A blend survives only where its gain over every simpler combination is larger than the validation
noise. The weights, each candidate's validation AUROC and cross-entropy, and the standard error the
choice used are stored in the model card (:class:`~medfusion.models.card.Stacking`, logged to MLflow)
and applied inside :class:`~medfusion.models.model.MedFusionModel`, so training, inference, the pyfunc,
scoring and explanations use the same logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medfusion.models.card import Stacking

#: Candidate order of the weights: the fused head, then the modalities (sorted).
CANDIDATES = ("fused", "image", "text")
#: Spacing of the simplex grid.
GRID_STEP = 0.1
#: Validation cross-entropy (nats per study) a weight of 1 away from the fused head must buy.
DEFAULT_PRIOR = 0.01
_RIDGE = 1e-2
_NEWTON_STEPS = 25
_LINE_SEARCH_HALVINGS = 30


def simplex_grid(step: float = GRID_STEP, k: int = len(CANDIDATES)) -> np.ndarray:
    """(G, k) weight vectors on the simplex, multiples of ``step``; row 0 is ``(1, 0, ..., 0)``."""
    n = round(1 / step)
    rows = [c for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n]
    rows.sort(key=lambda c: (-c[0], c))
    return np.asarray(rows, dtype=np.float64) / n


def combine(
    weights: np.ndarray | torch.Tensor,
    fused: torch.Tensor,
    modality: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Apply stacking weights.

    Args:
        weights: (L, K) weights in :data:`CANDIDATES` order.
        fused: (B, L) fused logits.
        modality: Modality -> (B, L) its own logits.
        present: Modality -> (B,) bool, the sample has it.

    Returns:
        ``(logits (B, L), effective weights: candidate -> (B, L))``; an absent modality's weight is on
        ``fused``.
    """
    w = torch.as_tensor(weights, dtype=fused.dtype, device=fused.device)  # (L, K)
    w_fused = w[:, 0].expand_as(fused).clone()  # (B, L)
    out: dict[str, torch.Tensor] = {}
    logits = torch.zeros_like(fused)
    for k, m in enumerate(CANDIDATES[1:], start=1):
        if m not in modality:
            continue
        here = present[m].to(fused.device)[:, None]  # (B, 1)
        w_m = torch.where(here, w[:, k].expand_as(fused), torch.zeros_like(fused))  # (B, L)
        w_fused = w_fused + torch.where(here, torch.zeros_like(fused), w[:, k].expand_as(fused))
        logits = logits + w_m * modality[m].to(fused.dtype)
        out[m] = w_m
    out["fused"] = w_fused
    return logits + w_fused * fused, out


def _auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def _platt_objective(a: np.ndarray, b: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(G,) mean cross-entropy of ``sigmoid(a * s + b)`` per row plus the ridge ``0.5 * ridge * a**2``."""
    z = a[:, None] * s + b[:, None]
    return (np.logaddexp(0, z) - y * z).mean(1) + 0.5 * _RIDGE * a**2


def _platt_ce(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(G, n) per-study cross-entropy of ``sigmoid(a * s_g + b)`` fitted per row, with ``a >= 0``.

    The ridge term ``0.5 * ridge * a**2`` is added to every study's loss, so the row mean is the
    penalised objective. Newton steps with a backtracking line search (an undamped step overshoots on
    logits with outliers and diverges to a cross-entropy of millions), from the base rate (``a = 0``).
    ``a`` is constrained to be non-negative: stacking applies non-negative weights, so a combination
    that ranks the studies backwards must score as uninformative (the base-rate entropy), not as the
    flipped ranking it would take a negative weight to use. The objective is convex, so where the
    unconstrained optimum has ``a < 0`` the constrained one is ``a = 0`` with ``b`` the base-rate logit.

    Args:
        s: (G, n) standardised combined logits.
        y: (n,) 0/1 targets.
    """
    g = s.shape[0]
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    base = np.log(rate / (1 - rate))
    a, b = np.zeros(g), np.full(g, base)
    f = _platt_objective(a, b, s, y)
    for _ in range(_NEWTON_STEPS):
        z = a[:, None] * s + b[:, None]
        p = 0.5 * (1 + np.tanh(0.5 * z))  # the sigmoid, without overflow
        r = p - y  # (G, n)
        v = p * (1 - p) + 1e-9
        g_a, g_b = (r * s).mean(1) + _RIDGE * a, r.mean(1)
        h_aa, h_ab, h_bb = (v * s * s).mean(1) + _RIDGE, (v * s).mean(1), v.mean(1)
        det = h_aa * h_bb - h_ab**2  # >= ridge * h_bb > 0 (Cauchy-Schwarz)
        d_a = -(h_bb * g_a - h_ab * g_b) / det
        d_b = -(h_aa * g_b - h_ab * g_a) / det
        t = np.ones(g)
        for _ in range(_LINE_SEARCH_HALVINGS):
            f_new = _platt_objective(a + t * d_a, b + t * d_b, s, y)
            worse = ~(f_new <= f)
            if not worse.any():
                break
            t[worse] *= 0.5
        t[worse] = 0.0  # no decrease found: stay
        a, b = a + t * d_a, b + t * d_b
        f = np.minimum(f, f_new)
    backwards = a < 0
    a[backwards], b[backwards] = 0.0, base
    z = a[:, None] * s + b[:, None]
    return np.logaddexp(0, z) - y * z + 0.5 * _RIDGE * a[:, None] ** 2


@dataclass(frozen=True)
class Choice:
    """One label's choice among the grid points.

    Attributes:
        index: The chosen grid row.
        score: (G,) validation score of every grid point (cross-entropy + simplicity prior).
        se: Standard error of the chosen point's score difference to the minimum (0 at the minimum).
    """

    index: int
    score: np.ndarray
    se: float


def select(grid: np.ndarray, cands: np.ndarray, y: np.ndarray, prior: float = DEFAULT_PRIOR) -> Choice:
    """The one-standard-error choice of a combination for one label (see the module docstring).

    Args:
        grid: (G, K) weights, row 0 the fused head alone.
        cands: (n, K) the candidates' validation logits.
        y: (n,) 0/1 targets, both classes present.
        prior: Score added per unit of weight off the fused head.

    Returns:
        The :class:`Choice`.
    """
    s = grid @ cands.T  # (G, n)
    s = (s - s.mean(1, keepdims=True)) / np.maximum(s.std(1, keepdims=True), 1e-9)
    per_study = _platt_ce(s, y) + prior * (1 - grid[:, :1])  # (G, n)
    score = per_study.mean(1)
    best = int(np.argmin(score))
    diff = per_study - per_study[best]  # (G, n) paired with the minimum
    n = len(y)
    se = diff.std(1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(grid))
    eligible = np.flatnonzero(score - score[best] <= se + 1e-12)
    sparsity = (grid[eligible] > 0).sum(1)
    simplest = eligible[sparsity == sparsity.min()]
    index = int(simplest[np.argmin(score[simplest])])  # first minimum: grid order puts the fused head first
    return Choice(index=index, score=score, se=float(se[index]))


def fit_stacking(
    fused: np.ndarray,
    modality: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    targets: np.ndarray,
    labels: Sequence[str],
    *,
    prior: float = DEFAULT_PRIOR,
    step: float = GRID_STEP,
) -> Stacking:
    """Fit per-label stacking weights on validation logits (see the module docstring).

    Args:
        fused: (N, L) fused logits.
        modality: ``image`` and ``text`` -> (N, L) their own logits.
        present: Modality -> (N,) bool.
        targets: (N, L) 1/0, NaN unknown.
        labels: L names.
        prior: Cross-entropy penalty per unit of weight moved off the fused head.
        step: Simplex grid spacing.

    Returns:
        The :class:`~medfusion.models.card.Stacking` with the weights, each candidate's (and the chosen
        combination's) validation AUROC and score per label, the grid minimum's score and the standard
        error the choice used (None where a label cannot be scored).
    """
    grid = simplex_grid(step)  # (G, K)
    n_labels = len(labels)
    t = {m: torch.as_tensor(v, dtype=torch.float64) for m, v in modality.items()}
    here = {m: torch.as_tensor(v, dtype=torch.bool) for m, v in present.items()}
    fused_t = torch.as_tensor(fused, dtype=torch.float64)
    weights = np.zeros((n_labels, len(CANDIDATES)))
    weights[:, 0] = 1.0
    auroc: dict[str, list[float | None]] = {c: [] for c in (*CANDIDATES, "stacked")}
    loss: dict[str, list[float | None]] = {c: [] for c in (*CANDIDATES, "stacked", "minimum")}
    se: list[float | None] = []
    singles = {c: combine(np.tile(np.eye(len(CANDIDATES))[k], (n_labels, 1)), fused_t, t, here)[0].numpy()
               for k, c in enumerate(CANDIDATES)}  # fmt: skip
    one_hot = [next(g for g in range(len(grid)) if grid[g, k] == 1) for k in range(len(CANDIDATES))]
    for j in range(n_labels):
        known = ~np.isnan(targets[:, j])
        y = targets[known, j]
        cands = np.stack([singles[c][known, j] for c in CANDIDATES], axis=1)  # (n, K)
        for c in CANDIDATES:
            auroc[c].append(_auroc(y, singles[c][known, j]))
        if auroc["fused"][j] is None:
            for c in loss:
                loss[c].append(None)
            se.append(None)
            continue
        choice = select(grid, cands, y, prior)
        weights[j] = grid[choice.index]
        for k, c in enumerate(CANDIDATES):
            loss[c].append(round(float(choice.score[one_hot[k]]), 6))
        loss["stacked"].append(round(float(choice.score[choice.index]), 6))
        loss["minimum"].append(round(float(choice.score.min()), 6))
        se.append(round(choice.se, 6))
    stacked, _ = combine(weights, fused_t, t, here)
    for j in range(n_labels):
        known = ~np.isnan(targets[:, j])
        auroc["stacked"].append(_auroc(targets[known, j], stacked.numpy()[known, j]))
    return Stacking(
        weights=tuple(tuple(round(float(x), 6) for x in row) for row in weights),
        prior=prior,
        val_auroc={c: tuple(v) for c, v in auroc.items()},
        val_loss={c: tuple(v) for c, v in loss.items()},
        val_loss_se=tuple(se),
    )
