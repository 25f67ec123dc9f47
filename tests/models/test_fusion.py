"""Fusion strategies: one contract, missing modalities, masks, and the returned attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfusion.config import FusionConfig
from medfusion.models.fusion import FusionOutput, ModalityEmbedding, masked_softmax
from medfusion.models.registry import FUSIONS, fusion_names, get_fusion

B, N, T, D_IMG, D_TXT, H, L = 4, 6, 7, 12, 10, 16, 3
ALL = ["image_only", "text_only", "late", "concat", "gated", "hybrid"]
# (image present, text present) per sample: both, no image, no text, nothing at all
PRESENT = (torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False]))


def _embeddings(seed: int = 0, image_present=PRESENT[0], text_present=PRESENT[1]) -> dict[str, ModalityEmbedding]:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    text_mask[0, 4:] = False  # sample 0 has 4 real tokens, 3 padding
    text_mask[2, 2:] = False
    return {
        "image": ModalityEmbedding(
            pooled=torch.randn(B, D_IMG, generator=g),
            tokens=torch.randn(B, N, D_IMG, generator=g),
            mask=torch.ones(B, N, dtype=torch.bool),
            present=image_present,
        ),
        "text": ModalityEmbedding(
            pooled=torch.randn(B, D_TXT, generator=g),
            tokens=torch.randn(B, T, D_TXT, generator=g),
            mask=text_mask,
            present=text_present,
        ),
    }


def _fusion(name: str, **settings) -> nn.Module:
    torch.manual_seed(0)
    cfg = FusionConfig(name=name, hidden_dim=H, num_heads=4, dropout=0.0, **settings)
    cls = get_fusion(name)
    return cls(cfg, {m: {"image": D_IMG, "text": D_TXT}[m] for m in cls.modalities}).eval()


def _inputs(fusion: nn.Module, embeddings: dict[str, ModalityEmbedding]) -> dict[str, ModalityEmbedding]:
    return {m: embeddings[m] for m in sorted(fusion.modalities)}


def test_registry_has_every_strategy() -> None:
    assert fusion_names() == sorted(FUSIONS) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_missing_modalities_stay_finite(name: str) -> None:
    fusion = _fusion(name)
    out = fusion(_inputs(fusion, _embeddings()))
    assert isinstance(out, FusionOutput)
    assert out.fused.shape == (B, H)
    assert torch.isfinite(out.fused).all()
    for feature in out.modality_features.values():
        assert feature.shape == (B, H) and torch.isfinite(feature).all()
    weights = torch.stack(list(out.weights.values()), dim=1)  # (B, K)
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(1), torch.ones(B))


@pytest.mark.parametrize("name", ["late", "gated", "hybrid"])
def test_absent_modality_gets_no_weight(name: str) -> None:
    fusion = _fusion(name)
    out = fusion(_inputs(fusion, _embeddings()))
    assert out.weights["image"][1] == 0  # sample 1 has no image
    assert out.weights["text"][2] == 0  # sample 2 has no report
    # sample 1: the fused vector is the text slot alone (so the logits are the text head's logits)
    assert torch.allclose(out.fused[1], out.modality_features["text"][1], atol=1e-6)
    assert torch.allclose(out.fused[2], out.modality_features["image"][2], atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_absent_inputs_are_ignored(name: str) -> None:
    """What an absent modality's encoder produced must not matter (the learned missing embedding is used)."""
    fusion = _fusion(name)
    a, b = _embeddings(seed=0), _embeddings(seed=0)
    b["image"].pooled[1] += 100.0
    b["image"].tokens[1] += 100.0
    b["text"].pooled[2] -= 50.0
    b["text"].tokens[2] -= 50.0
    out_a, out_b = fusion(_inputs(fusion, a)), fusion(_inputs(fusion, b))
    assert torch.allclose(out_a.fused, out_b.fused, atol=1e-5)


@pytest.mark.parametrize("cross_attention", ["text_to_image", "bidirectional"])
def test_hybrid_attention_shape_and_padding(cross_attention: str) -> None:
    fusion = _fusion("hybrid", cross_attention=cross_attention)
    embeddings = _embeddings(
        image_present=torch.ones(B, dtype=torch.bool), text_present=torch.ones(B, dtype=torch.bool)
    )
    out = fusion(embeddings)
    assert out.attentions is not None and out.attentions.shape == (B, 4, T, N)
    assert torch.all(out.attentions[0, :, 4:] == 0)  # padded text positions carry no attention
    assert torch.allclose(out.attentions[0, :, :4].sum(-1), torch.ones(4, 4), atol=1e-5)
    # padding content never changes the result (keys masked both ways, padded queries not pooled)
    changed = _embeddings(image_present=torch.ones(B, dtype=torch.bool), text_present=torch.ones(B, dtype=torch.bool))
    changed["text"].tokens[0, 4:] = 1000.0
    assert torch.allclose(fusion(changed).fused, out.fused, atol=1e-5)


def test_hybrid_attention_is_zero_without_both_modalities() -> None:
    fusion = _fusion("hybrid")
    out = fusion(_embeddings())
    assert torch.all(out.attentions[1:] == 0)  # samples 1-3 lack the image, the report or both
    assert out.weights["joint"][1:3].eq(0).all()  # sample 3 has nothing: unmasked prior mix


def test_masked_softmax_falls_back_when_nothing_is_allowed() -> None:
    scores = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    mask = torch.tensor([[True, False], [False, False]])
    w = masked_softmax(scores, mask)
    assert torch.equal(w[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(w[1], scores[1].softmax(0))


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_the_missing_embeddings(name: str) -> None:
    fusion = _fusion(name).train()
    out = fusion(_inputs(fusion, _embeddings()))
    out.fused.sum().backward()
    for m, p in fusion.missing.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, m
