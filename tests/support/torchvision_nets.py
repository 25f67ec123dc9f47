"""torchvision's DenseNet-121 and ResNet-18/34/50, module for module, for the weight-conversion tests.

Why not ``torchvision`` itself: the package index's torchvision wheel links against the CUDA build of
torch. With the CPU build on our machines its C ops fail to load, ``import torchvision`` raises, and
because ``transformers`` imports torchvision whenever it is installed, installing it breaks every text
model. So the tests build the source architectures here, with torchvision's module names, and check
them against torchvision 0.28 twice: the state-dict layout (every key and shape) and the feature map
for seeded weights and input (:data:`TORCHVISION_0_28`, checked in ``tests/models/test_convert.py``),
both recorded from the real package (``python -m tests.support.torchvision_nets /path/to/torchvision``).

torchxrayvision's ``xrv.models.DenseNet`` is torchvision's DenseNet with a 1-channel ``conv0``, an
18-way classifier and an ``op_threshs`` buffer (torchxrayvision/models.py); :func:`xrv_densenet121`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

#: Recorded from torchvision 0.28.0 by ``python -m tests.support.torchvision_nets``: per architecture, the
#: sha256 of its ``state_dict()`` layout (:func:`layout_sha256`, default 1000 classes) and the
#: :func:`feature_summary` of its feature map for :func:`seeded_state` weights (seed 0) on
#: ``torch.rand(1, 3, 64, 64)`` drawn from ``torch.Generator().manual_seed(0)``.
TORCHVISION_0_28: dict[str, tuple[str, list[float]]] = {
    "densenet121": (
        "d52aa585c67149854194b01d5c03f0168123669b6d2e1e81d06721ac2b1304dc",
        [0.434675, 0.704952, 1.230588, 0.408147, 0.0, 0.219625],
    ),
    "resnet18": (
        "761022b221a39ceb0afbf6540088f2c88938ca83e3adf823383af010f42a10c3",
        [11.099318, 14.102762, 0.0, 0.0, 27.970734, 53.801983],
    ),
    "resnet34": (
        "1a060acae7a42530781fa7013ea03dae3b11715076d9e3c04fdb6c70ddceb544",
        [264.368145, 312.387902, 793.13623, 0.0, 618.677612, 0.0],
    ),
    "resnet50": (
        "3fa57287149b51c43a043a424dcd918aaa5a894c977b50e35a9154f41f9c8fd0",
        [1528.413454, 1858.249653, 1029.176636, 2921.169434, 0.0, 3671.405762],
    ),
}


class _DenseLayer(nn.Sequential):
    def __init__(self, channels: int, growth: int = 32, bn_size: int = 4) -> None:
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(channels))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(channels, bn_size * growth, kernel_size=1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, kernel_size=3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], 1)


class _Transition(nn.Sequential):
    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(channels))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(channels, out, kernel_size=1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet121(nn.Module):
    """``torchvision.models.densenet121``; :meth:`feature_map` is ``relu(features(x))``, what it pools."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        stem = [
            ("conv0", nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(64)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]
        self.features = nn.Sequential(OrderedDict(stem))
        channels = 64
        for i, layers in enumerate((6, 12, 24, 16)):
            block = nn.Sequential(
                OrderedDict((f"denselayer{j + 1}", _DenseLayer(channels + j * 32)) for j in range(layers))
            )
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += layers * 32
            if i != 3:
                self.features.add_module(f"transition{i + 1}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1024, H/32, W/32)."""
        return torch.relu(self.features(x))


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride here: ResNet v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


_RESNETS: dict[str, tuple[type[_Basic] | type[_Bottleneck], tuple[int, ...]]] = {
    "resnet18": (_Basic, (2, 2, 2, 2)),
    "resnet34": (_Basic, (3, 4, 6, 3)),
    "resnet50": (_Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """``torchvision.models.resnet18/34/50``; :meth:`feature_map` is the output of ``layer4``."""

    def __init__(self, arch: str, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        block, depths = _RESNETS[arch]
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(depth):
                down = None
                if j == 0 and (stride != 1 or inplanes != planes * block.expansion):
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                blocks.append(block(inplanes, planes, stride if j == 0 else 1, down))
                inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H/32, W/32): 512 channels (18, 34) or 2048 (50)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = self.get_submodule(name)(x)
        return x


def torchvision_net(arch: str, num_classes: int = 1000, in_channels: int = 3) -> DenseNet121 | ResNet:
    """The architecture torchvision calls ``arch``."""
    if arch == "densenet121":
        return DenseNet121(num_classes, in_channels)
    return ResNet(arch, num_classes, in_channels)


def xrv_densenet121() -> DenseNet121:
    """torchxrayvision's ``xrv.models.DenseNet`` (``in_channels=1``, 18 classes, ``op_threshs`` buffer)."""
    net = DenseNet121(num_classes=18, in_channels=1)
    net.register_buffer("op_threshs", torch.rand(18))
    return net


def layout_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the ``"key shape"`` lines of a state dict, in its order."""
    lines = "".join(f"{k} {tuple(v.shape)}\n" for k, v in state.items())
    return hashlib.sha256(lines.encode()).hexdigest()


def seeded_state(state: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Weights for a layout that depend on the keys, shapes and seed only (not on any init code).

    Convolutions and linears: He-normal; BatchNorm: weight in [0.5, 1.5), bias and running mean
    N(0, 0.1), running var in [0.5, 1.5). Keys are drawn in sorted order from one generator.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(state):
        shape, leaf = state[key].shape, key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = torch.zeros((), dtype=torch.long)
        elif leaf == "weight" and len(shape) > 1:
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        elif leaf in ("weight", "running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:  # bias, running_mean, op_threshs
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


def feature_summary(fmap: torch.Tensor) -> list[float]:
    """Six numbers that pin a feature map down: mean, std, and four values spread over it."""
    flat = fmap.flatten().double()
    picks = [flat[int(i * (flat.numel() - 1) / 3)] for i in range(4)]
    return [round(float(v), 6) for v in (flat.mean(), flat.std(), *picks)]


if __name__ == "__main__":  # record TORCHVISION_0_28 and the feature summaries from a real torchvision
    import sys
    from types import ModuleType

    sys.path.insert(0, sys.argv[1])  # a folder holding the unpacked torchvision wheel
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = ModuleType(name)  # its C ops need the CUDA build of torch; the models do not
    import torchvision.models as tv

    for arch in ("densenet121", "resnet18", "resnet34", "resnet50"):
        real = getattr(tv, arch)().eval()
        ours = torchvision_net(arch).eval()
        assert layout_sha256(real.state_dict()) == layout_sha256(ours.state_dict()), arch
        weights = seeded_state(real.state_dict(), seed=0)
        real.load_state_dict(weights)
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if arch == "densenet121":
                fmap = torch.relu(real.features(x))
            else:
                fmap = real.maxpool(real.relu(real.bn1(real.conv1(x))))
                for layer in (real.layer1, real.layer2, real.layer3, real.layer4):
                    fmap = layer(fmap)
        sys.stdout.write(f'"{arch}": ("{layout_sha256(real.state_dict())}", {feature_summary(fmap)}),\n')
