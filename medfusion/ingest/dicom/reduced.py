"""Decode only what the model needs: JPEG 2000 at a reduced resolution level.

A JPEG 2000 codestream is a wavelet pyramid: dropping its ``r`` highest resolution levels gives the
image at ``ceil(side / 2**r)`` per side without entropy-decoding or inverse-transforming the detail
bands that would be thrown away by the resize to the model's input size anyway. On a 1955x1841 chest
CR, level 3 (245x231, enough for a 224² model) decodes in about 2 % of the CPU time of the full
image (lossless; about 6 % lossy).

:func:`reduce_level` picks the largest ``r`` such that every side of the reduced image is still at
least :data:`OVERSAMPLE` times the requested ``min_size`` and the codestream has that many
decomposition levels (one level more than the smallest that covers ``min_size``: the ``area`` resize
that follows then averages 2-4 pixels per side instead of 1-2, which halves the difference to a full
decode + resize; on RG1 at 64² the max abs difference of the z-scored model input drops from 1.6 to
0.73, for 3-8 ms more per image);
:func:`decode_reduced` decodes at that level through Pillow's OpenJPEG binding (``Image.reduce``; the
maintained Python bindings installed with medfusion that expose OpenJPEG's reduce: pylibjpeg-openjpeg
2.x and imagecodecs do not). It serves single-frame, one-sample, unsigned JPEG 2000 (lossless and
lossy, transfer syntaxes 1.2.840.10008.1.2.4.90/.91) whose codestream precision equals Bits Stored;
anything else, and any failure, returns None and the caller decodes the full image as before. The
values returned are the stored values (Pillow's scaling to its 8/16-bit container undone), so the
modality and VOI stages apply unchanged.

``MEDFUSION_REDUCED_DECODE=0`` in the environment turns the reduced path off (benchmarks compare both).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

logger = logging.getLogger(__name__)

#: Transfer syntaxes served: JPEG 2000 Image Compression (Lossless Only) and JPEG 2000 Image Compression.
J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
#: Every side of the reduced image is at least this times the model's side.
OVERSAMPLE = 2
#: How far into a frame the codestream's SOC+SIZ markers are looked for (a JP2 wrapper precedes them).
_HEADER_SEARCH = 4096


def enabled() -> bool:
    """Whether the reduced path is on (``MEDFUSION_REDUCED_DECODE`` is not ``0``/``false``/``no``)."""
    return os.environ.get("MEDFUSION_REDUCED_DECODE", "1").strip().lower() not in ("0", "false", "no", "off")


def codestream_info(frame: bytes) -> tuple[int, bool, int] | None:
    """``(precision, signed, decomposition levels)`` of a JPEG 2000 frame's main header, or None.

    Levels are the smallest of the COD marker's and any COC marker's (per component) in the main
    header. None when the SOC/SIZ/COD markers are not found where the standard puts them.
    """
    start = frame.find(b"\xff\x4f\xff\x51", 0, _HEADER_SEARCH)
    if start < 0 or len(frame) < start + 4 + 40:
        return None
    i = start + 2
    siz_len = int.from_bytes(frame[i + 2 : i + 4], "big")
    components = int.from_bytes(frame[i + 38 : i + 40], "big")
    if components < 1 or i + 40 >= len(frame):
        return None
    ssiz = frame[i + 40]
    precision, signed = (ssiz & 0x7F) + 1, bool(ssiz & 0x80)
    i += 2 + siz_len
    levels: list[int] = []
    while i + 4 <= len(frame):
        marker = frame[i : i + 2]
        if marker in (b"\xff\x90", b"\xff\x93"):  # SOT / SOD: end of the main header
            break
        length = int.from_bytes(frame[i + 2 : i + 4], "big")
        if marker[0] != 0xFF or length < 2:
            return None
        body = frame[i + 4 : i + 2 + length]
        if marker == b"\xff\x52" and len(body) >= 6:  # COD: Scod, SGcod (4 bytes), SPcod[0] = levels
            levels.append(body[5])
        elif marker == b"\xff\x53":  # COC: Ccoc (1 or 2 bytes), Scoc, SPcoc[0] = levels
            offset = 2 if components < 257 else 3
            if len(body) > offset:
                levels.append(body[offset])
        i += 2 + length
    if not levels:
        return None
    return precision, signed, min(levels)


def reduce_level(shape: tuple[int, int], min_size: Sequence[int], max_level: int, oversample: int = OVERSAMPLE) -> int:
    """The largest ``r <= max_level`` with ``ceil(side / 2**r) >= oversample * target`` for both sides (0 if none).

    Args:
        shape: Stored ``(rows, cols)``.
        min_size: The model's ``(H, W)``.
        max_level: Decomposition levels in the codestream.
        oversample: Margin over ``min_size`` (1: the smallest level that still covers it).
    """
    rows, cols = shape
    h, w = oversample * int(min_size[0]), oversample * int(min_size[1])
    r = 0
    while r < max_level and -(-rows // (2 ** (r + 1))) >= h and -(-cols // (2 ** (r + 1))) >= w:
        r += 1
    return r


def decode_reduced(ds: Dataset, meta_rows: int, meta_cols: int, min_size: Sequence[int]) -> np.ndarray | None:
    """Stored values at the reduced level the model's size allows: ``(rows', cols')``, or None.

    None means "decode the full image": the transfer syntax or image is not served (see the module
    docstring), no level can be dropped, or decoding failed (logged at DEBUG; the full decode then
    reports any real error).

    Args:
        ds: The dataset, pixel data included.
        meta_rows: Rows from the header.
        meta_cols: Columns from the header.
        min_size: The model's ``(H, W)``; each decoded side stays at least :data:`OVERSAMPLE` times this.
    """
    if not enabled() or len(min_size) != 2:
        return None
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ts not in J2K_SYNTAXES or "PixelData" not in ds:
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    if int(ds.get("PixelRepresentation", 0) or 0) != 0:
        return None
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    if not 1 <= bits_stored <= 16:
        return None
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except (StopIteration, ValueError, KeyError) as exc:
        logger.debug("reduced decode: no frame (%s)", type(exc).__name__)
        return None
    info = codestream_info(frame)
    if info is None:
        return None
    precision, signed, levels = info
    if signed or precision != bits_stored:
        return None
    r = reduce_level((meta_rows, meta_cols), min_size, levels)
    if r == 0:
        return None
    return _pillow_decode(frame, r, (meta_rows, meta_cols), precision)


def _pillow_decode(frame: bytes, r: int, shape: tuple[int, int], precision: int) -> np.ndarray | None:
    """Pillow/OpenJPEG decode at level ``r``; None on any failure or unexpected size/mode."""
    from PIL import Image

    power = 2**r
    want = (-(-shape[0] // power), -(-shape[1] // power))  # OpenJPEG's reduced size: ceil(side / 2**r)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our pixel bound was checked
            with Image.open(io.BytesIO(frame), formats=["JPEG2000"]) as im:
                if im.size != (shape[1], shape[0]) or im.mode not in ("L", "I;16"):
                    return None
                # Pillow (13.0) rounds the reduced size to nearest where OpenJPEG takes the ceiling, and
                # then refuses the tile ("broken data stream"); a nominal size that both roundings map to
                # OpenJPEG's size avoids that, and stays right once Pillow takes the ceiling too.
                im._size = (want[1] * power - power // 2, want[0] * power - power // 2)
                im.reduce = r  # type: ignore[method-assign,assignment]  # Jpeg2K: a resolution level
                im.load()
                arr = np.array(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        logger.debug("reduced decode failed at level %d (%s); decoding in full", r, type(exc).__name__)
        return None
    if arr.shape != want:
        logger.debug("reduced decode gave %s, expected %s; decoding in full", arr.shape, want)
        return None
    container = 8 if arr.dtype == np.uint8 else 16
    if precision < container:  # Pillow scales the stored precision up to its container
        arr = arr >> (container - precision)
    return arr
