"""Pretrained image trunks from the files people have: torchvision and torchxrayvision state dicts -> MONAI.

medfusion's image encoders are MONAI networks (:mod:`medfusion.models.image_encoders`); pretrained
radiograph and ImageNet weights mostly come as state dicts of other layouts:

* ``torchvision``: ``torchvision.models.densenet121`` / ``resnet18`` / ``resnet34`` / ``resnet50``
  (``model.state_dict()``, e.g. the ImageNet weights). DenseNet layers gain MONAI's ``.layers.``
  level (the pre-0.3 keys ``norm.1``/``conv.2`` are read too); ResNet keys are MONAI's already,
  MONAI's shortcut convolutions have a bias (set to zero: the same function). Input in ``[0, 1]``
  normalised with the ImageNet mean and std.
* ``xrv``: torchxrayvision ``xrv.models.DenseNet`` (``state_dict()`` of a loaded model: the
  torchvision layout with a 1-channel ``conv0``, an 18-way classifier and an ``op_threshs`` buffer)
  and ``xrv.models.ResNet`` (resnet50, keys under ``model.``). torchxrayvision's own ``.pt`` files are
  pickled model objects, which medfusion refuses to load; save ``model.state_dict()`` first. Input
  scaled to ``[-1024, 1024]``.

Classifier heads (and ``op_threshs``) are dropped. The first convolution is adapted to the target's
input channels: 3 -> 1 sums the RGB filters (a grey image then gives what the source gives on that
image repeated to three channels), 1 -> 3 spreads the filter over the channels (divided by 3). The
normalisation each layout expects is :data:`~medfusion.processing.spec.SOURCE_INTENSITY`; a
converted ``.safetensors`` file records it in its metadata.

:func:`to_monai` is the mapping; training applies it when ``image_encoder.pretrained_layout`` is not
``monai`` (:func:`~medfusion.models.image_encoders.load_trunk_weights`), and ``medfusion
convert-weights`` writes it once to a file (:func:`convert_file`). In a config::

    image_encoder: {name: densenet121, in_channels: 1, pretrained_path: xrv-all.pt, pretrained_layout: xrv}
    data: {image_size: [224, 224]}   # intensity: auto -> xrv; the size the xrv DenseNets were trained at

or, from a converted file, ``pretrained_layout: monai`` (the default) and ``data.intensity`` set to
what ``convert-weights`` printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import torch

from medfusion.config import ImageEncoderConfig
from medfusion.errors import MedfusionError
from medfusion.processing.spec import SOURCE_INTENSITY

#: Key layouts of pretrained weights files (``monai``: already medfusion's).
Layout = Literal["monai", "torchvision", "xrv"]
#: Architectures each foreign layout exists for.
ARCHS: dict[str, tuple[str, ...]] = {
    "torchvision": ("densenet121", "resnet18", "resnet34", "resnet50"),
    "xrv": ("densenet121", "resnet50"),
}
#: Source keys that are not part of the trunk (classifier heads, xrv's operating points).
_DROPPED = re.compile(r"^(classifier\.|fc\.|op_threshs$|upsample\.)")
#: torchvision < 0.3 DenseNet keys (``denselayer1.norm.1.weight``).
_LEGACY_DENSE = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.(\d)\.(weight|bias|running_mean|running_var)$")
_DENSE_LAYER = re.compile(r"(denselayer\d+)\.")


def first_conv_key(arch: str) -> str:
    """The state-dict key of ``arch``'s first convolution weight (the same in every layout)."""
    return "features.conv0.weight" if arch.startswith("densenet") else "conv1.weight"


def _check_layout(layout: str, arch: str) -> None:
    if layout not in get_args(Layout):
        raise MedfusionError(f"unknown weights layout {layout!r}; known: {', '.join(get_args(Layout))}")
    if layout != "monai" and arch not in ARCHS[layout]:
        raise MedfusionError(f"no {layout} layout for image encoder {arch!r}; {layout} has {', '.join(ARCHS[layout])}")


