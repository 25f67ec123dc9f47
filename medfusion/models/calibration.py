"""Per-label Platt scaling, shrunk toward one shared temperature: the model's calibration.

A label's probability is ``p_l = sigmoid(scale_l * z_l + bias_l)`` with ``scale_l > 0``, so each
label's ranking of studies (its AUROC) is unchanged. One scalar temperature (Guo et al., 2017) is not
enough once stacking (:mod:`medfusion.models.stacking`) has picked, per label, a different blend of the
fused and modality heads: different labels' logits then come from heads with different scales *and*
offsets, and no single ``T`` calibrates them all (nor can any temperature remove an offset).

:func:`fit_calibration` fits on validation logits (after stacking):

1. one shared temperature ``T`` over every known entry (L-BFGS on ``log T``), as the prior's centre;
2. per label, ``(log scale_l, offset_l)`` jointly by L-BFGS in the label-centred form
   ``scale_l * (z_l - m_l) + m_l / T + offset_l`` (``m_l``: the label's mean validation logit), minimising
   the summed binary NLL over known entries plus a Gaussian prior
   ``log scale_l ~ N(log(1/T), LOG_SCALE_SD^2)``, ``offset_l ~ N(0, BIAS_SD^2)`` (a MAP estimate). The
   stored ``bias_l`` is ``offset_l + m_l / T - scale_l * m_l``.

At the prior's centre the map is ``z / T``. Centring makes the scale pivot where the label's logits
are, not at ``z = 0``: after stacking a label's logits may sit far from 0 (a head with its own offset),
and there an uncentred scale change moves every probability, so the scale and the bias are strongly
correlated and independent priors on them would penalise a needed scale as if it were a large offset.

The prior keeps a label whose validation split is separable, or has one class, finite, and pulls a label
with few known targets toward the shared temperature; a label with no known target gets exactly
``scale = 1/T`` and ``bias = 0``. The fitted :class:`Calibration` is stored in the model card and
applied at inference (:meth:`Calibration.probabilities`).

Only numpy and pydantic at import time (the model card imports this module); torch is imported by the
fitting functions.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: The shared temperature is clamped to this range.
T_MIN, T_MAX = 0.05, 20.0
#: Per-label scales are clamped to this range (the reciprocal of the temperature range).
SCALE_MIN, SCALE_MAX = 1 / T_MAX, 1 / T_MIN
#: Prior SD of ``log scale_l`` around ``log(1/T)``, in natural-log units: a label's scale may differ from
#: the shared one by a factor ``e`` at one SD. A weak prior on the logit *scale*, not fitted to any model.
LOG_SCALE_SD = 1.0
#: Prior SD of the offset at the label's mean logit around 0 (``z / T`` there), in logit units: an offset
#: of 1.5 (odds x4.5) is one SD. A weak prior on the logit *offset*, not fitted to any model.
BIAS_SD = 1.5


def _finite_array(x: Any) -> np.ndarray:
    """``x`` (numpy array, torch tensor or sequence) as a float64 numpy array."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Calibration(BaseModel):
    """Per-label affine map of the logits before the sigmoid: ``p_l = sigmoid(scale_l * z_l + bias_l)``.

    Attributes:
        scale: (L,) positive finite scales (``1/T`` for a temperature ``T``).
        bias: (L,) finite biases, in logit units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: tuple[float, ...] = Field(min_length=1)
    bias: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> Calibration:
        if len(self.scale) != len(self.bias):
            raise ValueError(f"{len(self.scale)} calibration scales but {len(self.bias)} biases")
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"calibration scales must be positive and finite, got {self.scale}")
        if not all(math.isfinite(b) for b in self.bias):
            raise ValueError(f"calibration biases must be finite, got {self.bias}")
        return self

    @classmethod
    def identity(cls, n_labels: int) -> Calibration:
        """Scale 1 and bias 0 for ``n_labels`` labels: plain ``sigmoid(z)``."""
        return cls(scale=(1.0,) * n_labels, bias=(0.0,) * n_labels)

    @classmethod
    def from_temperature(cls, temperature: float, n_labels: int) -> Calibration:
        """One temperature for every label: scale ``1/T``, bias 0 (model cards of format 1 and 2)."""
        t = float(temperature)
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        return cls(scale=(1 / t,) * n_labels, bias=(0.0,) * n_labels)

    @property
    def n_labels(self) -> int:
        """Number of labels ``L``."""
        return len(self.scale)

    def _params(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.ndim == 0 or x.shape[-1] != self.n_labels:
            raise ValueError(f"expected (..., {self.n_labels}) values, got shape {x.shape}")
        return np.asarray(self.scale, dtype=np.float64), np.asarray(self.bias, dtype=np.float64)

    def probabilities(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities.

        Args:
            logits: (B, L) logits (numpy array or torch tensor; any ``(..., L)`` shape works).

        Returns:
            (B, L) float64 ``sigmoid(scale * logits + bias)``.

        Raises:
            ValueError: The last dimension is not ``L``.
        """
        z = _finite_array(logits)
        scale, bias = self._params(z)
        return _sigmoid(z * scale + bias)

    def logits(self, probabilities: Any) -> np.ndarray:
        """The inverse of :meth:`probabilities`: the model's logits behind calibrated probabilities.

        Args:
            probabilities: (B, L) calibrated probabilities (0 and 1 map to -inf and +inf).

        Returns:
            (B, L) float64 ``(log(p / (1 - p)) - bias) / scale``.

        Raises:
            ValueError: The last dimension is not ``L``.
        """
        p = _finite_array(probabilities)
        scale, bias = self._params(p)
        with np.errstate(divide="ignore"):
            return (np.log(p) - np.log1p(-p) - bias) / scale

    def by_label(self, labels: tuple[str, ...] | list[str]) -> dict[str, dict[str, float]]:
        """Label -> ``{"scale", "bias"}`` (for logs)."""
        return {n: {"scale": s, "bias": b} for n, s, b in zip(labels, self.scale, self.bias, strict=True)}

    def describe(self, labels: tuple[str, ...] | list[str]) -> str:
        """One compact line, e.g. ``"a x1.20+0.31, b x0.45-1.02"`` (scale, then bias)."""
        return ", ".join(f"{n} x{s:.2f}{b:+.2f}" for n, s, b in zip(labels, self.scale, self.bias, strict=True))


