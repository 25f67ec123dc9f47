"""Bounds on what one DICOM file may cost: pixels, bytes, inflated bytes.

The pixel bound is checked from the header before any pixel byte is read or decoded; the byte bound
before the file is read (and, for deflated files, while inflating: :mod:`medfusion.ingest.dicom.deflate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfusion.errors import DicomReadError

#: Default bound on ``rows * cols * frames * samples`` (matches ``DataConfig.max_pixels``).
DEFAULT_MAX_PIXELS = 64_000_000
#: Files (and inflated deflated datasets) may hold ``8 * max_pixels`` bytes plus this (header, overlays...).
DEFLATE_MARGIN_BYTES = 64 * 2**20


def byte_limit(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Default bound on the bytes of one file, and on its inflated dataset when deflated.

    Eight bytes per pixel (float64 samples, the widest) plus :data:`DEFLATE_MARGIN_BYTES`.
    """
    return 8 * max_pixels + DEFLATE_MARGIN_BYTES


def check_size(path: Path, meta: dict[str, Any], max_pixels: int) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` (``rows * cols * frames * samples``).

    Raises:
        DicomReadError: The image is too large (the reason gives its size).
    """
    total = meta["rows"] * meta["columns"] * meta["frames"] * meta["samples_per_pixel"]
    if total > max_pixels:
        extra = f" x{meta['samples_per_pixel']} samples" if meta["samples_per_pixel"] != 1 else ""
        raise DicomReadError(
            path,
            f"image too large: {meta['rows']}x{meta['columns']}x{meta['frames']}{extra} pixels"
            f" > max_pixels {max_pixels}",
        )
