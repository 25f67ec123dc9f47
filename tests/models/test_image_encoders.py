"""MONAI image encoders: pooled + token outputs in 2D and 3D, and local pretrained weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medfusion.config import ImageEncoderConfig
from medfusion.errors import MedfusionError
from medfusion.models.image_encoders import ImageEncoder, build_image_encoder, load_trunk_weights
from medfusion.models.registry import IMAGE_ENCODERS, get_image_encoder, image_encoder_names

# (settings, image size, input shape, expected grid)
CASES = [
    ({"name": "densenet121", "spatial_dims": 2}, (64, 64), (2, 1, 64, 64), (2, 2)),
    ({"name": "resnet18", "spatial_dims": 2}, (64, 64), (2, 1, 64, 64), (2, 2)),
    ({"name": "resnet18", "spatial_dims": 2, "in_channels": 3}, (96, 64), (2, 3, 96, 64), (3, 2)),
    ({"name": "resnet34", "spatial_dims": 2}, (64, 64), (1, 1, 64, 64), (2, 2)),
    ({"name": "resnet50", "spatial_dims": 2}, (32, 32), (2, 1, 32, 32), (1, 1)),
    ({"name": "vit", "spatial_dims": 2, "patch_size": 16}, (64, 64), (2, 1, 64, 64), (4, 4)),
    ({"name": "resnet18", "spatial_dims": 3}, (64, 64, 64), (1, 1, 64, 64, 64), (2, 2, 2)),
    ({"name": "densenet121", "spatial_dims": 3}, (32, 32, 32), (1, 1, 32, 32, 32), (1, 1, 1)),
    ({"name": "vit", "spatial_dims": 3, "patch_size": 8}, (16, 32, 32), (2, 1, 16, 32, 32), (2, 4, 4)),
]


@pytest.mark.parametrize("settings, image_size, input_shape, grid", CASES)
def test_encoder_shapes(settings: dict, image_size: tuple, input_shape: tuple, grid: tuple) -> None:
    cfg = ImageEncoderConfig(embed_dim=24, **settings)
    encoder = build_image_encoder(cfg, image_size).eval()
    with torch.no_grad():
        out = encoder(torch.randn(*input_shape))
    batch = input_shape[0]
    assert out.grid == grid
    assert out.tokens.shape == (batch, math.prod(grid), 24)
    assert out.pooled.shape == (batch, 24)
    assert torch.allclose(out.pooled, out.tokens.mean(1), atol=1e-5)
    assert torch.isfinite(out.tokens).all()


def test_tokens_follow_image_positions() -> None:
    """Token k is feature-map position k (row-major): a change in the top-left corner moves token 0 most."""
    cfg = ImageEncoderConfig(name="vit", patch_size=16, embed_dim=8)
    encoder = build_image_encoder(cfg, (64, 64)).eval()
    x = torch.zeros(1, 1, 64, 64)
    y = x.clone()
    y[..., :16, :16] = 5.0
    with torch.no_grad():
        change = (encoder(y).tokens - encoder(x).tokens).norm(dim=-1)[0]  # (16,)
    assert int(change.argmax()) == 0


def _pretrained(cfg: ImageEncoderConfig, image_size: tuple[int, ...]) -> ImageEncoder:
    """Build the architecture, then load ``cfg.pretrained_path`` (the two separate steps)."""
    encoder = build_image_encoder(cfg, image_size)
    load_trunk_weights(encoder, cfg.pretrained_path)
    return encoder


def test_registry_lists_known_encoders() -> None:
    assert image_encoder_names() == sorted(IMAGE_ENCODERS) == ["densenet121", "resnet18", "resnet34", "resnet50", "vit"]
    with pytest.raises(MedfusionError, match="unknown image encoder 'nope'"):
        get_image_encoder("nope")


def _monai_resnet18_state(in_channels: int) -> dict[str, torch.Tensor]:
    from monai.networks.nets import resnet18

    net = resnet18(spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, num_classes=7)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_weights_load_from_local_file(tmp_path: Path, suffix: str) -> None:
    state = _monai_resnet18_state(1)  # includes an fc head (7 classes) that must be ignored
    path = tmp_path / f"resnet18{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    cfg = ImageEncoderConfig(name="resnet18", embed_dim=8, pretrained_path=path)
    built = build_image_encoder(cfg, (64, 64))
    assert not torch.equal(built.trunk.conv1.weight, state["conv1.weight"])  # building alone leaves random weights
    encoder = _pretrained(cfg, (64, 64))
    assert torch.equal(encoder.trunk.conv1.weight, state["conv1.weight"])
    assert torch.equal(encoder.trunk.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])


def test_pretrained_weights_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "rgb.safetensors"
    save_file(_monai_resnet18_state(3), str(path))
    cfg = ImageEncoderConfig(name="resnet18", in_channels=1, pretrained_path=path)
    with pytest.raises(MedfusionError, match=r"do not match ResNet: .*shape mismatches .*conv1.weight.*in_channels"):
        _pretrained(cfg, (64, 64))
    densenet = ImageEncoderConfig(name="densenet121", pretrained_path=path)
    with pytest.raises(MedfusionError, match=r"do not match DenseNet121: .*missing keys"):
        _pretrained(densenet, (64, 64))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "extra": Path("x")}, path)  # not weights-only loadable
    cfg = ImageEncoderConfig(name="resnet18", pretrained_path=path)
    with pytest.raises(MedfusionError, match="cannot read pretrained image weights"):
        _pretrained(cfg, (64, 64))
    with pytest.raises(MedfusionError, match="not found"):
        _pretrained(ImageEncoderConfig(name="resnet18", pretrained_path=tmp_path / "nope.safetensors"), (64, 64))


def test_vit_rejects_sizes_it_cannot_tile() -> None:
    with pytest.raises(MedfusionError, match="not divisible by patch_size"):
        build_image_encoder(ImageEncoderConfig(name="vit", patch_size=16), (60, 64))
    with pytest.raises(MedfusionError, match="spatial_dims is 3"):
        build_image_encoder(ImageEncoderConfig(name="vit", spatial_dims=3, patch_size=8), (64, 64))
