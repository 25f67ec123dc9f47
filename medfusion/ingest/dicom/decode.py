"""Pixel decoding: header checks, pydicom's decoders, then the modality stage (or colour scaling).

:func:`decode` reads the header first and refuses images over the pixel bound before any pixel byte
is read; then it decodes with pydicom's pixel decoders (native, deflate, RLE, JPEG baseline/extended/
lossless, JPEG-LS, JPEG 2000; YBR colour converted to RGB by pydicom; JPEG 2000 at a reduced
resolution level when the caller says how much it needs, :mod:`medfusion.ingest.dicom.reduced`),
fills tolerable omissions of the Image Pixel module, and applies the modality LUT or rescale to
grayscale. Colour is scaled to ``[0, 1]`` here; grayscale gets its VOI stage in :mod:`medfusion.ingest.dicom.display`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.uid import UID

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.header import (
    HEADER_TAGS,
    PIXEL_TAGS,
    as_floats,
    as_int,
    functional_group,
    get,
    image_meta,
    read_dataset,
)
from medfusion.ingest.dicom.limits import check_size
from medfusion.ingest.dicom.reduced import decode_reduced

logger = logging.getLogger(__name__)


_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
#: Decoder plugin to use where pydicom's default is not the fastest installed one (measured on a
#: 1955x1841 15-bit CR, one core: JPEG-LS lossless 0.10 s with pyjpegls, 0.37 s with pylibjpeg-libjpeg,
#: pydicom's default; identical output). Other syntaxes keep pydicom's default (RLE: pylibjpeg-rle
#: 0.03 s against pydicom's own 0.22 s; JPEG 2000: pylibjpeg-openjpeg; JPEG lossless: pylibjpeg-libjpeg).
_FASTEST_PLUGIN = {
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS near-lossless
}
_CONVERTED_TO_RGB = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


@dataclass
class Decoded:
    """Pixels of one file after decoding and the modality stage.

    Attributes:
        values: float32 ``(frames, channels, rows, cols)``: modality values for grayscale, final
            ``[0, 1]`` values for colour.
        ds: The dataset (pixel data included).
        meta: PHI-free metadata.
        grayscale: True when the VOI stage and inversion are still to be applied.
    """

    values: np.ndarray
    ds: Dataset
    meta: dict[str, Any]
    grayscale: bool


def decode(path: Path, max_pixels: int, max_bytes: int, min_size: Sequence[int] | None = None) -> Decoded:
    """Header checks, then decode and apply the modality stage.

    Args:
        path: The file.
        max_pixels: Pixel bound, checked from the header before any pixel byte is read.
        max_bytes: Byte bound, checked before the file is read.
        min_size: The model's ``(H, W)`` when only that much resolution is needed: JPEG 2000 is then
            decoded at the smallest resolution level whose sides are all at least this
            (:mod:`~medfusion.ingest.dicom.reduced`; ``values`` is then smaller than the stored
            image); None: full resolution.
    """
    header = read_dataset(path, pixels=False, max_bytes=max_bytes, tags=HEADER_TAGS)
    meta = image_meta(path, header)
    check_size(path, meta, max_pixels)

    try:
        ds = read_dataset(path, pixels=True, max_bytes=max_bytes)
    except DicomReadError as exc:
        if exc.reason.startswith("missing required tag"):  # the header had them: pydicom drops every element
            raise DicomReadError(path, "truncated file: it ends inside its pixel data") from exc  # on an early EOF
        raise
    meta = image_meta(path, ds)  # the same, unless the file changed in between
    check_size(path, meta, max_pixels)
    if not any(t in ds for t in PIXEL_TAGS):
        raise DicomReadError(path, "no pixel data")
    _fill_pixel_module(path, ds, meta)
    _check_decoder(path, ds)
    _check_native_length(path, ds)

    photometric = str(ds.PhotometricInterpretation).strip().upper()
    samples = meta["samples_per_pixel"]
    arr = decode_reduced(ds, meta["rows"], meta["columns"], min_size) if min_size is not None else None
    if arr is None:
        arr = pixel_array(ds, decoding_plugin=_plugin(ds))
    arr = _as_frames(path, arr, meta["frames"], samples)  # (frames, rows, cols, samples)

    if samples == 1 and photometric in _GRAYSCALE:
        values = _modality(arr[..., 0], ds)[:, None]  # (frames, 1, rows, cols)
        return Decoded(values=values, ds=ds, meta=meta, grayscale=True)
    if samples == 1 and photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr[..., 0], ds)[..., :3]  # (frames, rows, cols, 3)
        scale = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
        values = rgb.astype(np.float32) / scale
    elif samples == 3 and photometric in _CONVERTED_TO_RGB:
        bits = as_int(get(ds, "BitsStored"), 8) or 8
        scale = float(2**bits - 1) if np.issubdtype(arr.dtype, np.integer) else 1.0
        values = arr.astype(np.float32) / scale
    else:
        raise DicomReadError(
            path, f"unsupported photometric interpretation {photometric or '(none)'} with {samples} sample(s) per pixel"
        )
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    values = np.ascontiguousarray(values.transpose(0, 3, 1, 2), dtype=np.float32)  # (frames, 3, rows, cols)
    return Decoded(values=values, ds=ds, meta=meta, grayscale=False)


def _plugin(ds: Dataset) -> str:
    """The decoder plugin for ``ds`` (``""``: pydicom's default), see :data:`_FASTEST_PLUGIN`."""
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    plugin = _FASTEST_PLUGIN.get(str(ts), "")
    if plugin and plugin not in get_decoder(ts).available_plugins:
        return ""
    return plugin


def _fill_pixel_module(path: Path, ds: Dataset, meta: dict[str, Any]) -> None:
    """Check the Image Pixel module and fill tolerable omissions (logged at DEBUG)."""
    bits_allocated = as_int(get(ds, "BitsAllocated"))
    if bits_allocated is None:
        if "FloatPixelData" in ds:
            bits_allocated = 32
        elif "DoubleFloatPixelData" in ds:
            bits_allocated = 64
        else:
            raise DicomReadError(path, "missing required tag BitsAllocated")
        ds.BitsAllocated = bits_allocated
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise DicomReadError(path, f"unsupported BitsAllocated {bits_allocated}")
    if get(ds, "SamplesPerPixel") is None:
        ds.SamplesPerPixel = meta["samples_per_pixel"]
    if get(ds, "PhotometricInterpretation") is None:
        if meta["samples_per_pixel"] != 1:
            raise DicomReadError(path, "missing required tag PhotometricInterpretation")
        logger.debug("%s: no PhotometricInterpretation, assuming MONOCHROME2", path.name)
        ds.PhotometricInterpretation = "MONOCHROME2"
    if get(ds, "BitsStored") is None:
        ds.BitsStored = bits_allocated
    if get(ds, "PixelRepresentation") is None and "PixelData" in ds:
        ds.PixelRepresentation = 0
    bits_stored = as_int(get(ds, "BitsStored"))
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise DicomReadError(path, f"invalid BitsStored {bits_stored} (BitsAllocated {bits_allocated})")
    if meta["samples_per_pixel"] > 1 and get(ds, "PlanarConfiguration") is None:
        ds.PlanarConfiguration = 0


def _check_decoder(path: Path, ds: Dataset) -> None:
    """Refuse transfer syntaxes without an installed decoder, naming the UID."""
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if not ts:
        raise DicomReadError(path, "missing Transfer Syntax UID")
    label = f"{ts} [{ts.name}]" if ts.name != str(ts) else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomReadError(path, f"unsupported transfer syntax {label} (no decoder in pydicom)") from None
    if not decoder.is_available:
        raise DicomReadError(path, f"unsupported transfer syntax {label} (no decoder installed)")


def _check_native_length(path: Path, ds: Dataset) -> None:
    """For uncompressed pixel data, compare the element length with what the header implies."""
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    if ts.is_compressed or "PixelData" not in ds:
        return
    from pydicom.pixels.utils import get_expected_length

    expected = get_expected_length(ds, "bytes")
    value = ds.PixelData
    got = len(value) if value is not None else 0
    if got < expected:
        raise DicomReadError(path, f"truncated pixel data: expected {expected} bytes, got {got}")


def _as_frames(path: Path, arr: np.ndarray, frames: int, samples: int) -> np.ndarray:
    """Reshape a decoded array to ``(frames, rows, cols, samples)``."""
    if samples == 1:
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 3:
            arr = arr[..., None]
    elif arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != samples:
        raise DicomReadError(path, f"decoded array shape {arr.shape} does not match {samples} sample(s) per pixel")
    if arr.shape[0] != frames:
        logger.debug("%s: NumberOfFrames %d but %d frame(s) decoded", path.name, frames, arr.shape[0])
    return arr


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) from the dataset or its functional groups, or None."""
    slope, intercept = get(ds, "RescaleSlope"), get(ds, "RescaleIntercept")
    if slope is None and intercept is None:
        slope = functional_group(ds, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = functional_group(ds, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        return None
    s = as_floats(slope, 1) if slope is not None else [1.0]
    i = as_floats(intercept, 1) if intercept is not None else [0.0]
    if not s or not i or s[0] == 0.0:
        logger.debug("ignoring invalid rescale slope/intercept")
        return None
    return s[0], i[0]


def _modality(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the modality LUT or rescale. ``arr``: (frames, rows, cols) -> float32, same shape."""
    if ds.get("ModalityLUTSequence") and np.issubdtype(arr.dtype, np.integer):
        return apply_modality_lut(arr, ds).astype(np.float32)
    params = _rescale(ds)
    values = arr.astype(np.float32)
    if params is not None:
        slope, intercept = params
        values *= np.float32(slope)
        values += np.float32(intercept)
    return values
