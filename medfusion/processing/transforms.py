"""MONAI dictionary transforms for study records ``{"image", "report", "label", "meta"}``.

Only the ``"image"`` key (or the keys given) is touched; ``report``, ``label``, ``meta`` and any
other key pass through unchanged.

:func:`image_transforms` builds the standard chain:

1. :class:`LoadDicomd`: path(s) -> float32 display values in ``[0, 1]``, ``(C, H, W)`` or
   ``(C, D, H, W)``. 2D JPEG 2000 is decoded only down to the resolution level the resize needs
   (:mod:`medfusion.ingest.dicom.reduced`).
2. ``Resized`` to ``image_size`` (mode ``"area"`` by default: anti-aliased when downsampling, which
   is the usual case for radiographs).
3. Training only: a small ``RandAffined`` (rotation up to 5 degrees, scale +-5 %, shift +-3 %,
   probability 0.5, border padding). **No flips by default**: chest laterality (heart on the
   patient's left, situs) is diagnostic, so mirrored radiographs are not plausible inputs.
4. ``NormalizeIntensityd`` per image and channel (zero mean, unit variance). Chosen over
   ``ScaleIntensityd`` because the display values are already in ``[0, 1]`` but exposure and
   windowing vary between sites; z-scoring removes the per-image brightness/contrast offset and
   gives CNNs centred inputs. Constant images stay all zero. Trunks pretrained elsewhere expect
   their own fixed normalisation instead (``intensity``: ``imagenet`` mean/std, torchxrayvision's
   ``xrv`` ``[-1024, 1024]``): :class:`NormalizeFixedd`.
5. ``EnsureTyped``: a plain float32 ``torch.Tensor`` (no MetaTensor), so batches collate with the
   non-tensor keys.

MONAI's ``Compose`` wraps exceptions raised inside a transform in ``RuntimeError``; use
:func:`input_error` to recover the :class:`~medfusion.errors.InputRejected` (e.g. a
:class:`~medfusion.errors.DicomReadError`) that caused it. The
:class:`~medfusion.processing.preprocessor.Preprocessor` does so, so its callers only ever see
:class:`~medfusion.errors.InputRejected`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    Resized,
)

from medfusion.errors import DicomReadError, InputRejected
from medfusion.ingest.dicom.limits import DEFAULT_MAX_PIXELS, byte_limit
from medfusion.ingest.dicom.read import read_dicom, read_dicom_header
from medfusion.ingest.dicom.selection import SeriesRuleSet
from medfusion.ingest.dicom.series import read_series
from medfusion.processing.spec import FramePolicy, Intensity, intensity_stats

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights used to turn RGB into one channel.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def input_error(exc: BaseException) -> InputRejected | None:
    """The :class:`InputRejected` behind ``exc`` (itself or in its cause chain), or None.

    Args:
        exc: An exception raised by a transform chain (MONAI re-raises as ``RuntimeError``).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InputRejected):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _paths(value: Any, key: Hashable) -> list[Path]:
    if isinstance(value, (str, Path)):
        return [Path(value)]
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, Path)) for v in value):
        return [Path(v) for v in value]
    raise DicomReadError(f"<{key}>", f"expected a path or a non-empty list of paths, got {type(value).__name__}")


