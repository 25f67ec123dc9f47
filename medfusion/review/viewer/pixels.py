"""One DICOM instance in modality units, at full resolution, for the viewer.

The grayscale pipeline stops after the modality stage (PS3.4 Annex N): stored values go through
the Modality LUT Sequence (pydicom's :func:`~pydicom.pixels.apply_modality_lut`) or Rescale
Slope/Intercept, so a CT is in Hounsfield units and a CR/DX in its stored values after the
modality LUT. The VOI stage (window/level) is left to the viewer (:mod:`.windowing`), so widening
the window shows values a narrow window clipped. MONOCHROME1 is kept as stored, with an ``inverted``
flag the display applies; colour becomes luminance (Rec. 601) scaled to ``0..255``.

Reading reuses the project's bounded decoder (:func:`medfusion.ingest.dicom.decode.decode`): the byte
and pixel bounds are checked from the header before any pixel byte is read, and every failure is a
:class:`~medfusion.errors.DicomReadError` naming the file. No patient identifier is kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medfusion.ingest.dicom.decode import decode
from medfusion.ingest.dicom.guard import guard, pydicom_warnings
from medfusion.ingest.dicom.header import as_floats, functional_group, get
from medfusion.ingest.dicom.limits import DEFAULT_MAX_PIXELS, byte_limit

#: Rec. 601 luma weights (R, G, B) for colour images.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class HeaderWindow:
    """A VOI window stored in the header (Window Center/Width, PS3.3 C.11.2.1.2).

    Attributes:
        center: Window Center, in modality units.
        width: Window Width, in modality units.
        explanation: Window Center & Width Explanation (e.g. ``LUNG``), or ``""``.
        function: VOI LUT Function: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.
    """

    center: float
    width: float
    explanation: str = ""
    function: str = "LINEAR"


@dataclass(frozen=True)
class ModalityImage:
    """One instance's pixels in modality units.

    Attributes:
        values: float32 ``(frames, rows, cols)``: modality values (HU for CT), or luminance ``0..255``
            for colour images.
        modality: DICOM Modality (``CT``, ``CR``, ``DX``...), or None.
        units: What the values are: ``HU``, the Rescale Type, ``stored value`` or ``luminance``.
        inverted: MONOCHROME1 (or Presentation LUT Shape INVERSE): low values are displayed bright.
        windows: The header's VOI windows, in file order.
        voi_lut: A dataset holding only the header's VOI LUT Sequence (for
            :func:`pydicom.pixels.apply_voi`), or None.
        sop_uid: SOPInstanceUID.
        series_uid: SeriesInstanceUID.
        pixel_spacing: (row, col) spacing in mm, or None.
    """

    values: np.ndarray
    modality: str | None
    units: str
    inverted: bool
    windows: tuple[HeaderWindow, ...] = ()
    voi_lut: Dataset | None = field(default=None, compare=False)
    sop_uid: str | None = None
    series_uid: str | None = None
    pixel_spacing: tuple[float, float] | None = None

    @property
    def frames(self) -> int:
        """Number of frames."""
        return int(self.values.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one frame."""
        return int(self.values.shape[1]), int(self.values.shape[2])

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (clamped to the valid range): float32 ``(rows, cols)``."""
        return self.values[min(max(int(index), 0), self.frames - 1)]


def load_instance(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ModalityImage:
    """Read one file's pixels in modality units (all frames, full resolution).

    Args:
        path: The DICOM file.
        max_pixels: Refuse images whose ``rows * cols * frames * samples`` exceeds this (checked from
            the header before any pixel byte is read); files are bounded by
            :func:`~medfusion.ingest.dicom.limits.byte_limit` of it.

    Returns:
        The :class:`ModalityImage`.

    Raises:
        DicomReadError: The file cannot be read or decoded (the reason says why).
    """
    path = Path(path)
    with pydicom_warnings(path):
        decoded = guard(path, lambda: decode(path, max_pixels, byte_limit(max_pixels)))
        return guard(path, lambda: _from_decoded(decoded.values, decoded.ds, decoded.meta, decoded.grayscale))


def _from_decoded(values: np.ndarray, ds: Dataset, meta: dict, grayscale: bool) -> ModalityImage:
    """``values``: (frames, channels, rows, cols) after the modality stage (grayscale) or in [0, 1] (colour)."""
    spacing = meta.get("pixel_spacing")
    common: dict[str, Any] = {
        "modality": meta.get("modality"),
        "sop_uid": meta.get("sop_uid"),
        "series_uid": meta.get("series_uid"),
        "pixel_spacing": (float(spacing[0]), float(spacing[1])) if spacing else None,
    }
    if not grayscale:
        luma = np.tensordot(np.asarray(LUMA, dtype=np.float32), values, axes=([0], [1]))  # (frames, rows, cols)
        return ModalityImage(values=(luma * 255.0).astype(np.float32), units="luminance", inverted=False, **common)
    photometric = str(get(ds, "PhotometricInterpretation", "")).strip().upper()
    shape = str(get(ds, "PresentationLUTShape", "")).strip().upper()
    return ModalityImage(
        values=np.ascontiguousarray(values[:, 0], dtype=np.float32),
        units=_units(ds, meta.get("modality")),
        inverted=photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE"),
        windows=header_windows(ds),
        voi_lut=_voi_lut(ds),
        **common,
    )


def _units(ds: Dataset, modality: str | None) -> str:
    rescale_type = str(get(ds, "RescaleType", "") or "").strip()
    if rescale_type and rescale_type.upper() != "US":
        return rescale_type
    if str(modality or "").upper() == "CT":
        return "HU"  # PS3.3 C.8.2.1: CT rescaled values are Hounsfield units
    if ds.get("ModalityLUTSequence"):
        return str(ds.ModalityLUTSequence[0].get("ModalityLUTType", "") or "stored value").strip() or "stored value"
    return "stored value"


def header_windows(ds: Dataset) -> tuple[HeaderWindow, ...]:
    """Every (Window Center, Width, Explanation) of the header (or its per-frame functional groups).

    Invalid windows (width below 1 for LINEAR, non-positive otherwise) are left out.
    """
    centers, widths = get(ds, "WindowCenter"), get(ds, "WindowWidth")
    explanations = get(ds, "WindowCenterWidthExplanation")
    if centers is None or widths is None:
        centers = functional_group(ds, "FrameVOILUTSequence", "WindowCenter")
        widths = functional_group(ds, "FrameVOILUTSequence", "WindowWidth")
        explanations = functional_group(ds, "FrameVOILUTSequence", "WindowCenterWidthExplanation")
    n = min(_count(centers), _count(widths))
    c, w = as_floats(centers, n) if n else None, as_floats(widths, n) if n else None
    if not c or not w:
        return ()
    many = isinstance(explanations, list | tuple | MultiValue)
    texts = [str(e).strip() for e in explanations] if many else []
    if explanations is not None and not texts and str(explanations).strip():
        texts = [str(explanations).strip()]
    function = str(get(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    out = []
    for i, (center, width) in enumerate(zip(c, w, strict=False)):
        if (function == "LINEAR" and width < 1) or width <= 0:
            continue
        out.append(HeaderWindow(center, width, texts[i] if i < len(texts) else "", function))
    return tuple(out)


def _count(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str | bytes):
        return 1
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return 1


def _voi_lut(ds: Dataset) -> Dataset | None:
    items = ds.get("VOILUTSequence")
    if not items or items[0].get("LUTDescriptor") is None or items[0].get("LUTData") is None:
        return None
    lut = Dataset()
    lut.VOILUTSequence = items
    lut.PixelRepresentation = get(ds, "PixelRepresentation", 0)
    lut.BitsStored = get(ds, "BitsStored", 16)
    return lut
