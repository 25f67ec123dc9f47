"""DICOM header parsing (bounded, without pixel data when asked) and its PHI-free metadata.

:func:`read_dataset` parses a file under a byte bound (forcing a parse of files without preamble,
refusing DICOMDIRs and non-images); :func:`image_meta` turns a dataset into the metadata dict of
:func:`~medfusion.ingest.dicom.read.read_dicom`: no patient name, ID, birth date, accession number
(only its pseudonym) or date of any kind. :func:`get`, :func:`as_int`, :func:`as_floats` and
:func:`functional_group` read single values tolerantly (absent, empty or unparsable -> default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
import pydicom.filereader
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.deflate import deflated_start, read_deflated
from medfusion.ingest.dicom.guard import READ_ERRORS
from medfusion.privacy import pseudonym, remember_phi

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Elements :func:`~medfusion.ingest.dicom.read.read_dicom_header` parses (``specific_tags``): the meta plus
#: what the checks need.
HEADER_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ImageType",
    "ImageLaterality",
    "Laterality",
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


def read_dataset(path: Path, *, pixels: bool, max_bytes: int, tags: list[str] | None = None) -> Dataset:
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
            except READ_ERRORS as exc:
                raise DicomReadError(path, "not a DICOM file (no DICM preamble and no valid dataset)") from exc
    if "DirectoryRecordSequence" in ds:
        raise DicomReadError(path, "DICOMDIR (a media directory, not an image)")
    if forced:
        # A forced parse of arbitrary bytes can yield a few garbage elements: require the image tags.
        has_image = "Rows" in ds and "Columns" in ds and (not pixels or any(t in ds for t in PIXEL_TAGS))
        if not has_image:
            if "SOPClassUID" in ds and "Rows" not in ds:
                raise DicomReadError(path, _missing_rows_reason(ds))
            raise DicomReadError(path, "not a DICOM file (no DICM preamble and no valid dataset)")
    _ensure_transfer_syntax(ds)
    if get(ds, "Rows") is None:
        raise DicomReadError(path, _missing_rows_reason(ds))
    if get(ds, "Columns") is None:
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
    uid = get(ds, "SOPClassUID")
    if not uid:
        return "unknown SOP class"
    try:
        return UID(str(uid)).name
    except READ_ERRORS:
        return str(uid)


def get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.keyword`` or ``default`` when absent, empty or unparsable."""
    try:
        value = ds.get(keyword, default)
    except READ_ERRORS:
        return default
    if value is None or (isinstance(value, (str, bytes, Sequence)) and len(value) == 0):
        return default
    return value


def as_int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def as_floats(value: Any, n: int) -> list[float] | None:
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


def functional_group(ds: Dataset, sequence: str, keyword: str) -> Any:
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
        except READ_ERRORS:
            continue
    return None


def image_meta(path: Path, ds: Dataset) -> dict[str, Any]:
    """PHI-free metadata of a dataset (header values only)."""
    rows = as_int(get(ds, "Rows"))
    cols = as_int(get(ds, "Columns"))
    if rows is None or rows <= 0:
        raise DicomReadError(path, "missing required tag Rows" if rows is None else f"invalid Rows {rows}")
    if cols is None or cols <= 0:
        raise DicomReadError(path, "missing required tag Columns" if cols is None else f"invalid Columns {cols}")
    frames = as_int(get(ds, "NumberOfFrames"), 1) or 1
    if frames < 0:
        raise DicomReadError(path, f"invalid NumberOfFrames {frames}")
    samples = as_int(get(ds, "SamplesPerPixel"), 1) or 1
    accession = get(ds, "AccessionNumber")
    accession = str(accession).strip() if accession is not None else ""
    remember_phi(accession)  # redacted from any later log line that quotes it
    spacing = (
        as_floats(get(ds, "PixelSpacing"), 2)
        or as_floats(get(ds, "ImagerPixelSpacing"), 2)
        or as_floats(functional_group(ds, "PixelMeasuresSequence", "PixelSpacing"), 2)
    )
    position = as_floats(get(ds, "ImagePositionPatient"), 3) or as_floats(
        functional_group(ds, "PlanePositionSequence", "ImagePositionPatient"), 3
    )
    orientation = as_floats(get(ds, "ImageOrientationPatient"), 6) or as_floats(
        functional_group(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    file_meta = ds.get("file_meta") or {}
    transfer_syntax = file_meta.get("TransferSyntaxUID") if hasattr(file_meta, "get") else None
    return {
        "study_uid": _text(get(ds, "StudyInstanceUID")),
        "series_uid": _text(get(ds, "SeriesInstanceUID")),
        "sop_uid": _text(get(ds, "SOPInstanceUID")),
        "modality": _text(get(ds, "Modality")),
        "photometric_interpretation": _text(get(ds, "PhotometricInterpretation")),
        "transfer_syntax": str(transfer_syntax) if transfer_syntax else None,
        "rows": rows,
        "columns": cols,
        "frames": frames,
        "samples_per_pixel": samples,
        "bits_stored": as_int(get(ds, "BitsStored")) or as_int(get(ds, "BitsAllocated")),
        "pixel_spacing": spacing,
        "view_position": _text(get(ds, "ViewPosition")),
        "body_part": _text(get(ds, "BodyPartExamined")),
        "image_type": _texts(get(ds, "ImageType")),
        "laterality": _text(get(ds, "ImageLaterality")) or _text(get(ds, "Laterality")),
        "accession_pseudonym": pseudonym(accession, kind="acc") if accession else None,
        "instance_number": as_int(get(ds, "InstanceNumber")),
        "image_position": position,
        "image_orientation": orientation,
    }


def _texts(value: Any) -> list[str] | None:
    """A multi-valued string element as a list (a single value as a list of one)."""
    if value is None:
        return None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    texts = [t for t in (_text(v) for v in items) if t]
    return texts or None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
