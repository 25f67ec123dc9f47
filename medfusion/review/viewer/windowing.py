"""Window/level in modality units: presets (the header's, then standard ones) and 8-bit rendering.

A :class:`Window` maps modality values (HU for CT) to display grey levels with PS3.3 C.11.2.1.2
windowing, done by pydicom's :func:`~pydicom.pixels.apply_windowing` on a presentation dataset
whose output range is ``0..255``; a header VOI LUT Sequence goes through
:func:`~pydicom.pixels.apply_voi`. Presets (:func:`presets`) are the header's windows with their
explanations, then the standard CT windows (lung, mediastinum, bone, soft tissue) or, for
projection radiographs, the full range and an automatic window from the 1st-99th percentiles.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi, apply_windowing

from medfusion.review.viewer.pixels import ModalityImage

#: Standard CT windows (center, width) in HU.
CT_PRESETS: tuple[tuple[str, float, float], ...] = (
    ("Lung", -600.0, 1500.0),
    ("Mediastinum", 50.0, 350.0),
    ("Bone", 400.0, 1800.0),
    ("Soft tissue", 40.0, 400.0),
)
#: Percentiles of the automatic window for projection radiographs (CR, DX, ...).
AUTO_PERCENTILES = (1.0, 99.0)
#: Pixels sampled (evenly strided) to compute ranges and percentiles.
_SAMPLE = 1_000_000


@dataclass(frozen=True)
class Window:
    """A window to display with.

    Attributes:
        name: Shown in the preset list (``Header 1: LUNG``, ``Lung``, ``Auto (1-99%)``...).
        center: Window center, modality units.
        width: Window width, modality units (at least 1).
        function: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.
        voi_lut: Apply the header's VOI LUT Sequence instead of center/width.
    """

    name: str
    center: float
    width: float
    function: str = "LINEAR"
    voi_lut: bool = False


def _sample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    step = max(1, flat.size // _SAMPLE)
    sample = flat[::step]
    return sample[np.isfinite(sample)]


def value_range(image: ModalityImage) -> tuple[float, float]:
    """(min, max) of the image's finite values (sampled for large images); ``(0, 1)`` when none."""
    sample = _sample(image.values)
    return (float(sample.min()), float(sample.max())) if sample.size else (0.0, 1.0)


def presets(image: ModalityImage) -> list[Window]:
    """The windows offered for ``image``: header first (its default), then the standard ones.

    CT gets lung (-600/1500), mediastinum (50/350), bone (400/1800) and soft tissue (40/400) in HU;
    every image gets its full range and an automatic 1st-99th percentile window.
    """
    out: list[Window] = []
    if image.voi_lut is not None:
        out.append(Window("Header VOI LUT", *_lut_window(image), voi_lut=True))
    for i, w in enumerate(image.windows, 1):
        label = f"Header {i}" + (f": {w.explanation}" if w.explanation else "")
        out.append(Window(label, w.center, w.width, w.function))
    if str(image.modality or "").upper() == "CT" and image.units == "HU":
        out.extend(Window(name, c, w) for name, c, w in CT_PRESETS)
    lo, hi = value_range(image)
    out.append(Window("Full range", (lo + hi) / 2.0, max(hi - lo, 1.0)))
    sample = _sample(image.values)
    if sample.size:
        p_lo, p_hi = (float(v) for v in np.percentile(sample, AUTO_PERCENTILES))
        out.append(Window("Auto (1-99%)", (p_lo + p_hi) / 2.0, max(p_hi - p_lo, 1.0)))
    return out


def _lut_window(image: ModalityImage) -> tuple[float, float]:
    """The input range the VOI LUT covers, as a (center, width) for the sliders."""
    assert image.voi_lut is not None
    descriptor = [int(v) for v in image.voi_lut.VOILUTSequence[0].LUTDescriptor]
    entries = descriptor[0] or 2**16
    return descriptor[1] + entries / 2.0, float(entries)


def _presentation(window: Window) -> Dataset:
    """A dataset whose windowing output range is 0..255 (BitsStored 8, unsigned)."""
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 8
    ds.PixelRepresentation = 0
    ds.WindowCenter = float(window.center)
    ds.WindowWidth = float(max(window.width, 1.0))
    ds.VOILUTFunction = window.function
    return ds


def render(
    frame: np.ndarray, window: Window, *, inverted: bool, invert: bool = False, image: ModalityImage | None = None
) -> np.ndarray:
    """Window one frame to 8-bit grey levels.

    Args:
        frame: float32 ``(rows, cols)`` modality values.
        window: The window (or the header VOI LUT, which needs ``image``).
        inverted: The image is MONOCHROME1 (low values bright).
        invert: The user's invert toggle (flips once more).
        image: The image the frame belongs to (for its VOI LUT).

    Returns:
        uint8 ``(rows, cols)``.
    """
    if window.voi_lut and image is not None and image.voi_lut is not None:
        table_in = np.rint(np.nan_to_num(frame)).astype(np.int64)
        mapped = apply_voi(table_in, image.voi_lut).astype(np.float64)
        descriptor = [int(v) for v in image.voi_lut.VOILUTSequence[0].LUTDescriptor]
        bits = descriptor[2] if len(descriptor) > 2 and descriptor[2] > 0 else 16
        out = mapped / float(2**bits - 1) * 255.0
    else:
        out = apply_windowing(np.nan_to_num(frame).astype(np.float64), _presentation(window))
    grey = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if inverted != invert:
        grey = 255 - grey
    return grey


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of uint8 ``(rows, cols)`` grey or ``(rows, cols, 3)`` RGB pixels (lossless, full resolution)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def distinct_levels(grey: np.ndarray) -> int:
    """How many distinct grey levels a rendered frame shows (what a wider window reveals)."""
    return int(np.unique(grey).size)
