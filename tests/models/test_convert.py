"""torchvision and torchxrayvision state dicts -> MONAI trunks: the same features, to 1e-5, in eval mode.

Nothing is downloaded: the source architectures are built with seeded random weights, saved,
converted, loaded, and the MONAI trunk's feature map compared with the source's. The sources are
torchvision's networks module for module (:mod:`tests.support.torchvision_nets`, which says why not
torchvision itself), pinned to torchvision 0.28 by its recorded layouts and feature maps; the
torchxrayvision layout is rebuilt from its source the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.config import Config, ImageEncoderConfig
from medfusion.errors import MedfusionError
from medfusion.models.card import ModelCard
from medfusion.models.convert import convert_file, to_monai
from medfusion.models.image_encoders import ImageEncoder, build_image_encoder, load_trunk_weights
from medfusion.models.model import build_model, load_pretrained
from tests.support.torchvision_nets import (
    TORCHVISION_0_28,
    DenseNet121,
    ResNet,
    feature_summary,
    layout_sha256,
    seeded_state,
    torchvision_net,
    xrv_densenet121,
)

SIZE = (64, 64)
ARCHS = ["densenet121", "resnet18", "resnet34", "resnet50"]


def _seeded(net: nn.Module, seed: int) -> nn.Module:
    net.load_state_dict(seeded_state(net.state_dict(), seed))
    return net.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_source_networks_are_torchvision_0_28s(arch: str) -> None:
    """Same keys and shapes as torchvision's, and the same feature map for the same weights and input."""
    net = torchvision_net(arch)
    sha, summary = TORCHVISION_0_28[arch]
    assert layout_sha256(net.state_dict()) == sha
    _seeded(net, seed=0)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = feature_summary(net.feature_map(x))
    assert got == pytest.approx(summary, rel=1e-4, abs=1e-4)


def _encoder(arch: str, in_channels: int) -> ImageEncoder:
    return build_image_encoder(ImageEncoderConfig(name=arch, in_channels=in_channels, embed_dim=8), SIZE).eval()


def _same(ours: torch.Tensor, source: torch.Tensor) -> None:
    """Equal to 1e-5 of the feature map's scale (float32 sums in another order differ by ~1e-7 of it)."""
    assert ours.shape == source.shape
    scale = float(source.abs().max().clamp_min(1.0))
    assert float((ours - source).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_weights_give_the_same_features(tmp_path: Path, arch: str) -> None:
    net = _seeded(torchvision_net(arch), seed=1)
    src = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), src)
    x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    grey = x[:, :1]
    with torch.no_grad():
        rgb = _encoder(arch, 3)  # at load time, from the torchvision file itself
        load_trunk_weights(rgb, src, "torchvision")
        _same(rgb.trunk(x), net.feature_map(x))

        out = tmp_path / f"{arch}.safetensors"  # converted once, then loaded as medfusion's own layout
        convert_file(src, out, layout="torchvision", arch=arch, in_channels=1)
        one = _encoder(arch, 1)
        load_trunk_weights(one, out)
        _same(one.trunk(grey), net.feature_map(grey.repeat(1, 3, 1, 1)))  # RGB filters summed
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {
            "format": "pt",
            "source_layout": "torchvision",
            "arch": arch,
            "in_channels": "1",
            "intensity": "imagenet",
        }


def test_xrv_densenet_weights_give_the_same_features(tmp_path: Path) -> None:
    net = _seeded(xrv_densenet121(), seed=2)
    assert isinstance(net, DenseNet121)
    state = net.state_dict()
    assert state["features.conv0.weight"].shape == (64, 1, 7, 7) and state["classifier.weight"].shape == (18, 1024)
    assert "op_threshs" in state and "features.denseblock4.denselayer16.norm2.running_var" in state
    src = tmp_path / "xrv-densenet121.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(src))
    x = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(0)) * 2048 - 1024  # xrv's input range
    x3 = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1)) * 2048 - 1024
    with torch.no_grad():
        one = _encoder("densenet121", 1)
        load_trunk_weights(one, src, "xrv")
        _same(one.trunk(x), net.feature_map(x))
        rgb = _encoder("densenet121", 3)  # the grey filter spread over 3 channels: sees the channel mean
        load_trunk_weights(rgb, src, "xrv")
        _same(rgb.trunk(x3), net.feature_map(x3.mean(1, keepdim=True)))


