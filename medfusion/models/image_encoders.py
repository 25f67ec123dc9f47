"""MONAI image encoders that return a pooled embedding and a spatial token sequence.

Every encoder is a MONAI network cut before its classifier (a *trunk*) that yields the last feature
map ``(B, C, *grid)``, followed by one linear projection to ``embed_dim``. The feature map's positions
become tokens (``N = prod(grid)``), which cross-attention attends over and which map back to image
regions for attention heatmaps. ViT patch tokens are reshaped to the same ``(B, C, *grid)`` layout, so
all encoders share :class:`ImageEncoder`.

Builders make the architecture only (random weights). Pretrained weights are a separate step,
:func:`load_trunk_weights`, from a local file only (``image_encoder.pretrained_path``): a state dict of
the MONAI network (``DenseNet121``, ``ResNet``; for the ViT, of :class:`ViTTrunk`) saved with
safetensors (preferred) or ``torch.save`` (read with ``weights_only=True``). Classifier weights in the
file are ignored; every trunk weight must be present with the right shape, else
:class:`~medfusion.errors.MedfusionError`. Trunks keep the MONAI network's parameter names, so the
file's keys match the trunk's. torchvision and torchxrayvision state dicts load too
(``image_encoder.pretrained_layout``): :mod:`medfusion.models.convert` maps their keys first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from medfusion.config import ImageEncoderConfig
from medfusion.errors import MedfusionError, UnsafeModelFile
from medfusion.models.convert import Layout, check_trunk_keys, to_monai
from medfusion.models.registry import register_image_encoder
from medfusion.models.weights import load_state_dict

if TYPE_CHECKING:
    from monai.networks.nets import DenseNet121, ResNet

# MONAI is imported where a network is built, not with this module: importing ``monai`` loads all of its
# subpackages (about 6 s of CPU here), and registering the encoders' names (which every configuration
# check needs, :mod:`medfusion.models.registry`) should not cost that.

log = logging.getLogger(__name__)

#: Parameter-name prefixes of MONAI classifier heads; ignored when loading pretrained trunks.
_HEAD_PREFIXES = ("class_layers.out.", "fc.", "classification_head.", "cls_token")


@dataclass
class ImageFeatures:
    """Output of an image encoder.

    Attributes:
        pooled: (B, D) mean of the tokens.
        tokens: (B, N, D) one token per position of the last feature map, row-major over ``grid``.
        grid: Feature-map shape, ``(h, w)`` or ``(d, h, w)``; ``prod(grid) == N``.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    grid: tuple[int, ...]


class ImageEncoder(nn.Module):
    """A trunk (image -> feature map) plus a linear projection of each position to ``embed_dim``.

    Args:
        trunk: Module mapping ``(B, C_in, *spatial)`` to a feature map ``(B, channels, *grid)``.
        channels: Channels of the trunk's feature map.
        embed_dim: Width of the output tokens.
    """

    def __init__(self, trunk: nn.Module, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.proj = nn.Linear(channels, embed_dim)
        self.embed_dim = embed_dim
        #: The registered encoder name (set by :func:`build_image_encoder`).
        self.name = type(trunk).__name__

    def forward(self, image: torch.Tensor) -> ImageFeatures:
        fmap = self.trunk(image)  # (B, C, *grid)
        grid = tuple(int(s) for s in fmap.shape[2:])
        tokens = self.proj(fmap.flatten(2).transpose(1, 2))  # (B, N, D)
        return ImageFeatures(pooled=tokens.mean(dim=1), tokens=tokens, grid=grid)


class DenseNetTrunk(nn.Module):
    """MONAI DenseNet121 up to its last feature map (``features`` + the ReLU of its classifier)."""

    def __init__(self, net: DenseNet121) -> None:
        super().__init__()
        self.features = net.features
        self.act = nn.ReLU()
        head = net.class_layers.out
        if not isinstance(head, nn.Linear):
            raise TypeError(f"DenseNet121 classifier head is {type(head).__name__}, expected Linear")
        self.channels = head.in_features
        self.source = type(net).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.features(x))  # (B, 1024, *grid)


