"""Read DICOM files into display-ready tensors with PHI-free metadata.

Pipeline of :func:`read_dicom` (PS3.4 Annex N grayscale pipeline, then colour handling):

1. Refuse files larger than ``max_bytes`` (default :func:`byte_limit` of ``max_pixels``) before
   reading them. Parse the header without pixel data and refuse images larger than ``max_pixels``
   (``rows * cols * frames * samples``) before any pixel byte is read or decoded. Deflated files
   are inflated only as far as the parser reads and never beyond ``max_bytes``
   (:mod:`medfusion.ingest.dicom.deflate`): a header read inflates the header only, and a small "deflate
   bomb" is refused while inflating.
2. Decode with pydicom's pixel decoders (native, deflate, RLE, JPEG baseline/extended/lossless via
   pylibjpeg-libjpeg or Pillow, JPEG-LS via pyjpegls, JPEG 2000 via pylibjpeg-openjpeg).
   YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT are converted to RGB by pydicom.
3. Grayscale: modality LUT (Modality LUT Sequence, or Rescale Slope/Intercept, also looked up in
   the shared functional groups of enhanced multi-frame files), then the VOI stage:

   * a VOI LUT Sequence when present (output scaled by the LUT's own min/max),
   * else the first Window Center/Width (LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2),
   * else **min-max of the modality values** over the whole image (all frames): the darkest
     value maps to 0 and the brightest to 1. A constant image maps to 0.

   Then MONOCHROME1 (and MONOCHROME2 with Presentation LUT Shape ``INVERSE``) is inverted so that
   higher is always brighter.
4. Colour (RGB after step 2, 8-16 bits) is divided by ``2**BitsStored - 1``; PALETTE COLOR is
   expanded through its palette (alpha dropped) and divided by the LUT's full scale.

Every failure becomes a :class:`~medfusion.errors.DicomReadError` naming the file and a short
reason; no other exception type escapes these functions. pydicom's warnings and log records are
captured and logged once each at DEBUG level by this module's logger, quoted values redacted (they
may be patient data).

Metadata (``DicomImage.meta`` and :func:`read_dicom_header`) holds no patient name, ID, birth
date, accession number (only its pseudonym) or date of any kind.

Inside :func:`watch_files`, every reader reports each file it starts on (scoring workers send it to
a watchdog that bounds the wall time spent on one file).
"""

from __future__ import annotations

import logging
import math
import re
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.filereader
import pydicom.uid
import torch
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    get_decoder,
    pixel_array,
)
from pydicom.uid import UID

from medfusion.errors import DicomReadError, InputRejected, MedfusionError
from medfusion.ingest.dicom.deflate import deflated_start, read_deflated
from medfusion.ingest.records import DicomImage
from medfusion.privacy import pseudonym, remember_phi

logger = logging.getLogger(__name__)

#: Default bound on ``rows * cols * frames * samples`` (matches ``DataConfig.max_pixels``).
DEFAULT_MAX_PIXELS = 64_000_000
#: Files (and inflated deflated datasets) may hold ``8 * max_pixels`` bytes plus this (header, overlays...).
DEFLATE_MARGIN_BYTES = 64 * 2**20