def _to_luminance(pixels: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """RGB -> one channel along ``channel_dim`` (kept, size 1). Grayscale passes through."""
    if pixels.shape[channel_dim] != 3:
        return pixels
    shape = [1] * pixels.ndim
    shape[channel_dim] = 3
    return (pixels * _LUMA.view(shape)).sum(dim=channel_dim, keepdim=True)


class LoadDicomd(MapTransform):
    """Load one study's DICOM image(s) from paths into a tensor.

    Which of a study's instances are read is decided by ``series_rules``
    (:class:`~medfusion.ingest.dicom.selection.SeriesRuleSet`, from the headers: the first rule any
    instance matches wins; a study no rule matches raises ``DicomReadError`` "no series matched rule
    set ..."). The default rule set takes frontal views (PA/AP) first, then anything.

    2D (``spatial_dims=2``): the key holds a path or a list of paths (one study's instances). The
    instance used is the first selected (by InstanceNumber, then path). Multi-frame files are reduced
    by ``frame_policy`` (``first``, ``middle`` frame, or the ``mean`` of all frames). Output ``(C, H, W)``.

    3D (``spatial_dims=3``): the selected series (the one with most matching instances) is read with
    :func:`~medfusion.ingest.dicom.series.read_series` (sorted by slice position; a single multi-frame file
    gives its frames as depth). Output ``(C, D, H, W)``.

    ``C`` is 1 for grayscale sources, or with ``grayscale=True`` (RGB -> BT.601 luminance); 3 for
    colour sources with ``grayscale=False``. Values are in ``[0, 1]``.

    Raises:
        DicomReadError: From the reader (MONAI's Compose re-raises it as ``RuntimeError``; see
            :func:`input_error`).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        frame_policy: FramePolicy = "middle",
        spatial_dims: Literal[2, 3] = 2,
        grayscale: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        dicom_meta_key: str | None = None,
        allow_missing_keys: bool = False,
        series_rules: SeriesRuleSet | None = None,
        min_size: Sequence[int] | None = None,
    ) -> None:
        """Args:
        keys: Keys holding path(s).
        frame_policy: How a multi-frame 2D image becomes one frame.
        spatial_dims: 2 or 3.
        grayscale: Convert RGB to one luminance channel.
        max_pixels: Passed to the reader (refuses larger images before decoding).
        dicom_meta_key: When set, the PHI-free DICOM meta of the image read is stored under this
            key (e.g. ``"image_meta"``); off by default because its None values do not collate.
        allow_missing_keys: Don't fail when a key is absent.
        series_rules: Which instances to read; None: the default rule set (frontal first).
        min_size: 2D only: the ``(H, W)`` the image is resized to next; JPEG 2000 is then decoded at
            the smallest resolution level with both sides at least this (see
            :func:`~medfusion.ingest.dicom.read.read_dicom`). None: full resolution.
        """
        super().__init__(keys, allow_missing_keys)
        if frame_policy not in ("first", "middle", "mean"):
            raise ValueError(f"frame_policy must be 'first', 'middle' or 'mean', got {frame_policy!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.frame_policy = frame_policy
        self.spatial_dims = spatial_dims
        self.grayscale = grayscale
        self.max_pixels = max_pixels
        self.dicom_meta_key = dicom_meta_key
        self.series_rules = series_rules or SeriesRuleSet()
        self.min_size = tuple(int(v) for v in min_size) if min_size is not None and spatial_dims == 2 else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            paths = _paths(d[key], key)
            if self.spatial_dims == 2:
                image, meta = self._load_2d(paths)
            else:
                image, meta = self._load_3d(paths)
            d[key] = image
            if self.dicom_meta_key is not None:
                d[self.dicom_meta_key] = meta
        return d

    def _select(self, paths: list[Path], *, whole_series: bool) -> list[Path]:
        """The paths ``series_rules`` selects (headers read only when the choice depends on them)."""
        if len(paths) == 1 and self.series_rules.accepts_anything:
            return paths
        headers = [(p, read_dicom_header(p, max_bytes=byte_limit(self.max_pixels))) for p in paths]
        return [p for p, _ in self.series_rules.select(headers, whole_series=whole_series)]

    def _load_2d(self, paths: list[Path]) -> tuple[torch.Tensor, dict[str, Any]]:
        path = self._select(paths, whole_series=False)[0]
        image = read_dicom(path, max_pixels=self.max_pixels, min_size=self.min_size)
        pixels = image.pixels  # (F, C, H, W)
        if self.frame_policy == "first":
            pixels = pixels[0]
        elif self.frame_policy == "middle":
            pixels = pixels[pixels.shape[0] // 2]
        else:
            pixels = pixels.mean(dim=0)
        if self.grayscale:
            pixels = _to_luminance(pixels, channel_dim=0)
        return pixels.contiguous(), image.meta  # (C, H, W)

    def _load_3d(self, paths: list[Path]) -> tuple[torch.Tensor, dict[str, Any]]:
        image = read_series(self._select(paths, whole_series=True), max_pixels=self.max_pixels)
        pixels = image.pixels  # (D, C, H, W)
        if self.grayscale:
            pixels = _to_luminance(pixels, channel_dim=1)
        return pixels.permute(1, 0, 2, 3).contiguous(), image.meta  # (C, D, H, W)


class NormalizeFixedd(MapTransform):
    """``(x - mean_c) / std_c`` per channel with a pretrained source's fixed statistics.

    The statistics are picked for the image's channel count at call time
    (:func:`~medfusion.processing.spec.intensity_stats`), so an image with the wrong number of channels
    reaches the preprocessor's channel check instead of failing here.
    """

    def __init__(self, keys: KeysCollection, intensity: Intensity, allow_missing_keys: bool = False) -> None:
        """Args:
        keys: Image keys, ``(C, *spatial)`` values in ``[0, 1]``.
        intensity: ``imagenet`` or ``xrv``.
        allow_missing_keys: Don't fail when a key is absent.
        """
        super().__init__(keys, allow_missing_keys)
        if intensity == "zscore":
            raise ValueError("zscore is NormalizeIntensityd, not a fixed normalisation")
        self.intensity = intensity

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key], dtype=torch.float32)
            stats = intensity_stats(self.intensity, int(image.shape[0]))
            assert stats is not None
            shape = (-1,) + (1,) * (image.ndim - 1)
            mean, std = (torch.tensor(v, dtype=image.dtype).view(shape) for v in stats)
            d[key] = (image - mean) / std
        return d


def image_transforms(
    image_size: tuple[int, int] | tuple[int, int, int],
    *,
    frame_policy: FramePolicy = "middle",
    spatial_dims: Literal[2, 3] = 2,
    train: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    grayscale: bool = True,
    allow_flip: bool = False,
    resize_mode: str = "area",
    intensity: Intensity = "zscore",
    keys: KeysCollection = "image",
    series_rules: SeriesRuleSet | None = None,
    reduced_decode: bool = True,
) -> Compose:
    """The standard image chain for study records (see the module docstring for each step).

    Args:
        image_size: Output spatial size, ``(H, W)`` for 2D or ``(D, H, W)`` for 3D.
        frame_policy: Multi-frame reduction for 2D.
        spatial_dims: 2 or 3; must match ``len(image_size)``.
        train: Add the light random augmentation (seed it with ``Compose.set_random_state``).
        max_pixels: Reader bound on image size.
        grayscale: One luminance channel for colour sources.
        allow_flip: Also flip left-right at random when training (off: laterality matters).
        resize_mode: MONAI interpolation mode of ``Resized`` (``"area"``, ``"bilinear"``...).
        intensity: ``zscore`` per image, or a pretrained source's fixed normalisation (``imagenet``, ``xrv``).
        keys: Image keys.
        series_rules: Which of a study's instances are read (:class:`LoadDicomd`); None: frontal first.
        reduced_decode: 2D: decode JPEG 2000 only at the resolution the resize needs (the smallest
            level with every side >= ``image_size``; :mod:`medfusion.ingest.dicom.reduced`). Model inputs
            then differ from a full decode + resize by the bound stated in ``docs/scoring.md``.

    Returns:
        A ``Compose`` mapping a record to the same record with ``image`` a float32 tensor
        ``(C, *image_size)``; other keys untouched. ``log_stats`` is off so that a failure never
        logs report text or metadata values.

    Raises:
        ValueError: ``image_size`` does not match ``spatial_dims``.
    """
    size = tuple(int(s) for s in image_size)
    if len(size) != spatial_dims or any(s < 1 for s in size):
        raise ValueError(f"image_size {image_size} does not match spatial_dims={spatial_dims}")
    transforms: list[Any] = [
        LoadDicomd(
            keys,
            frame_policy=frame_policy,
            spatial_dims=spatial_dims,
            grayscale=grayscale,
            max_pixels=max_pixels,
            series_rules=series_rules,
            min_size=size if reduced_decode and spatial_dims == 2 else None,
        ),
        Resized(keys, spatial_size=size, mode=resize_mode),
    ]
    if train:
        rotate = 0.087 if spatial_dims == 2 else (0.05, 0.05, 0.05)  # 5 degrees in-plane / ~3 per axis
        transforms.append(
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=rotate,
                scale_range=[0.05] * spatial_dims,
                translate_range=[0.03 * s for s in size],
                mode="bilinear",
                padding_mode="border",
            )
        )
        if allow_flip:
            transforms.append(RandFlipd(keys, prob=0.5, spatial_axis=spatial_dims - 1))
    transforms += [
        NormalizeIntensityd(keys, channel_wise=True) if intensity == "zscore" else NormalizeFixedd(keys, intensity),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    return Compose(transforms, log_stats=False)