class ResNetTrunk(nn.Module):
    """MONAI ResNet up to ``layer4`` (no average pool, no fc)."""

    def __init__(self, net: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.no_max_pool = net.no_max_pool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        last = net.layer4[-1]
        conv = last.get_submodule("conv3" if hasattr(last, "conv3") else "conv2")  # bottleneck or basic block
        if not isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise TypeError(f"{type(net).__name__} ends in a {type(conv).__name__}, expected a convolution")
        self.channels = conv.out_channels
        self.source = type(net).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        if not self.no_max_pool:
            x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, *grid)


class ViTTrunk(nn.Module):
    """ViT without class token: MONAI ``PatchEmbeddingBlock`` (conv projection, learnable positions) and
    pre-norm transformer layers; the patch tokens are laid out as a feature map ``(B, hidden, *grid)``.

    Built from torch's ``nn.TransformerEncoderLayer`` rather than ``monai.networks.nets.ViT``, whose
    attention blocks need the optional ``einops`` package.
    """

    def __init__(self, cfg: ImageEncoderConfig, image_size: tuple[int, ...]) -> None:
        from monai.networks.blocks import PatchEmbeddingBlock

        super().__init__()
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=cfg.in_channels,
            img_size=image_size,
            patch_size=cfg.patch_size,
            hidden_size=cfg.vit_hidden,
            num_heads=cfg.vit_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            spatial_dims=cfg.spatial_dims,
        )
        layer = nn.TransformerEncoderLayer(
            cfg.vit_hidden,
            cfg.vit_heads,
            4 * cfg.vit_hidden,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.vit_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.vit_hidden)
        self.grid = tuple(s // cfg.patch_size for s in image_size)
        self.channels = cfg.vit_hidden
        self.source = type(self).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.blocks(self.patch_embedding(x)))  # (B, N, hidden)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


def trunk_state(encoder: ImageEncoder) -> dict[str, torch.Tensor]:
    """The trunk's state dict without classifier keys: what a pretrained weights file must provide."""
    return {k: v for k, v in encoder.trunk.state_dict().items() if not k.startswith(_HEAD_PREFIXES)}


def load_trunk_weights(encoder: ImageEncoder, path: str | Path, layout: Layout = "monai") -> None:
    """Load a pretrained state dict from a local file into ``encoder``'s trunk.

    Args:
        encoder: A built image encoder (its projection is not touched).
        path: ``.safetensors`` (preferred) or ``.pt``/``.pth``/``.bin`` (read with ``weights_only=True``).
        layout: The file's key layout: ``monai`` (the MONAI network's own keys; classifier keys and
            other extra keys are ignored with a warning), or ``torchvision`` / ``xrv`` (converted by
            :func:`medfusion.models.convert.to_monai`; every key must map, nothing may be left over).

    Raises:
        UnsafeModelFile: The file needs pickle beyond tensors (see :mod:`medfusion.models.weights`).
        MedfusionError: The file is missing or unreadable, or trunk keys are missing, unexpected
            (foreign layouts) or mis-shaped.
    """
    path = Path(path)
    trunk = encoder.trunk
    name = getattr(trunk, "source", type(trunk).__name__)
    if not path.is_file():
        raise MedfusionError(f"{path}: pretrained image weights not found")
    try:  # safetensors, or torch.load(weights_only=True); pickles are refused
        state = load_state_dict(path)
    except UnsafeModelFile as exc:
        raise UnsafeModelFile(path, f"cannot read pretrained image weights: {exc.reason}") from None
    except MedfusionError as exc:
        raise MedfusionError(f"cannot read pretrained image weights: {exc}") from None
    expected = trunk_state(encoder)
    if layout != "monai":
        state = to_monai(state, layout=layout, arch=encoder.name, in_channels=_in_channels(encoder), source=str(path))
        check_trunk_keys(state, expected, source=str(path), target=f"{name} ({layout} layout)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = sorted(k for k in expected if k not in state)
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs model "
                f"{tuple(expected[k].shape)}; check in_channels, spatial_dims, image size and pretrained_layout)"
            )
        raise MedfusionError(f"{path}: weights do not match {name}: " + "; ".join(details))
    unused = sorted(k for k in state if k not in expected and not k.startswith(_HEAD_PREFIXES))
    if unused:
        log.warning("%s: %d keys not used by %s (e.g. %s)", path, len(unused), name, unused[0])
    trunk.load_state_dict({k: state[k] for k in expected}, strict=False)
    log.info("loaded pretrained image weights from %s (%s layout)", path, layout)


