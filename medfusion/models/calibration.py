"""Temperature scaling (Guo et al., 2017): one scalar ``T`` dividing every logit, fitted on validation.

``T > 1`` softens over-confident predictions. It does not change the ranking of studies, so AUROC is
unchanged; it lowers the negative log-likelihood and usually the ECE. The fitted ``T`` is stored with
the model and applied at inference (:func:`apply_temperature`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: Fitted temperatures are clamped to this range.
T_MIN, T_MAX = 0.05, 20.0


def _masked_nll(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary negative log-likelihood of ``logits / temperature`` over known targets (NaN = unknown)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    return float(_masked_nll(z / temperature, y, ~torch.isnan(y)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> float:
    """Fit ``T`` minimising the NLL of ``sigmoid(logits / T)`` with L-BFGS.

    Args:
        logits: (N, L) validation logits.
        targets: (N, L) 1/0 with NaN for unknown.
        max_iter: L-BFGS iterations.

    Returns:
        ``T`` in [:data:`T_MIN`, :data:`T_MAX`]; 1.0 when no target is known.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    known = ~torch.isnan(y)
    if not known.any():
        log.warning("no known validation targets: temperature left at 1.0")
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # optimise log T so T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _masked_nll(z / log_t.exp(), y, known)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.exp().item())
    if not np.isfinite(t):
        log.warning("temperature fit diverged: temperature left at 1.0")
        return 1.0
    return float(np.clip(t, T_MIN, T_MAX))


def apply_temperature(logits: np.ndarray | torch.Tensor, temperature: float) -> np.ndarray:
    """Probabilities ``sigmoid(logits / temperature)`` as a float64 array."""
    z = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits.detach().cpu())
    return torch.sigmoid(z.double() / temperature).numpy()