class _XrvResNet(nn.Module):
    """torchxrayvision's ``xrv.models.ResNet``: a torchvision resnet50 under ``model``, 1-channel conv1, 18 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ResNet("resnet50", num_classes=18, in_channels=1)
        self.register_buffer("op_threshs", torch.rand(18))


def test_xrv_resnet50_weights_give_the_same_features(tmp_path: Path) -> None:
    net = _seeded(_XrvResNet(), seed=3)
    src = tmp_path / "xrv-resnet50.pt"
    torch.save(net.state_dict(), src)
    x = torch.rand(1, 1, *SIZE, generator=torch.Generator().manual_seed(0)) * 2048 - 1024
    encoder = _encoder("resnet50", 1)
    load_trunk_weights(encoder, src, "xrv")
    with torch.no_grad():
        _same(encoder.trunk(x), net.model.feature_map(x))


def test_cli_converts_and_names_the_normalisation(tmp_path: Path) -> None:
    net = _seeded(torchvision_net("resnet18"), seed=4)
    src, out = tmp_path / "r18.pth", tmp_path / "w" / "r18.safetensors"
    torch.save(net.state_dict(), src)
    args = ["convert-weights", str(src), "--layout", "torchvision", "--arch", "resnet18", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "intensity: imagenet" in result.output and out.is_file()
    bad = CliRunner().invoke(app, [*args[:-2], "--arch", "resnet50", "--out", str(out)])
    assert bad.exit_code == 1
    assert str(src) in bad.output and "shape mismatches" in bad.output and "missing keys" in bad.output


def test_mapping_errors_name_the_file_and_the_keys(tmp_path: Path) -> None:
    net = _seeded(torchvision_net("resnet18"), seed=5)
    state = dict(net.state_dict())
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}, missing)
    with pytest.raises(MedfusionError, match=rf"{missing}: .*1 missing keys \(layer3\.1\.bn2\.running_var\)"):
        load_trunk_weights(_encoder("resnet18", 1), missing, "torchvision")
    extra = tmp_path / "extra.pt"
    torch.save({**state, "layer5.0.conv1.weight": torch.zeros(1)}, extra)
    with pytest.raises(MedfusionError, match=rf"{extra}: .*1 unexpected keys \(layer5\.0\.conv1\.weight\)"):
        load_trunk_weights(_encoder("resnet18", 1), extra, "torchvision")
    shaped = tmp_path / "shaped.pt"
    torch.save({**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, shaped)
    shapes = r"layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\) vs model \(64, 64, 3, 3\)"
    with pytest.raises(MedfusionError, match=rf"{shaped}: .*1 shape mismatches \({shapes}\)"):
        convert_file(shaped, tmp_path / "x.safetensors", layout="torchvision", arch="resnet18")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(MedfusionError, match="no xrv layout for image encoder 'resnet18'"):
        to_monai(state, layout="xrv", arch="resnet18", in_channels=1)
    with pytest.raises(MedfusionError, match="cannot adapt it to 2"):
        to_monai(state, layout="torchvision", arch="resnet18", in_channels=2)


def test_legacy_torchvision_densenet_keys_are_read() -> None:
    """torchvision < 0.3 saved DenseNet layers as ``norm.1``/``conv.2``; both spellings map to MONAI's."""
    state = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(2), "classifier.bias": torch.ones(3)}
    assert list(to_monai(state, layout="torchvision", arch="densenet121", in_channels=3)) == [
        "features.denseblock1.denselayer1.layers.norm1.weight"
    ]


def test_layouts_are_2d_cnns_only() -> None:
    with pytest.raises(ValueError, match="cannot load into vit"):
        ImageEncoderConfig(name="vit", pretrained_layout="torchvision")
    with pytest.raises(ValueError, match="spatial_dims=3"):
        ImageEncoderConfig(name="resnet18", spatial_dims=3, pretrained_layout="xrv")


def test_a_model_loads_torchvision_weights_through_its_config(tmp_path: Path, text_dir: Path) -> None:
    """The training path: config (layout + path) -> card (spec with ImageNet normalisation) -> load_pretrained."""
    net = _seeded(torchvision_net("resnet18"), seed=6)
    src = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), src)
    config = Config(
        labels=["a"],
        image_encoder={"name": "resnet18", "pretrained_path": src, "pretrained_layout": "torchvision"},
        text_encoder={"tiny": {}},
        fusion={"name": "image_only", "hidden_dim": 8},
    )
    card = ModelCard.from_config(config)
    assert card.preprocessing.intensity == "imagenet" and card.config.image_encoder.pretrained_layout == "monai"
    image = config.image_encoder
    model = build_model(card, text_dir)
    load_pretrained(model, image_weights=image.pretrained_path, image_layout=image.pretrained_layout)
    assert model.image_encoder is not None
    conv1 = model.image_encoder.trunk.get_parameter("conv1.weight")
    torch.testing.assert_close(conv1, net.conv1.weight.sum(dim=1, keepdim=True))
