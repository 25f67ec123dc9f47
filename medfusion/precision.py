"""Mixed precision: which autocast dtype an ``amp`` setting gives on a device (training and scoring).

``amp`` is one of :data:`AMP_MODES`:

- ``auto``: bfloat16 on a CUDA device that supports it, else float16 (with a GradScaler when
  training); off on CPU, where reduced precision is slower on most processors;
- ``bf16``: bfloat16 on any device (CPU autocast supports it);
- ``fp16``: float16, CUDA only (a GradScaler when training);
- ``off``: float32 throughout.

bfloat16 keeps float32's exponent range, so a model trained in one precision does not overflow when
scored in the other; float16 (range ±65,504) is the fallback for GPUs without bfloat16 (before Ampere).
"""

from __future__ import annotations

from typing import get_args

import torch

from medfusion.config import AmpMode
from medfusion.errors import ConfigError

#: Every ``amp`` setting (``training.amp``, ``medfusion score --amp``).
AMP_MODES: tuple[AmpMode, ...] = get_args(AmpMode)


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for an ``amp`` setting on ``device``.

    Args:
        amp: One of :data:`AMP_MODES`.
        device: The device the forward passes run on.

    Returns:
        The autocast dtype (None: no autocast) and whether training needs a GradScaler (float16 only).

    Raises:
        ConfigError: An unknown setting, or ``fp16`` without CUDA.
    """
    if amp not in AMP_MODES:
        raise ConfigError(f"amp: {amp!r} is not one of {', '.join(AMP_MODES)}")
    cuda = device.type == "cuda"
    if amp == "off" or (amp == "auto" and not cuda):
        return None, False
    if amp == "auto":
        return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)
    if amp == "bf16":
        return torch.bfloat16, False
    if not cuda:
        raise ConfigError(f"amp: fp16 needs a CUDA device, got {device} (use bf16, auto or off)")
    return torch.float16, True
