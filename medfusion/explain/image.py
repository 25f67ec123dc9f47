"""Image heatmaps: hybrid cross-attention and Grad-CAM (``monai.visualize.GradCAM``), per label.

Both return ``(L, H, W)`` float arrays in ``[0, 1]`` at the model-input size (min-max scaled per
label; an all-equal map becomes all zeros).

* **cross_attention** (``hybrid`` only): the text->image attention weights ``(heads, T, N)`` averaged
  over heads and over the report's real tokens give one weight per image token; the token grid is
  upsampled bilinearly to ``(H, W)``. The map says where the *report* looked in the image; it is the
  same for every label (the attention has no label axis), so it is repeated ``L`` times.
* **gradcam** (CNN trunks: ResNet, DenseNet): Grad-CAM of each label's logit at one trunk stage, the
  report held fixed. The stage is the deepest whose feature grid is at least :data:`MIN_GRID` on its
  shortest side: at 224 px that is the last stage (7x7), but the demo's 32-64 px inputs leave the last
  stage with a 1x1-2x2 grid, which cannot localize anything, so an earlier stage is used there.
* **saliency** (any image encoder): SmoothGrad (``monai.visualize.SmoothGrad``): the magnitude of
  each label logit's gradient with respect to the input pixels, averaged over noisy copies of the
  image (seeded), smoothed over 3x3 pixels. Grad-CAM's channel-averaged gradients can cancel at
  the shallow stages small inputs force on it, and its stage map is coarse: on the demo champion at
  64 px (Grad-CAM at an 8x8 stage) saliency finds pneumonia's consolidation patch that Grad-CAM misses
  (pointing game; measured by ``python benchmarks/faithfulness.py --config demo --threads 1``,
  figures in ``docs/explanations.md``); saliency works at pixel resolution and on ViTs too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfusion.models.image_encoders import DenseNetTrunk, ResNetTrunk
from medfusion.models.model import MedFusionModel

#: ``on_label(label_index)``: called before each label's pass; may raise to abandon the explanation.
LabelStep = Callable[[int], None]

#: Grad-CAM uses the deepest trunk stage whose feature grid is at least this many cells per side.
MIN_GRID = 7

#: Candidate Grad-CAM stages per trunk type, deepest first (names inside the trunk).
_STAGES: dict[type, tuple[str, ...]] = {
    ResNetTrunk: ("layer4", "layer3", "layer2", "layer1"),
    DenseNetTrunk: ("features.denseblock4", "features.denseblock3", "features.denseblock2", "features.denseblock1"),
}


def normalize_maps(maps: torch.Tensor) -> np.ndarray:
    """Min-max scale each map to ``[0, 1]`` (constant maps become 0).

    Args:
        maps: (L, H, W) or (L, 1, H, W) raw maps.

    Returns:
        (L, H, W) float32 array.
    """
    maps = maps.detach().float().reshape(maps.shape[0], *maps.shape[-2:])
    rows = maps.flatten(1)
    lo, hi = rows.min(1).values[:, None, None], rows.max(1).values[:, None, None]
    span = hi - lo
    flat = span <= 1e-5 * torch.maximum(hi.abs(), lo.abs()) + 1e-12  # constant up to float rounding
    out = torch.where(flat, torch.zeros_like(maps), (maps - lo) / span.clamp(min=1e-12))
    return out.cpu().numpy().astype(np.float32)


def upsample(grid_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners False) of (L, h, w) maps to (L, *size)."""
    return F.interpolate(grid_map[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def cross_attention_heatmaps(
    attentions: torch.Tensor, token_mask: torch.Tensor, grid: tuple[int, ...], size: tuple[int, int], n_labels: int
) -> np.ndarray:
    """Text->image attention of one study as per-label heatmaps.

    Args:
        attentions: (heads, T, N) attention weights of the study (rows of padding are zero).
        token_mask: (T,) bool, the tokens whose rows are averaged (the report's real tokens).
        grid: Image token grid ``(h, w)``, ``h * w == N``.
        size: Model-input ``(H, W)``.
        n_labels: L; the map is the same for every label.

    Returns:
        (L, H, W) in [0, 1].
    """
    rows = attentions.float().mean(0)[token_mask.bool()]  # (T_real, N)
    weights = rows.mean(0).reshape(1, *grid)  # (1, h, w)
    return np.repeat(normalize_maps(upsample(weights, size)), n_labels, axis=0)


class _ImageToLogits(nn.Module):
    """Wraps the fusion model as image -> logits with the rest of the batch (the report) fixed.

    Made in eval mode: MONAI's ``ModelWithHooks`` puts a module that was training back into training
    mode after each pass, which would turn dropout on (and batch-norm statistics updates) for every
    later pass on the wrapped model.
    """

    def __init__(self, model: MedFusionModel) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, image: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model({**batch, "image": image}).logits  # (B, L)


def gradcam_layer(model: MedFusionModel, image_shape: tuple[int, ...]) -> str | None:
    """Name (inside ``model``) of the trunk stage Grad-CAM uses, or None for non-CNN encoders.

    Args:
        model: The fusion model.
        image_shape: ``(C, H, W)`` of the model input (used to measure each stage's grid).
    """
    encoder = model.image_encoder
    if encoder is None or len(image_shape) != 3:
        return None
    stages = next((s for cls, s in _STAGES.items() if isinstance(encoder.trunk, cls)), None)
    if stages is None:
        return None
    grids: dict[str, tuple[int, ...]] = {}
    modules = dict(encoder.trunk.named_modules())
    hooks = [modules[s].register_forward_hook(_grid_recorder(grids, s)) for s in stages]
    try:
        with torch.no_grad():
            param = next(encoder.parameters())
            encoder.trunk(torch.zeros(1, *image_shape, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
    chosen = next((s for s in stages if min(grids[s]) >= MIN_GRID), stages[-1])
    return f"image_encoder.trunk.{chosen}"


def _grid_recorder(grids: dict[str, tuple[int, ...]], name: str) -> Callable[..., None]:
    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        grids[name] = tuple(int(s) for s in output.shape[2:])

    return hook


class GradCamExplainer:
    """``monai.visualize.GradCAM`` over a private copy of the model (MONAI's hooks stay on the copy).

    Not thread-safe: MONAI keeps the last activations and gradients on the object and zeroes the
    copy's parameter gradients; use it through :class:`medfusion.explain.workspace.Workspace`.

    Args:
        model: The fusion model (its stages are measured on it with temporary forward hooks;
            MONAI's hooks go on the copy).
        image_shape: ``(C, H, W)`` of the model input.

    Attributes:
        layer: The Grad-CAM stage (name inside the model), or None when Grad-CAM does not apply.
        model: The private copy Grad-CAM runs on (None when it does not apply).
    """

    def __init__(self, model: MedFusionModel, image_shape: tuple[int, ...]) -> None:
        from monai.visualize import GradCAM

        self.layer = gradcam_layer(model, image_shape)
        self.cam = None
        self.model: MedFusionModel | None = None
        if self.layer is not None:
            self.model = copy.deepcopy(model).eval()
            self.cam = GradCAM(
                _ImageToLogits(self.model), target_layers=f"model.{self.layer}", postprocessing=lambda x: x
            )

    def heatmaps(
        self,
        batch: dict[str, torch.Tensor],
        n_labels: int,
        on_label: LabelStep | None = None,
        labels: list[int] | None = None,
    ) -> np.ndarray:
        """Grad-CAM per label for a one-study batch.

        Args:
            batch: A collated batch of one study (see :class:`~medfusion.processing.sample.Collator`), on
                the model's device.
            n_labels: L.
            on_label: Called with each label index before its pass (may raise to abandon).
            labels: Label indices to compute (default: all); the other maps are 0.

        Returns:
            (L, H, W) in [0, 1].
        """
        assert self.cam is not None, "Grad-CAM does not apply to this model"
        maps = torch.zeros(n_labels, *batch["image"].shape[-2:])
        with torch.enable_grad():
            for label in range(n_labels) if labels is None else labels:
                if on_label is not None:
                    on_label(label)
                cam = self.cam(batch["image"], class_idx=label, batch=batch)  # (1, 1, H, W), ReLU'd, upsampled
                maps[label] = cam[0, 0].detach().float().cpu()
        return normalize_maps(maps)


#: SmoothGrad settings: noisy copies per label and noise spread (fraction of the image's range).
SALIENCY_SAMPLES = 8
SALIENCY_SPREAD = 0.15


def _seeded_smoothgrad(model: nn.Module) -> Any:
    """``monai.visualize.SmoothGrad`` whose noise comes from a private generator (``self.generator``).

    MONAI draws the noise from the global torch RNG; seeding that (even inside ``fork_rng``) changes
    the RNG state every other thread of the process sees, and their draws change ours.
    """
    from monai.visualize import SmoothGrad

    class SeededSmoothGrad(SmoothGrad):
        generator: torch.Generator

        def __call__(self, x: torch.Tensor, index: torch.Tensor | int | None = None, **kwargs: Any) -> torch.Tensor:
            # MONAI's SmoothGrad.__call__ (1.6), the noise drawn with ``self.generator``.
            stdev = (self.stdev_spread * (x.max() - x.min())).item()
            total = torch.zeros_like(x)
            for _ in range(self.n_samples):
                noise = torch.normal(
                    0, stdev, size=x.shape, dtype=torch.float32, device=x.device, generator=self.generator
                )
                grad = self.get_grad((x + noise).detach(), index, **kwargs)
                total += (grad * grad) if self.magnitude else grad
            if self.magnitude:
                total = total**0.5
            return total / self.n_samples

    return SeededSmoothGrad(
        model, stdev_spread=SALIENCY_SPREAD, n_samples=SALIENCY_SAMPLES, magnitude=True, verbose=False
    )


class SaliencyExplainer:
    """``monai.visualize.SmoothGrad`` per label, seeded with a private generator.

    Not thread-safe (MONAI zeroes and accumulates the model's parameter gradients); use it through
    :class:`medfusion.explain.workspace.Workspace`.

    Args:
        model: The fusion model.
        copy_model: Run on a private copy (the default), so ``model`` is not modified; False when
            ``model`` is already a private copy.
    """

    def __init__(self, model: MedFusionModel, *, copy_model: bool = True) -> None:
        self.model = copy.deepcopy(model).eval() if copy_model else model
        self.smooth = _seeded_smoothgrad(_ImageToLogits(self.model))

    def heatmaps(
        self,
        batch: dict[str, torch.Tensor],
        n_labels: int,
        seed: int = 0,
        on_label: LabelStep | None = None,
        labels: list[int] | None = None,
    ) -> np.ndarray:
        """SmoothGrad magnitude per label for a one-study batch.

        Args:
            batch: A collated batch of one study, on the model's device; ``image`` is (1, C, H, W).
            n_labels: L.
            seed: Seed of the noise (drawn from a private generator; the global torch RNG is not used).
            on_label: Called with each label index before its pass (may raise to abandon).
            labels: Label indices to compute (default: all); the other maps are 0. Each label's
                noise is seeded by ``(seed, label)``, so a label's map does not depend on the others.

        Returns:
            (L, H, W) in [0, 1].
        """
        image = batch["image"]
        maps = torch.zeros(n_labels, *image.shape[-2:])
        with torch.enable_grad():
            for label in range(n_labels) if labels is None else labels:
                if on_label is not None:
                    on_label(label)
                self.smooth.generator = torch.Generator(device=image.device).manual_seed(seed * 1009 + label)
                grad = self.smooth(image.detach().clone(), index=label, batch=batch)  # (1, C, H, W)
                pooled = F.avg_pool2d(grad.abs().mean(1, keepdim=True), 3, stride=1, padding=1)[0, 0]
                maps[label] = pooled.detach().float().cpu()
        return normalize_maps(maps)
