"""Single-frame slices of one 3D series -> one volume, sorted along the slice normal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.decode import Decoded, decode
from medfusion.ingest.dicom.display import display, finite_range
from medfusion.ingest.dicom.guard import guard, pydicom_warnings
from medfusion.ingest.dicom.limits import DEFAULT_MAX_PIXELS, byte_limit
from medfusion.ingest.dicom.read import read_dicom, read_dicom_header
from medfusion.ingest.dicom.watch import report_start
from medfusion.ingest.records import DicomImage


def read_series(
    paths: Sequence[str | Path], *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None
) -> DicomImage:
    """Read single-frame slices of one 3D series into a volume.

    Slices are sorted by ImagePositionPatient projected on the slice normal (from
    ImageOrientationPatient; axial when absent), or by InstanceNumber (then file name) when any
    slice lacks a position. VOI LUTs and windows apply per slice (as a viewer would); the min-max
    fallback uses the range of the whole volume so that slices stay comparable. A single
    multi-frame file is accepted as is.

    Args:
        paths: The slice files (any order).
        max_pixels: Bound on the whole volume's ``rows * cols * slices * samples``, checked from the
            headers before any pixel data is read.
        max_bytes: Bound on the bytes of each file (see :func:`~medfusion.ingest.dicom.read.read_dicom`);
            None: :func:`~medfusion.ingest.dicom.limits.byte_limit` of ``max_pixels``.

    Returns:
        A :class:`~medfusion.ingest.records.DicomImage` with ``pixels`` ``(slices, channels, rows, cols)``;
        ``meta`` is the first slice's with ``frames`` = number of slices, plus ``sop_uids`` (sorted order) and
        ``slice_spacing`` (median distance between positions, or None). ``source`` is the first
        sorted file.

    Raises:
        DicomReadError: A slice cannot be read, is multi-frame, or differs in shape from the first
            (the error names that file); the volume is too large; or ``paths`` is empty.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise DicomReadError("<empty series>", "empty series: no files given")
    limit = max_bytes or byte_limit(max_pixels)
    if len(files) == 1:
        image = read_dicom(files[0], max_pixels=max_pixels, max_bytes=limit)
        meta = dict(image.meta, sop_uids=[image.meta["sop_uid"]], slice_spacing=image.meta.get("slice_spacing"))
        return DicomImage(pixels=image.pixels, meta=meta, source=image.source)

    headers = [(f, read_dicom_header(f, max_bytes=limit)) for f in files]
    ordered = _sort_slices(headers)
    first_path, _first = ordered[0]
    shapes = Counter(_slice_shape(meta) for _, meta in ordered)
    common, n_common = shapes.most_common(1)[0]
    for f, meta in ordered:
        if meta["frames"] != 1:
            raise DicomReadError(f, f"multi-frame file ({meta['frames']} frames) in a series of single-frame slices")
        if _slice_shape(meta) != common:
            raise DicomReadError(
                f,
                f"inconsistent slice shape {_shape_str(_slice_shape(meta))} "
                f"({n_common} of {len(ordered)} slices are {_shape_str(common)})",
            )
    rows, cols, samples = common
    if rows * cols * samples * len(ordered) > max_pixels:
        raise DicomReadError(
            first_path, f"series too large: {rows}x{cols}x{len(ordered)} pixels > max_pixels {max_pixels}"
        )

    decoded: list[Decoded] = []
    for f, _ in ordered:
        report_start(f)
        with pydicom_warnings(f):
            item = guard(f, lambda f=f: decode(f, max_pixels, limit))
        if decoded and item.grayscale != decoded[0].grayscale:
            raise DicomReadError(f, "series mixes grayscale and colour slices")
        decoded.append(item)

    joint_range = None
    if all(d.grayscale for d in decoded):
        ranges = [r for r in (finite_range(d.values) for d in decoded) if r is not None]
        joint_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0.0, 0.0)
    slices = []
    for (f, _), item in zip(ordered, decoded, strict=True):
        with pydicom_warnings(f):
            slices.append(guard(f, lambda item=item: display(item, joint_range)))
    volume = np.concatenate(slices, axis=0)  # (slices, C, rows, cols)

    meta = dict(decoded[0].meta)
    meta["frames"] = len(ordered)
    meta["sop_uids"] = [d.meta["sop_uid"] for d in decoded]
    meta["slice_spacing"] = _slice_spacing([m for _, m in ordered])
    return DicomImage(pixels=torch.from_numpy(volume), meta=meta, source=str(first_path))


def _slice_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    return meta["rows"], meta["columns"], meta["samples_per_pixel"]


def _shape_str(shape: tuple[int, int, int]) -> str:
    rows, cols, samples = shape
    return f"{rows}x{cols}" + (f"x{samples} samples" if samples != 1 else "")


def _normal(orientation: list[float] | None) -> np.ndarray:
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:6])
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def _sort_slices(headers: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    """Sort by position along the slice normal, else by InstanceNumber then file name."""
    if all(m.get("image_position") is not None for _, m in headers):
        normal = _normal(headers[0][1].get("image_orientation"))
        return sorted(headers, key=lambda h: (float(np.dot(normal, h[1]["image_position"])), str(h[0])))

    def by_number(h: tuple[Path, dict[str, Any]]) -> tuple[bool, int, str]:
        number = h[1].get("instance_number")
        return number is None, number or 0, str(h[0])

    return sorted(headers, key=by_number)


def _slice_spacing(metas: list[dict[str, Any]]) -> float | None:
    found = [m.get("image_position") for m in metas]
    positions = [p for p in found if p is not None]
    if len(positions) < 2 or len(positions) < len(found):
        return None
    normal = _normal(metas[0].get("image_orientation"))
    along = np.array([float(np.dot(normal, p)) for p in positions])
    return float(np.median(np.abs(np.diff(along))))