def _masked_bce_sum(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, targets.nan_to_num(), reduction="none")
    return (loss * known).sum()


def nll(logits: Any, targets: Any, calibration: Calibration | None = None) -> float:
    """Mean binary negative log-likelihood over known targets (NaN = unknown).

    Args:
        logits: (N, L) logits.
        targets: (N, L) 1/0 with NaN for unknown.
        calibration: Applied to the logits first (None: plain ``sigmoid(logits)``).
    """
    import torch

    z = torch.as_tensor(_finite_array(logits))
    y = torch.as_tensor(_finite_array(targets))
    if calibration is not None:
        z = z * torch.as_tensor(calibration.scale, dtype=z.dtype) + torch.as_tensor(calibration.bias, dtype=z.dtype)
    known = ~torch.isnan(y)
    return float(_masked_bce_sum(z, y, known) / known.sum().clamp(min=1))


def _shared_temperature(z: torch.Tensor, y: torch.Tensor, known: torch.Tensor, max_iter: int) -> float:
    """``T`` minimising the mean NLL of ``sigmoid(z / T)`` over known entries, in [T_MIN, T_MAX]."""
    import torch

    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # optimise log T so T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    n = known.sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _masked_bce_sum(z / log_t.exp(), y, known) / n
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.exp().item())
    if not math.isfinite(t):
        log.warning("shared temperature fit diverged: temperature left at 1.0")
        return 1.0
    return float(np.clip(t, T_MIN, T_MAX))


def fit_calibration(logits: Any, targets: Any, max_iter: int = 500) -> Calibration:
    """Fit per-label Platt scaling shrunk toward a shared temperature (see the module docstring).

    Args:
        logits: (N, L) validation logits (after stacking: the model's final logits).
        targets: (N, L) 1/0 with NaN for unknown.
        max_iter: L-BFGS iterations of each of the two fits.

    Returns:
        The :class:`Calibration`; scales in [:data:`SCALE_MIN`, :data:`SCALE_MAX`]. Identity when no
        target is known; ``scale = 1/T``, ``bias = 0`` for a label with no known target.

    Raises:
        ValueError: ``logits`` and ``targets`` are not the same (N, L) shape.
    """
    import torch

    z = torch.as_tensor(_finite_array(logits))  # (N, L)
    y = torch.as_tensor(_finite_array(targets))  # (N, L)
    if z.ndim != 2 or z.shape != y.shape:
        raise ValueError(f"logits {tuple(z.shape)} and targets {tuple(y.shape)} must be the same (N, L)")
    n_labels = z.shape[1]
    known = ~torch.isnan(y)
    if not known.any():
        log.warning("no known validation targets: calibration left at identity")
        return Calibration.identity(n_labels)
    t = _shared_temperature(z, y, known, max_iter)

    prior = torch.full((n_labels,), -math.log(t), dtype=torch.float64)  # log(1/T)
    centre = (z.nan_to_num() * known).sum(0) / known.sum(0).clamp(min=1)  # (L,) mean known logit m_l
    log_s = prior.clone().requires_grad_(True)  # (L,)
    offset = torch.zeros(n_labels, dtype=torch.float64, requires_grad=True)  # (L,)
    optimizer = torch.optim.LBFGS([log_s, offset], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        data = _masked_bce_sum(log_s.exp() * (z - centre) + centre / t + offset, y, known)
        penalty = 0.5 * (((log_s - prior) / LOG_SCALE_SD) ** 2).sum() + 0.5 * ((offset / BIAS_SD) ** 2).sum()
        loss = data + penalty
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = np.clip(log_s.detach().exp().numpy(), SCALE_MIN, SCALE_MAX)  # (L,)
    m = centre.numpy()
    b = offset.detach().numpy() + m / t - scale * m  # (L,) the same pivot after clamping
    shared = (~known.any(dim=0)).numpy() | ~np.isfinite(scale) | ~np.isfinite(b)
    if (~known.any(dim=0)).numpy().sum() < shared.sum():
        log.warning("per-label calibration diverged for some labels: they keep the shared temperature")
    scale[shared], b[shared] = 1 / t, 0.0  # no evidence (or a failed fit): exactly the shared temperature
    return Calibration(scale=tuple(float(s) for s in scale), bias=tuple(float(v) for v in b))