def byte_limit(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Default bound on the bytes of one file, and on its inflated dataset when deflated.

    Eight bytes per pixel (float64 samples, the widest) plus :data:`DEFLATE_MARGIN_BYTES`.
    """
    return 8 * max_pixels + DEFLATE_MARGIN_BYTES


_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Elements :func:`read_dicom_header` parses (``specific_tags``): the meta plus what the checks need.
_HEADER_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "DirectoryRecordSequence",
    "SharedFunctionalGroupsSequence",
]
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_CONVERTED_TO_RGB = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

#: Exceptions pydicom, numpy and the decoder plugins are known to raise on bad input.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,  # an element's length does not fit its VR (corrupt header)
    ValueError,  # includes UnicodeDecodeError
    TypeError,
    AttributeError,
    LookupError,  # KeyError, IndexError
    ArithmeticError,  # OverflowError, ZeroDivisionError
    RuntimeError,  # includes NotImplementedError, RecursionError
    EOFError,
    OSError,
    struct.error,
    zlib.error,
    MemoryError,
    BufferError,
    AssertionError,
)


@dataclass
class _Decoded:
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


_FILE_HOOK: ContextVar[Callable[[Path], None] | None] = ContextVar("medfusion_dicom_file_hook", default=None)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@contextmanager
def watch_files(callback: Callable[[Path], None]) -> Iterator[None]:
    """Call ``callback(path)`` whenever a reader of this module starts on a file, inside the block.

    Every header read and every decode of a file is one call (:func:`read_series` calls it once per
    slice for each). The callback runs in the reading thread and must be quick.
    """
    token = _FILE_HOOK.set(callback)
    try:
        yield
    finally:
        _FILE_HOOK.reset(token)


def _starting(path: Path) -> None:
    hook = _FILE_HOOK.get()
    if hook is not None:
        hook(path)


def read_dicom(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> DicomImage:
    """Read one DICOM file into a display-ready image.

    Args:
        path: The file.
        max_pixels: Refuse images whose ``rows * cols * frames * samples`` exceeds this, checked
            from the header before the pixel data is read.
        max_bytes: Refuse files larger than this before reading them, and deflated datasets that
            inflate to more; None: :func:`byte_limit` of ``max_pixels``.

    Returns:
        A :class:`DicomImage` whose ``pixels`` is a float32 tensor ``(frames, channels, rows, cols)``
        in ``[0, 1]`` (channels 1 for grayscale, 3 for colour) and whose ``meta`` holds:
        ``study_uid``, ``series_uid``, ``sop_uid``, ``modality``, ``photometric_interpretation``
        (as stored), ``transfer_syntax`` (UID string), ``rows``, ``columns``, ``frames``,
        ``samples_per_pixel``, ``bits_stored``, ``pixel_spacing`` (``[row, col]`` mm or None),
        ``view_position``, ``body_part``, ``accession_pseudonym`` (or None), ``instance_number``,
        ``image_position`` (``[x, y, z]`` or None), ``image_orientation`` (6 floats or None),
        ``window`` (``(center, width)`` applied, in modality units, or None) and ``voi``
        (``"voi_lut"``, ``"window"``, ``"minmax"`` or ``"colour"``; for ``"minmax"`` ``window`` is
        the equivalent window ``((min + max) / 2, max - min)``).

    Raises:
        DicomReadError: The file cannot be read or decoded (the reason says why).
    """
    path = Path(path)
    _starting(path)
    with _pydicom_warnings(path):
        decoded = _guard(path, lambda: _decode(path, max_pixels, max_bytes or byte_limit(max_pixels)))
        pixels = _guard(path, lambda: _display(decoded, None))
    return DicomImage(pixels=torch.from_numpy(pixels), meta=decoded.meta, source=str(path))


def read_dicom_header(path: str | Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Read the PHI-free metadata of a file without reading its pixel data.

    Args:
        path: The file.
        max_bytes: Refuse larger files before reading them (and deflated headers that inflate to
            more); None: :func:`byte_limit` of :data:`DEFAULT_MAX_PIXELS`.

    Returns:
        The ``meta`` dict of :func:`read_dicom` (without ``window``/``voi``, which need the pixels).

    Raises:
        DicomReadError: The file is not DICOM, is too large, or lacks the image tags (Rows, Columns).
    """
    path = Path(path)
    limit = max_bytes or byte_limit()
    _starting(path)
    with _pydicom_warnings(path):
        ds = _guard(path, lambda: _read_dataset(path, pixels=False, max_bytes=limit, tags=_HEADER_TAGS))
        return _guard(path, lambda: _image_meta(path, ds))


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
        max_bytes: Bound on the bytes of each file (see :func:`read_dicom`); None: :func:`byte_limit`
            of ``max_pixels``.

    Returns:
        A :class:`DicomImage` with ``pixels`` ``(slices, channels, rows, cols)``; ``meta`` is the
        first slice's with ``frames`` = number of slices, plus ``sop_uids`` (sorted order) and
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
    first_path, first = ordered[0]
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

    decoded: list[_Decoded] = []
    for f, _ in ordered:
        _starting(f)
        with _pydicom_warnings(f):
            item = _guard(f, lambda f=f: _decode(f, max_pixels, limit))
        if decoded and item.grayscale != decoded[0].grayscale:
            raise DicomReadError(f, "series mixes grayscale and colour slices")
        decoded.append(item)

    joint_range = None
    if all(d.grayscale for d in decoded):
        ranges = [r for r in (_finite_range(d.values) for d in decoded) if r is not None]
        joint_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0.0, 0.0)
    slices = []
    for (f, _), item in zip(ordered, decoded):
        with _pydicom_warnings(f):
            slices.append(_guard(f, lambda item=item: _display(item, joint_range)))
    volume = np.concatenate(slices, axis=0)  # (slices, C, rows, cols)

    meta = dict(decoded[0].meta)
    meta["frames"] = len(ordered)
    meta["sop_uids"] = [d.meta["sop_uid"] for d in decoded]
    meta["slice_spacing"] = _slice_spacing([m for _, m in ordered])
    return DicomImage(pixels=torch.from_numpy(volume), meta=meta, source=str(first_path))