def _adapt_channels(weight: torch.Tensor, in_channels: int, key: str, source: str) -> torch.Tensor:
    """First-conv filters ``(O, C_src, k, k)`` -> ``(O, in_channels, k, k)``."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:  # grey input: the RGB filters summed
        return weight.sum(dim=1, keepdim=True)
    if have == 1:  # colour input into a grey filter: the mean of the channels
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    raise MedfusionError(f"{source}: {key} takes {have} input channels; cannot adapt it to {in_channels}")


def to_monai(
    state: Mapping[str, torch.Tensor], *, layout: Layout, arch: str, in_channels: int, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename a torchvision / torchxrayvision state dict to the MONAI network's keys.

    Args:
        state: The source state dict (a ``module.`` prefix from DataParallel is removed).
        layout: The source's key layout; ``monai`` returns the dict with only the prefix removed.
        arch: medfusion's image encoder name (``densenet121``, ``resnet18``...).
        in_channels: Input channels of the target encoder (first-conv filters are adapted to it).
        source: Named in errors (the file).

    Returns:
        A MONAI state dict without classifier keys (not yet checked against the network: see
        :func:`check_trunk_keys`).

    Raises:
        MedfusionError: Unknown layout, an architecture the layout has no weights for, or a first
            convolution that cannot be adapted.
    """
    _check_layout(layout, arch)
    out = {k.removeprefix("module."): v for k, v in state.items()}
    if layout == "monai":
        return out
    if layout == "xrv" and arch.startswith("resnet"):
        out = {k.removeprefix("model."): v for k, v in out.items()}
    out = {k: v for k, v in out.items() if not _DROPPED.match(k)}
    if arch.startswith("densenet"):
        out = {_DENSE_LAYER.sub(r"\1.layers.", _LEGACY_DENSE.sub(r"\1\2.\3", k)): v for k, v in out.items()}
    else:  # MONAI's shortcut convolutions have a bias; torchvision's have none (zero is the same function)
        for key in [k for k in out if k.endswith("downsample.0.weight")]:
            bias = key.removesuffix("weight") + "bias"
            out.setdefault(bias, torch.zeros(out[key].shape[0], dtype=out[key].dtype))
    conv = first_conv_key(arch)
    if conv in out:
        out[conv] = _adapt_channels(out[conv], in_channels, conv, source)
    return out


def check_trunk_keys(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, source: str, target: str
) -> None:
    """Raise unless ``state`` has exactly ``expected``'s keys with the same shapes.

    Args:
        state: Converted weights.
        expected: The target network's state dict (trunk keys only).
        source: The file, named in the error.
        target: The target network, named in the error.

    Raises:
        MedfusionError: Missing keys, unexpected keys or shape mismatches (the first few of each named).
    """
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    details = []
    if missing:
        details.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        more = ", ..." if len(unexpected) > 3 else ""
        details.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}{more})")
    if wrong:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:3]]
        details.append(f"{len(wrong)} shape mismatches ({'; '.join(shapes)})")
    if details:
        raise MedfusionError(
            f"{source}: weights do not match {target} (wrong --layout/--arch or in_channels?): " + "; ".join(details)
        )


def convert_file(
    src: str | Path, out: str | Path, *, layout: Layout, arch: str, in_channels: int = 1
) -> dict[str, torch.Tensor]:
    """Convert a weights file to medfusion's MONAI layout and save it as ``.safetensors``.

    The output holds the MONAI network's trunk keys (load it with ``pretrained_layout: monai``);
    its metadata records ``source_layout``, ``arch``, ``in_channels`` and the source's expected
    ``intensity`` normalisation (set ``data.intensity`` to it when training from the converted file).

    Args:
        src: A torchvision / torchxrayvision state dict (``.pt``/``.pth``/``.safetensors``).
        out: The ``.safetensors`` file to write.
        layout: The source's key layout.
        arch: medfusion's image encoder name.
        in_channels: Input channels of the encoder that will load the file.

    Returns:
        The converted state dict.

    Raises:
        MedfusionError: Unreadable or unsafe source, or keys/shapes that do not match ``arch``.
    """
    from safetensors.torch import save_file

    from medfusion.models.image_encoders import build_image_encoder, trunk_state
    from medfusion.models.weights import load_state_dict

    src, out = Path(src), Path(out)
    if out.suffix != ".safetensors":
        raise MedfusionError(f"{out}: the converted weights are written as .safetensors")
    _check_layout(layout, arch)
    state = to_monai(load_state_dict(src), layout=layout, arch=arch, in_channels=in_channels, source=str(src))
    encoder = build_image_encoder(ImageEncoderConfig(name=arch, in_channels=in_channels), (224, 224))
    check_trunk_keys(state, trunk_state(encoder), source=str(src), target=f"MONAI {arch}")
    meta = {
        "format": "pt",
        "source_layout": layout,
        "arch": arch,
        "in_channels": str(in_channels),
        "intensity": SOURCE_INTENSITY.get(layout, "zscore"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata=meta)
    return state