def _in_channels(encoder: ImageEncoder) -> int:
    """Input channels of the encoder's first convolution."""
    for module in encoder.trunk.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            return int(module.in_channels)
    raise MedfusionError(f"{encoder.name}: no convolution to load pretrained weights into")


@register_image_encoder("densenet121")
def densenet121(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """MONAI DenseNet121; tokens from its last (1024-channel, stride-32) feature map."""
    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=cfg.spatial_dims, in_channels=cfg.in_channels, out_channels=1)
    trunk = DenseNetTrunk(net)
    return ImageEncoder(trunk, trunk.channels, cfg.embed_dim)


def _resnet(factory: Callable[..., ResNet], cfg: ImageEncoderConfig) -> ImageEncoder:
    # conv1 stride 2 as in torchvision / MedicalNet; MONAI's default of 1 quadruples the compute.
    net = factory(spatial_dims=cfg.spatial_dims, n_input_channels=cfg.in_channels, conv1_t_stride=2, feed_forward=False)
    trunk = ResNetTrunk(net)
    return ImageEncoder(trunk, trunk.channels, cfg.embed_dim)


@register_image_encoder("resnet18")
def resnet18_encoder(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """MONAI ResNet-18 (512-channel stride-32 feature map)."""
    from monai.networks.nets import resnet18

    return _resnet(resnet18, cfg)


@register_image_encoder("resnet34")
def resnet34_encoder(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """MONAI ResNet-34 (512-channel stride-32 feature map)."""
    from monai.networks.nets import resnet34

    return _resnet(resnet34, cfg)


@register_image_encoder("resnet50")
def resnet50_encoder(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """MONAI ResNet-50 (2048-channel stride-32 feature map)."""
    from monai.networks.nets import resnet50

    return _resnet(resnet50, cfg)


@register_image_encoder("vit")
def vit_encoder(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """ViT (MONAI patch embedding) without class token; one token per ``patch_size`` patch.

    Pretrained weights for it are a state dict of :class:`ViTTrunk` (e.g. from an earlier medfusion model).

    Args:
        cfg: Encoder settings (``patch_size``, ``vit_hidden``, ``vit_layers``, ``vit_heads``).
        image_size: Input size, one entry per spatial dimension, each divisible by ``patch_size``.
    """
    size = tuple(int(s) for s in image_size)
    if len(size) != cfg.spatial_dims:
        raise MedfusionError(f"vit: image size {size} has {len(size)} dims but spatial_dims is {cfg.spatial_dims}")
    if any(s % cfg.patch_size for s in size):
        raise MedfusionError(f"vit: image size {size} is not divisible by patch_size {cfg.patch_size}")
    trunk = ViTTrunk(cfg, size)
    return ImageEncoder(trunk, trunk.channels, cfg.embed_dim)


def build_image_encoder(cfg: ImageEncoderConfig, image_size: Sequence[int]) -> ImageEncoder:
    """Build the registered encoder named ``cfg.name`` (architecture only: ``cfg.pretrained_path`` is
    loaded by :func:`load_trunk_weights`, a separate step).

    Args:
        cfg: Encoder settings.
        image_size: Preprocessed input size per spatial dimension (used by the ViT's position grid).
    """
    from medfusion.models.registry import get_image_encoder

    encoder = get_image_encoder(cfg.name)(cfg, image_size)
    encoder.name = cfg.name
    return encoder
