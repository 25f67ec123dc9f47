"""Fusion strategies behind one contract: ``forward(embeddings) -> FusionOutput``.

``embeddings`` maps modality name (``"image"``, ``"text"``; iterated in sorted order) to a
:class:`ModalityEmbedding`. Every strategy produces *slots* of width ``hidden_dim`` (a per-modality
branch, and/or a joint representation) mixed by per-sample softmax weights; ``fused`` is their
weighted sum. The model's head is affine, so ``head(fused) == sum_k w_k * head(slot_k)``: the logits
are exactly the weighted average of the slots' own logits, and ``head(modality_features[m])`` are
modality ``m``'s own (late) logits.

Missing modalities (no report, no image: ``present`` False for that sample) are handled explicitly:

* a modality's pooled embedding is replaced by a learned *missing* embedding before its branch, and
  in cross-attention its token sequence by one learned *missing* token (the other positions masked),
  so no attention row is ever fully masked and nothing becomes NaN;
* the mixing weight of an absent modality's slot (and of the joint slot of ``hybrid`` when either
  modality is absent) is masked to 0 before the softmax; if every slot is masked (no modality at
  all) the weights fall back to the unmasked softmax, so the output is the model's prior.

Training with ``fusion.modality_dropout`` hides one modality at random so these paths are learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from medfusion.config import FusionConfig
from medfusion.models.registry import register_fusion

IMAGE, TEXT = "image", "text"


@dataclass
class ModalityEmbedding:
    """One modality's encoder output, ready for fusion.

    Attributes:
        pooled: (B, D) pooled embedding.
        tokens: (B, N, D) token sequence (image positions or text tokens).
        mask: (B, N) bool, True for real tokens (False = padding, never attended).
        present: (B,) bool, False where the sample has no such input (empty report, no image).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    present: torch.Tensor


@dataclass
class FusionOutput:
    """Output of a fusion module.

    Attributes:
        fused: (B, H) weighted sum of the slots, the head's input.
        modality_features: Modality -> (B, H) that modality's own slot (empty for ``concat``).
        weights: Slot name (``joint``, ``image``, ``text``) -> (B,) mixing weight; sums to 1 per sample.
        attentions: (B, heads, T_text, N_img) text->image cross-attention weights (``hybrid`` only);
            rows of padded text positions, and samples missing either modality, are zero.
    """

    fused: torch.Tensor
    modality_features: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    attentions: torch.Tensor | None = None


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 with masked entries at 0; rows with nothing unmasked use the plain softmax.

    Args:
        scores: (B, K) logits.
        mask: (B, K) bool, True where the entry may receive weight.
    """
    mask = mask | ~mask.any(dim=1, keepdim=True)
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=1)


def fill_missing(pooled: torch.Tensor, present: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """(B, D) pooled embeddings with absent samples' rows replaced by the learned ``missing`` (D,)."""
    return torch.where(present[:, None], pooled, missing.to(pooled.dtype).expand_as(pooled))