# --------------------------------------------------------------------------------------------
# Error and warning handling
# --------------------------------------------------------------------------------------------


def _guard(path: Path, fn: Any) -> Any:
    """Run ``fn()`` and turn any failure into a :class:`DicomReadError` for ``path``."""
    try:
        return fn()
    except DicomReadError:
        raise
    except _READ_ERRORS as exc:
        raise DicomReadError(path, _reason(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the reader promises DicomReadError only
        if isinstance(exc, MedfusionError) and not isinstance(exc, InputRejected):
            raise  # a set-up error (e.g. no usable pseudonym salt) is not this file's fault: stop, don't reject
        logger.warning("unexpected %s while reading %s", type(exc).__name__, path, exc_info=True)
        raise DicomReadError(path, f"unexpected error: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """A short one-line reason from an exception, quoted values redacted (they may be patient data)."""
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, InvalidDicomError):
        return "not a DICOM file (no DICM preamble and no valid dataset)"
    if isinstance(exc, zlib.error):
        return f"deflated data is corrupt or not deflated ({exc})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Unable to decode as exceptions were raised by all available plugins"):
        text = "pixel data decode failed: " + " | ".join(lines[1:3])
    else:
        text = " ".join(lines[:3]) if lines else ""
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = re.sub(r"'[^']*'", "'...'", text)
    return text if len(text) <= 240 else text[:237] + "..."


#: pydicom's loggers (records are created on these; filters don't see propagated records).
_PYDICOM_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils")


def _redact(message: str) -> str:
    """First line of a pydicom message with quoted values (possibly patient data) removed."""
    first = message.splitlines()[0] if message else ""
    return re.sub(r"'[^']*'", "'...'", first)[:300]


class _RouteToDebug(logging.Filter):
    """Drops pydicom's log records, re-logging each distinct message once at DEBUG, redacted."""

    def __init__(self, path: Path, seen: set[str]) -> None:
        super().__init__()
        self.path = path
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        _log_once(self.path, self.seen, record.levelname.lower(), record.getMessage())
        return False


def _log_once(path: Path, seen: set[str], kind: str, message: str) -> None:
    text = _redact(message)
    if text and text not in seen:
        seen.add(text)
        logger.debug("%s: pydicom %s: %s", path.name, kind, text)


@contextmanager
def _pydicom_warnings(path: Path) -> Iterator[None]:
    """Route pydicom's warnings and log records raised inside the block to DEBUG, once each.

    pydicom reports invalid values both with :func:`warnings.warn` and on its ``pydicom`` logger,
    quoting the value (which may be a patient name or birth date): here both are captured,
    redacted and logged once at DEBUG by this module's logger. Note that
    :func:`warnings.catch_warnings` and logger filters are process-global: readers are meant to
    run sequentially or in worker processes (DataLoader workers).
    """
    seen: set[str] = set()
    route = _RouteToDebug(path, seen)
    loggers = [logging.getLogger(name) for name in _PYDICOM_LOGGERS]
    for pydicom_logger in loggers:
        pydicom_logger.addFilter(route)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for item in caught:
                    _log_once(path, seen, item.category.__name__, str(item.message))
    finally:
        for pydicom_logger in loggers:
            pydicom_logger.removeFilter(route)


# --------------------------------------------------------------------------------------------
# Dataset reading and header checks
# --------------------------------------------------------------------------------------------


def _read_dataset(path: Path, *, pixels: bool, max_bytes: int, tags: list[str] | None = None) -> Dataset:
    """Parse ``path`` (with pixel data when ``pixels``), falling back to ``force=True``.

    ``tags`` limits parsing to those elements (pydicom ``specific_tags``). ``max_bytes`` bounds the
    file's size (checked before reading) and, for deflated files, the inflated dataset (checked
    while inflating, which goes only as far as the parser reads: see :mod:`medfusion.ingest.dicom.deflate`).

    Raises:
        DicomReadError: Empty or too large file, not DICOM, deflate bomb or broken deflate stream, or
            no image tags.
    """
    if path.is_dir():
        raise DicomReadError(path, "is a directory")
    size = path.stat().st_size
    if size == 0:
        raise DicomReadError(path, "empty file")
    if size > max_bytes:
        raise DicomReadError(path, f"file too large: {size} bytes > max_bytes {max_bytes}")
    forced = False
    deflated = deflated_start(path)
    if deflated is not None:
        ds = read_deflated(path, *deflated, pixels=pixels, tags=tags, limit=max_bytes)
    else:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels, specific_tags=tags)
        except InvalidDicomError:
            forced = True
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels, specific_tags=tags, force=True)
            except _READ_ERRORS as exc:
                raise DicomReadError(path, "not a DICOM file (no DICM preamble and no valid dataset)") from exc
    if "DirectoryRecordSequence" in ds:
        raise DicomReadError(path, "DICOMDIR (a media directory, not an image)")
    if forced:
        # A forced parse of arbitrary bytes can yield a few garbage elements: require the image tags.
        has_image = "Rows" in ds and "Columns" in ds and (not pixels or any(t in ds for t in _PIXEL_TAGS))
        if not has_image:
            if "SOPClassUID" in ds and "Rows" not in ds:
                raise DicomReadError(path, _missing_rows_reason(ds))
            raise DicomReadError(path, "not a DICOM file (no DICM preamble and no valid dataset)")
    _ensure_transfer_syntax(ds)
    if _get(ds, "Rows") is None:
        raise DicomReadError(path, _missing_rows_reason(ds))
    if _get(ds, "Columns") is None:
        raise DicomReadError(path, "missing required tag Columns")
    return ds


def _missing_rows_reason(ds: Dataset) -> str:
    """``not an image (<SOP class>)`` for non-image SOP classes, else ``missing required tag Rows``."""
    name = _sop_class_name(ds)
    if name != "unknown SOP class" and "Image" not in name:
        return f"not an image ({name})"
    return "missing required tag Rows"


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta a Transfer Syntax UID from the way it was parsed."""
    meta = ds.get("file_meta")
    if meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    elif little or little is None:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian


def _sop_class_name(ds: Dataset) -> str:
    uid = _get(ds, "SOPClassUID")
    if not uid:
        return "unknown SOP class"
    try:
        return UID(str(uid)).name
    except _READ_ERRORS:
        return str(uid)


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.keyword`` or ``default`` when absent, empty or unparsable."""
    try:
        value = ds.get(keyword, default)
    except _READ_ERRORS:
        return default
    if value is None or (isinstance(value, (str, bytes, Sequence)) and len(value) == 0):
        return default
    return value


def _as_int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _as_floats(value: Any, n: int) -> list[float] | None:
    """``value`` as a list of ``n`` finite floats, or None."""
    if value is None:
        return None
    try:
        many = isinstance(value, (list, tuple, pydicom.multival.MultiValue))
        items = [float(v) for v in (value if many else [value])]
    except (TypeError, ValueError, OverflowError):
        return None
    if len(items) < n or not all(math.isfinite(v) for v in items[:n]):
        return None
    return items[:n]


def _functional_group(ds: Dataset, sequence: str, keyword: str) -> Any:
    """A value from the shared (else the first per-frame) functional groups of enhanced files."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            group = ds.get(groups)
            if not group:
                continue
            macro = group[0].get(sequence)
            if macro:
                value = macro[0].get(keyword)
                if value is not None and value != "":
                    return value
        except _READ_ERRORS:
            continue
    return None


def _image_meta(path: Path, ds: Dataset) -> dict[str, Any]:
    """PHI-free metadata of a dataset (header values only)."""
    rows = _as_int(_get(ds, "Rows"))
    cols = _as_int(_get(ds, "Columns"))
    if rows is None or rows <= 0:
        raise DicomReadError(path, "missing required tag Rows" if rows is None else f"invalid Rows {rows}")
    if cols is None or cols <= 0:
        raise DicomReadError(path, "missing required tag Columns" if cols is None else f"invalid Columns {cols}")
    frames = _as_int(_get(ds, "NumberOfFrames"), 1) or 1
    if frames < 0:
        raise DicomReadError(path, f"invalid NumberOfFrames {frames}")
    samples = _as_int(_get(ds, "SamplesPerPixel"), 1) or 1
    accession = _get(ds, "AccessionNumber")
    accession = str(accession).strip() if accession is not None else ""
    remember_phi(accession)  # redacted from any later log line that quotes it
    spacing = (
        _as_floats(_get(ds, "PixelSpacing"), 2)
        or _as_floats(_get(ds, "ImagerPixelSpacing"), 2)
        or _as_floats(_functional_group(ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    )
    position = _as_floats(_get(ds, "ImagePositionPatient"), 3) or _as_floats(
        _functional_group(ds, "PlanePositionSequence", "ImagePositionPatient"), 3
    )
    orientation = _as_floats(_get(ds, "ImageOrientationPatient"), 6) or _as_floats(
        _functional_group(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    file_meta = ds.get("file_meta") or {}
    transfer_syntax = file_meta.get("TransferSyntaxUID") if hasattr(file_meta, "get") else None
    return {
        "study_uid": _text(_get(ds, "StudyInstanceUID")),
        "series_uid": _text(_get(ds, "SeriesInstanceUID")),
        "sop_uid": _text(_get(ds, "SOPInstanceUID")),
        "modality": _text(_get(ds, "Modality")),
        "photometric_interpretation": _text(_get(ds, "PhotometricInterpretation")),
        "transfer_syntax": str(transfer_syntax) if transfer_syntax else None,
        "rows": rows,
        "columns": cols,
        "frames": frames,
        "samples_per_pixel": samples,
        "bits_stored": _as_int(_get(ds, "BitsStored")) or _as_int(_get(ds, "BitsAllocated")),
        "pixel_spacing": spacing,
        "view_position": _text(_get(ds, "ViewPosition")),
        "body_part": _text(_get(ds, "BodyPartExamined")),
        "accession_pseudonym": pseudonym(accession, kind="acc") if accession else None,
        "instance_number": _as_int(_get(ds, "InstanceNumber")),
        "image_position": position,
        "image_orientation": orientation,
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _slice_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    return meta["rows"], meta["columns"], meta["samples_per_pixel"]


def _shape_str(shape: tuple[int, int, int]) -> str:
    rows, cols, samples = shape
    return f"{rows}x{cols}" + (f"x{samples} samples" if samples != 1 else "")


def _check_size(path: Path, meta: dict[str, Any], max_pixels: int) -> None:
    total = meta["rows"] * meta["columns"] * meta["frames"] * meta["samples_per_pixel"]
    if total > max_pixels:
        extra = f" x{meta['samples_per_pixel']} samples" if meta["samples_per_pixel"] != 1 else ""
        raise DicomReadError(
            path,
            f"image too large: {meta['rows']}x{meta['columns']}x{meta['frames']}{extra} pixels"
            f" > max_pixels {max_pixels}",
        )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decode(path: Path, max_pixels: int, max_bytes: int) -> _Decoded:
    """Header checks, then decode and apply the modality stage."""
    header = _read_dataset(path, pixels=False, max_bytes=max_bytes, tags=_HEADER_TAGS)
    meta = _image_meta(path, header)
    _check_size(path, meta, max_pixels)

    try:
        ds = _read_dataset(path, pixels=True, max_bytes=max_bytes)
    except DicomReadError as exc:
        if exc.reason.startswith("missing required tag"):  # the header had them: pydicom drops every element
            raise DicomReadError(path, "truncated file: it ends inside its pixel data") from exc  # on an early EOF
        raise
    meta = _image_meta(path, ds)  # the same, unless the file changed in between
    _check_size(path, meta, max_pixels)
    if not any(t in ds for t in _PIXEL_TAGS):
        raise DicomReadError(path, "no pixel data")
    _fill_pixel_module(path, ds, meta)
    _check_decoder(path, ds)
    _check_native_length(path, ds)

    photometric = str(ds.PhotometricInterpretation).strip().upper()
    samples = meta["samples_per_pixel"]
    arr = pixel_array(ds)
    arr = _as_frames(path, arr, meta["frames"], samples)  # (frames, rows, cols, samples)

    if samples == 1 and photometric in _GRAYSCALE:
        values = _modality(arr[..., 0], ds)[:, None]  # (frames, 1, rows, cols)
        return _Decoded(values=values, ds=ds, meta=meta, grayscale=True)
    if samples == 1 and photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr[..., 0], ds)[..., :3]  # (frames, rows, cols, 3)
        scale = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
        values = rgb.astype(np.float32) / scale
    elif samples == 3 and photometric in _CONVERTED_TO_RGB:
        bits = _as_int(_get(ds, "BitsStored"), 8) or 8
        scale = float(2**bits - 1) if np.issubdtype(arr.dtype, np.integer) else 1.0
        values = arr.astype(np.float32) / scale
    else:
        raise DicomReadError(
            path, f"unsupported photometric interpretation {photometric or '(none)'} with {samples} sample(s) per pixel"
        )
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    values = np.ascontiguousarray(values.transpose(0, 3, 1, 2), dtype=np.float32)  # (frames, 3, rows, cols)
    return _Decoded(values=values, ds=ds, meta=meta, grayscale=False)


def _fill_pixel_module(path: Path, ds: Dataset, meta: dict[str, Any]) -> None:
    """Check the Image Pixel module and fill tolerable omissions (logged at DEBUG)."""
    bits_allocated = _as_int(_get(ds, "BitsAllocated"))
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
    if _get(ds, "SamplesPerPixel") is None:
        ds.SamplesPerPixel = meta["samples_per_pixel"]
    if _get(ds, "PhotometricInterpretation") is None:
        if meta["samples_per_pixel"] != 1:
            raise DicomReadError(path, "missing required tag PhotometricInterpretation")
        logger.debug("%s: no PhotometricInterpretation, assuming MONOCHROME2", path.name)
        ds.PhotometricInterpretation = "MONOCHROME2"
    if _get(ds, "BitsStored") is None:
        ds.BitsStored = bits_allocated
    if _get(ds, "PixelRepresentation") is None and "PixelData" in ds:
        ds.PixelRepresentation = 0
    bits_stored = _as_int(_get(ds, "BitsStored"))
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise DicomReadError(path, f"invalid BitsStored {bits_stored} (BitsAllocated {bits_allocated})")
    if meta["samples_per_pixel"] > 1 and _get(ds, "PlanarConfiguration") is None:
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
    slope, intercept = _get(ds, "RescaleSlope"), _get(ds, "RescaleIntercept")
    if slope is None and intercept is None:
        slope = _functional_group(ds, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional_group(ds, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        return None
    s = _as_floats(slope, 1) if slope is not None else [1.0]
    i = _as_floats(intercept, 1) if intercept is not None else [0.0]
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


# --------------------------------------------------------------------------------------------
# VOI stage and presentation
# --------------------------------------------------------------------------------------------


def _display(decoded: _Decoded, joint_range: tuple[float, float] | None) -> np.ndarray:
    """Apply VOI and inversion to grayscale values; colour passes through.

    Args:
        decoded: The decoded file; ``decoded.meta`` gets ``window`` and ``voi``.
        joint_range: (min, max) of modality values to use for the min-max fallback (a whole
            series); None to use this image's range.

    Returns:
        float32 ``(frames, channels, rows, cols)`` in ``[0, 1]``.
    """
    if not decoded.grayscale:
        decoded.meta["window"] = None
        decoded.meta["voi"] = "colour"
        return decoded.values
    values, ds = decoded.values, decoded.ds
    out = _apply_voi_lut(values, ds)
    if out is not None:
        decoded.meta["window"] = None
        decoded.meta["voi"] = "voi_lut"
    else:
        window = _window(ds)
        if window is not None:
            center, width, function = window
            out = _apply_window(values, center, width, function)
            decoded.meta["window"] = (center, width)
            decoded.meta["voi"] = "window"
        else:
            lo, hi = joint_range or _finite_range(values) or (0.0, 0.0)
            span = hi - lo
            if span > 0 and math.isfinite(span):
                out = (values - np.float32(lo)) / np.float32(span)
            else:
                out = np.zeros_like(values)
            decoded.meta["window"] = ((lo + hi) / 2.0, span) if math.isfinite(span) else None
            decoded.meta["voi"] = "minmax"
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32, copy=False)
    if _inverted(ds):
        out = 1.0 - out
    return np.ascontiguousarray(out, dtype=np.float32)


def _finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values, or None when there are none."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _inverted(ds: Dataset) -> bool:
    photometric = str(_get(ds, "PhotometricInterpretation", "")).strip().upper()
    shape = str(_get(ds, "PresentationLUTShape", "")).strip().upper()
    return photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE")


def _apply_voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply the first VOI LUT Sequence item, scaled to [0, 1] by the LUT's min/max; None if absent."""
    try:
        items = ds.get("VOILUTSequence")
        if not items or items[0].get("LUTDescriptor") is None or items[0].get("LUTData") is None:
            return None
        descriptor = [int(v) for v in items[0].LUTDescriptor]
        entries = descriptor[0] or 2**16
        first = descriptor[1]
        table = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds).astype(np.float32)
        lo, hi = float(table.min()), float(table.max())
        if not hi > lo:
            return None
        mapped = apply_voi(np.rint(values).astype(np.int64), ds).astype(np.float32)
        return (mapped - lo) / (hi - lo)
    except _READ_ERRORS as exc:
        logger.debug("ignoring unusable VOI LUT: %s", _reason(exc))
        return None


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """The first valid (center, width, function) from the dataset or functional groups."""
    center, width = _get(ds, "WindowCenter"), _get(ds, "WindowWidth")
    if center is None or width is None:
        center = _functional_group(ds, "FrameVOILUTSequence", "WindowCenter")
        width = _functional_group(ds, "FrameVOILUTSequence", "WindowWidth")
    c, w = _as_floats(center, 1), _as_floats(width, 1)
    if not c or not w:
        return None
    function = str(_get(ds, "VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if (function == "LINEAR" and w[0] < 1) or w[0] <= 0:
        return None
    return c[0], w[0], function


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing with output range [0, 1]. Shapes are preserved."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -80, 80)))
    if function == "LINEAR_EXACT":
        return (values - center) / width + 0.5
    c, w = center - 0.5, width - 1.0
    if w <= 0:
        return (values > c).astype(np.float32)
    return (values - np.float32(c)) / np.float32(w) + np.float32(0.5)


# --------------------------------------------------------------------------------------------
# Series helpers
# --------------------------------------------------------------------------------------------


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
    positions = [m.get("image_position") for m in metas]
    if len(positions) < 2 or any(p is None for p in positions):
        return None
    normal = _normal(metas[0].get("image_orientation"))
    along = np.array([float(np.dot(normal, p)) for p in positions])
    return float(np.median(np.abs(np.diff(along))))
