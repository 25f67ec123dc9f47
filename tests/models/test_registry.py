"""Registries are the single source of component names: a newly registered fusion or image encoder can be
selected in a config and built, with no list to edit anywhere else."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
from torch import nn

from medfusion.config import Config, FusionConfig, ImageEncoderConfig
from medfusion.errors import ConfigError, MedfusionError
from medfusion.models.card import ModelCard
from medfusion.models.fusion import IMAGE, TEXT, Fusion, FusionOutput, ModalityEmbedding
from medfusion.models.image_encoders import ImageEncoder
from medfusion.models.model import build_model
from medfusion.models.registry import (
    FUSIONS,
    IMAGE_ENCODERS,
    fusion_names,
    image_encoder_names,
    register_fusion,
    register_image_encoder,
)


class _MeanFusion(Fusion):
    """Mean of the two projected pooled embeddings (a strategy the package does not ship)."""

    modalities = (IMAGE, TEXT)

    def __init__(self, cfg: FusionConfig, dims: dict[str, int]) -> None:
        super().__init__(cfg, dims)
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], cfg.hidden_dim) for m in self.modalities})

    def forward(self, embeddings: dict[str, ModalityEmbedding]) -> FusionOutput:
        slots = [self.proj[m](self.pooled(embeddings, m)) for m in self.modalities]  # (B, H) each
        fused = torch.stack(slots).mean(0)  # (B, H)
        return FusionOutput(fused=fused, weights={"joint": torch.ones_like(fused[:, 0])})


def _pooled_pixels(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """A 4x4 average-pool "trunk": one channel per input channel."""
    return ImageEncoder(nn.AdaptiveAvgPool2d(4), cfg.in_channels, cfg.embed_dim)


@pytest.fixture()
def registered() -> Iterator[None]:
    register_fusion("test_mean")(_MeanFusion)
    register_image_encoder("test_pool")(_pooled_pixels)
    try:
        yield
    finally:
        FUSIONS.pop("test_mean")
        IMAGE_ENCODERS.pop("test_pool")


def _config(**parts: object) -> Config:
    return Config(
        name="registry",
        labels=["a", "b", "c"],
        data={"image_size": [32, 32], "max_tokens": 16},
        text_encoder={"tiny": {}, "embed_dim": 16},
        **parts,
    )


def test_a_newly_registered_fusion_and_encoder_are_selectable_and_build(registered: None, text_dir) -> None:
    assert "test_mean" in fusion_names() and "test_pool" in image_encoder_names()
    config = _config(
        image_encoder={"name": "test_pool", "embed_dim": 8}, fusion={"name": "test_mean", "hidden_dim": 12}
    )
    model = build_model(ModelCard.from_config(config), text_dir).eval()
    assert isinstance(model.fusion, _MeanFusion) and isinstance(model.image_encoder.trunk, nn.AdaptiveAvgPool2d)
    batch = {
        "image": torch.randn(2, 1, 32, 32),
        "image_present": torch.tensor([True, False]),
        "input_ids": torch.tensor([[2, 9, 3], [2, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "text_present": torch.tensor([True, True]),
    }
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all() and out.image_grid == (4, 4)


def test_config_accepts_exactly_the_registered_names() -> None:
    for name in fusion_names():
        assert _config(fusion={"name": name}).fusion.name == name
    for name in image_encoder_names():
        assert _config(image_encoder={"name": name}).image_encoder.name == name
    with pytest.raises(ValueError, match="unknown fusion 'test_mean'; registered: concat, gated, hybrid"):
        _config(fusion={"name": "test_mean"})  # not registered outside the fixture
    with pytest.raises(ValueError, match="unknown image encoder 'test_pool'"):
        _config(image_encoder={"name": "test_pool"})


def test_unknown_names_in_a_yaml_config_name_the_key(tmp_path) -> None:
    from medfusion.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("labels: [a]\nimage_encoder: {name: resnet999}\n")
    with pytest.raises(ConfigError, match=r"image_encoder.name: Value error, unknown image encoder 'resnet999'"):
        load_config(path)


def test_names_are_registered_once(registered: None) -> None:
    with pytest.raises(MedfusionError, match="fusion 'test_mean' is already registered"):
        register_fusion("test_mean")(_MeanFusion)