def branch(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """Per-modality projection (B, in_dim) -> (B, hidden_dim)."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout))


class Fusion(nn.Module):
    """Base class: holds the config, the modality widths and one learned missing embedding per modality.

    Args:
        cfg: Fusion settings.
        dims: Modality -> width of its encoder's embeddings.
    """

    #: Modalities the strategy uses; the model builds only these encoders.
    modalities: tuple[str, ...] = (IMAGE, TEXT)

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__()
        self.hidden_dim = cfg.hidden_dim
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(dims[m])) for m in self.modalities})
        for p in self.missing.values():
            nn.init.normal_(p, std=0.02)

    def pooled(self, embeddings: dict[str, ModalityEmbedding], m: str) -> torch.Tensor:
        """(B, D) pooled embedding of modality ``m``, learned missing embedding where absent."""
        e = embeddings[m]
        return fill_missing(e.pooled, e.present, self.missing[m])

    def mix(
        self, slots: dict[str, torch.Tensor], scores: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict]:
        """Weighted sum of slots (each (B, H)) with ``masked_softmax(scores (B, K), mask (B, K))``."""
        w = masked_softmax(scores.float(), mask)  # (B, K)
        stacked = torch.stack(list(slots.values()), dim=1)  # (B, K, H)
        fused = (stacked * w.unsqueeze(-1).to(stacked.dtype)).sum(1)  # (B, H)
        return fused, {name: w[:, k] for k, name in enumerate(slots)}


class _SingleModality(Fusion):
    """Baseline on one modality, through the same branch/missing-embedding machinery."""

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        (m,) = self.modalities
        self.branch = branch(dims[m], cfg.hidden_dim, cfg.dropout)

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        (m,) = self.modalities
        feature = self.branch(self.pooled(embeddings, m))  # (B, H)
        ones = torch.ones(feature.shape[0], device=feature.device, dtype=feature.dtype)
        return FusionOutput(fused=feature, modality_features={m: feature}, weights={m: ones})


@register_fusion("image_only")
class ImageOnlyFusion(_SingleModality):
    """Image-only baseline (the report is never read)."""

    modalities = (IMAGE,)


@register_fusion("text_only")
class TextOnlyFusion(_SingleModality):
    """Text-only baseline (the image is never read)."""

    modalities = (TEXT,)


@register_fusion("late")
class LateFusion(Fusion):
    """Per-modality heads whose logits are averaged with learned softmax weights (absent masked out)."""

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        self.branches = nn.ModuleDict({m: branch(dims[m], cfg.hidden_dim, cfg.dropout) for m in self.modalities})
        self.scores = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        slots = {m: self.branches[m](self.pooled(embeddings, m)) for m in self.modalities}  # (B, H) each
        present = torch.stack([embeddings[m].present for m in self.modalities], dim=1)  # (B, M)
        fused, weights = self.mix(slots, self.scores.expand(present.shape[0], -1), present)
        return FusionOutput(fused=fused, modality_features=slots, weights=weights)


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Early fusion: an MLP over the concatenated pooled embeddings (missing ones substituted)."""

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        width = sum(dims[m] for m in self.modalities)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        joint = self.mlp(torch.cat([self.pooled(embeddings, m) for m in self.modalities], dim=1))  # (B, H)
        return FusionOutput(fused=joint, weights={"joint": torch.ones_like(joint[:, 0])})


@register_fusion("gated")
class GatedFusion(Fusion):
    """Per-modality projections mixed by per-sample gates computed from both (absent modality masked)."""

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        self.branches = nn.ModuleDict({m: branch(dims[m], cfg.hidden_dim, cfg.dropout) for m in self.modalities})
        self.gate = nn.Linear(cfg.hidden_dim * len(self.modalities), len(self.modalities))

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        slots = {m: self.branches[m](self.pooled(embeddings, m)) for m in self.modalities}  # (B, H) each
        present = torch.stack([embeddings[m].present for m in self.modalities], dim=1)  # (B, M)
        scores = self.gate(torch.cat(list(slots.values()), dim=1))  # (B, M)
        fused, weights = self.mix(slots, scores, present)
        return FusionOutput(fused=fused, modality_features=slots, weights=weights)


@register_fusion("hybrid")
class HybridFusion(Fusion):
    """Cross-attention (text->image, or both ways) plus per-modality late branches, softmax-mixed.

    Text tokens query image tokens (``key_padding_mask`` from the image mask); with
    ``cross_attention: bidirectional`` image tokens also query text tokens (``key_padding_mask`` from the
    real text attention mask, so padding is never attended). The attended sequences are mean-pooled
    over their real positions into a joint slot, mixed with an image and a text slot by learned weights.
    """

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        h = cfg.hidden_dim
        self.bidirectional = cfg.cross_attention == "bidirectional"
        self.token_proj = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], h)) for m in self.modalities}
        )
        self.missing_token = nn.ParameterDict({m: nn.Parameter(torch.randn(h) * 0.02) for m in self.modalities})
        self.text_to_image = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.norm_text = nn.LayerNorm(h)
        if self.bidirectional:
            self.image_to_text = nn.MultiheadAttention(h, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
            self.norm_image = nn.LayerNorm(h)
        n_pooled = 2 if self.bidirectional else 1
        self.joint = nn.Sequential(nn.Linear(n_pooled * h, h), nn.GELU(), nn.Dropout(cfg.dropout))
        self.branches = nn.ModuleDict({m: branch(dims[m], h, cfg.dropout) for m in self.modalities})
        self.scores = nn.Parameter(torch.zeros(1 + len(self.modalities)))

    def _tokens(self, e: ModalityEmbedding, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected tokens (B, N, H) and mask (B, N); absent samples get [missing token, masked...]."""
        tokens = self.token_proj[m](e.tokens)  # (B, N, H)
        first = torch.zeros_like(e.mask)
        first[:, 0] = True
        absent = ~e.present[:, None]  # (B, 1)
        mask = torch.where(absent, first, e.mask)  # (B, N)
        missing = self.missing_token[m].to(tokens.dtype)
        tokens = torch.where((absent & first).unsqueeze(-1), missing, tokens)
        return tokens, mask

    @staticmethod
    def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, H)

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        img, txt = embeddings[IMAGE], embeddings[TEXT]
        img_tokens, img_mask = self._tokens(img, IMAGE)  # (B, N, H), (B, N)
        txt_tokens, txt_mask = self._tokens(txt, TEXT)  # (B, T, H), (B, T)
        attended, attn = self.text_to_image(
            txt_tokens,
            img_tokens,
            img_tokens,
            key_padding_mask=~img_mask,
            need_weights=True,
            average_attn_weights=False,
        )  # (B, T, H), (B, heads, T, N)
        pooled = [self._masked_mean(self.norm_text(txt_tokens + attended), txt_mask)]
        if self.bidirectional:
            attended_img, _ = self.image_to_text(
                img_tokens, txt_tokens, txt_tokens, key_padding_mask=~txt_mask, need_weights=False
            )
            pooled.append(self._masked_mean(self.norm_image(img_tokens + attended_img), img_mask))
        slots = {"joint": self.joint(torch.cat(pooled, dim=1))}  # (B, H)
        for m in self.modalities:
            slots[m] = self.branches[m](self.pooled(embeddings, m))
        both = img.present & txt.present
        present = torch.stack([both, img.present, txt.present], dim=1)  # (B, 3)
        fused, weights = self.mix(slots, self.scores.expand(both.shape[0], -1), present)
        keep = (txt_mask & both[:, None]).to(attn.dtype)  # (B, T)
        attentions = attn * keep[:, None, :, None]  # (B, heads, T, N)
        return FusionOutput(
            fused=fused,
            modality_features={m: slots[m] for m in self.modalities},
            weights=weights,
            attentions=attentions,
        )
