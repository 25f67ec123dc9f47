"""Import a folder of PNG/JPEG images + a CSV table as DICOM, with a reports file and a labels file.

The table has one row per study (one image each) and these columns:

* ``image``: the image file, relative to the table's folder or absolute (PNG or JPEG; anything Pillow reads);
* ``patient_id``: the patient (written into the DICOM files only, never logged or written elsewhere);
* ``study_id`` or ``accession_number``: the study (unique per row; written as AccessionNumber when it
  has at most 16 characters);
* optional ``view`` (``PA``, ``AP``, ``LL``, ... -> ViewPosition), ``report`` (free text),
  ``study_date`` (``YYYYMMDD`` or ``YYYY-MM-DD``);
* every other column is a label (``1``, ``0`` or empty = unknown).

Each row becomes one Secondary Capture DICOM file (MONOCHROME2; 8-bit images stay 8-bit, 16-bit stay
16-bit; RGB / palette / alpha images are converted to grayscale by luminance, ITU-R 601). Its study,
series and SOP instance UIDs are derived from the row's patient and study ids (``2.25.<hash>``), so
re-running the import gives identical UIDs. ``reports.csv`` (``study_uid``, ``report``) and
``labels.csv`` (``study_uid`` + the label columns) are keyed by those UIDs: both are what
``medfusion build-manifest`` reads, and neither holds a patient identifier.

A row that cannot be used (missing file, unreadable or truncated image, too many pixels or bytes,
a duplicate study id, a missing id) is listed in ``rejected.csv`` (``row``, ``image``, ``reason``) and
the rest are imported.

Imports: numpy, pandas, Pillow, pydicom, :mod:`medfusion.errors`, :mod:`medfusion.ingest.csv_table`,
:mod:`medfusion.ingest.records`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset

from medfusion.errors import InputRejected
from medfusion.ingest.csv_table import read_text_csv
from medfusion.ingest.records import Rejection

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
PATIENT_COLUMN = "patient_id"
STUDY_COLUMNS = ("study_id", "accession_number")
OPTIONAL_COLUMNS = ("view", "report", "study_date")
#: Default bound on one image: pixels (checked from the header, before decoding) and file bytes.
MAX_PIXELS = 50_000_000
MAX_BYTES = 256 * 1024 * 1024
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_VIEW = re.compile(r"^[A-Z0-9 _]{1,16}$")


class ImageTableError(InputRejected):
    """The image table itself cannot be used (missing, not CSV, lacking required columns)."""


class ImageRejected(Exception):
    """One image cannot be imported; the message is the reason (free of patient data)."""


@dataclass
class ImportResult:
    """What :func:`import_images` wrote.

    Attributes:
        out: The output folder.
        dicom_dir: Folder of the written DICOM files (``OUT/dicom``).
        reports: ``OUT/reports.csv`` (``study_uid``, ``report``).
        labels_path: ``OUT/labels.csv`` (``study_uid`` + one column per label).
        labels: The label columns of the table.
        study_uids: StudyInstanceUID of each imported row, in table order.
        rejected: Rows not imported (``TABLE:row N``, N counted from 1 over data rows) and why.
    """

    out: Path
    dicom_dir: Path
    reports: Path
    labels_path: Path
    labels: list[str]
    study_uids: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def summary(self) -> str:
        """One line: imported and rejected counts and where the files are."""
        return (
            f"imported {len(self.study_uids)} studies -> {self.dicom_dir}; reports {self.reports}; "
            f"labels {self.labels_path}; rejected rows: {len(self.rejected)} (listed in {self.out / 'rejected.csv'})"
        )


def stable_uid(*parts: str) -> str:
    """A DICOM UID derived from ``parts`` alone (``2.25.`` + 128 bits of their SHA-256): same parts, same UID."""
    digest = hashlib.sha256("\x1f".join(("medfusion-import", *parts)).encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def read_image(path: Path, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read a PNG/JPEG (any Pillow format) as a grayscale uint8 or uint16 array ``(rows, cols)``.

    Size is bounded before decoding: the file's bytes, then the pixel count from the header.

    Raises:
        ImageRejected: Missing, too large, unreadable or truncated, or not a 2-D image.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageRejected("image file not found")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected(f"image file too large ({size} bytes > {max_bytes})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageRejected(f"image too large ({width}x{height} pixels > {max_pixels})")
                if getattr(image, "n_frames", 1) > 1:
                    raise ImageRejected("multi-frame images are not supported")
                image.load()
                return _grayscale(image)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"unreadable image ({' '.join(str(exc).split())[:200]})") from None


def _grayscale(image: object) -> np.ndarray:
    """The stored values of a loaded Pillow image, 8- or 16-bit grayscale (colour by luminance)."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageRejected(f"pixel values {arr.min()}..{arr.max()} do not fit in 16 bits")
        return arr.astype(np.uint16)
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("1", "P", "PA", "RGB", "RGBA", "RGBX", "LA", "CMYK", "YCbCr", "La"):
        return np.asarray(image.convert("L"), dtype=np.uint8)  # L = R*299/1000 + G*587/1000 + B*114/1000
    raise ImageRejected(f"unsupported image mode {image.mode}")


@dataclass(frozen=True)
class _Row:
    patient_id: str
    study_id: str
    view: str
    study_date: str


def dicom_dataset(pixels: np.ndarray, row: _Row, *, modality: str = "OT") -> Dataset:
    """A Secondary Capture dataset (MONOCHROME2, 8 or 16 bits as ``pixels``) for one imported row."""
    study_uid = stable_uid("study", row.patient_id, row.study_id)
    sop_class = pydicom.uid.SecondaryCaptureImageStorage
    sop_uid = pydicom.uid.UID(stable_uid("sop", row.patient_id, row.study_id))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = stable_uid("series", row.patient_id, row.study_id)
    ds.PatientName = ""
    ds.PatientID = row.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = row.study_date
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = row.study_id if len(row.study_id) <= 16 else ""  # SH: 16 characters at most
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = ""
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.BodyPartExamined = "CHEST"
    if row.view:
        ds.ViewPosition = row.view
    ds.set_pixel_data(pixels, "MONOCHROME2", pixels.dtype.itemsize * 8, generate_instance_uid=False)
    return ds


def _date(value: str) -> str:
    match = _DATE.match(value.strip())
    return "".join(match.groups()) if match else ""


def _resolve(table: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else table.parent / path


def import_images(
    table: Path, out: Path, *, modality: str = "OT", max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES
) -> ImportResult:
    """Import every usable row of ``table`` into ``out`` (see the module docstring for the columns).

    Args:
        table: The CSV table.
        out: Output folder: ``dicom/``, ``reports.csv``, ``labels.csv``, ``rejected.csv``.
        modality: The files' Modality (``OT``; ``CR`` or ``DX`` for radiographs that series rules select by it).
        max_pixels: Largest image accepted (pixels, read from the header before decoding).
        max_bytes: Largest image file accepted (bytes).

    Returns:
        The written paths, the imported studies' UIDs and the rejected rows.

    Raises:
        ImageTableError: The table is missing, not CSV, or lacks ``image``, ``patient_id``, or a study column.
        ValueError: ``modality`` is not a DICOM code string.
    """
    if not _VIEW.match(modality):
        raise ValueError(f"modality {modality!r} is not a DICOM code string (e.g. OT, CR, DX)")
    frame = read_text_csv(table, ImageTableError, "image table")
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = columns
    study_column = next((c for c in STUDY_COLUMNS if c in columns), None)
    missing = [c for c in (IMAGE_COLUMN, PATIENT_COLUMN) if c not in columns]
    if study_column is None:
        missing.append(" or ".join(STUDY_COLUMNS))
    if missing:
        raise ImageTableError(table, f"image table lacks column(s): {', '.join(missing)} (has: {', '.join(columns)})")
    known = {IMAGE_COLUMN, PATIENT_COLUMN, *STUDY_COLUMNS, *OPTIONAL_COLUMNS}
    labels = [c for c in columns if c not in known]

    dicom_dir = out / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    result = ImportResult(out, dicom_dir, out / "reports.csv", out / "labels.csv", labels)
    reports: list[tuple[str, str]] = []
    label_rows: list[list[str]] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(frame.to_dict("records"), start=1):
        locator = f"{table.name}:row {index}"
        image_value = str(record[IMAGE_COLUMN]).strip()
        try:
            patient, study = str(record[PATIENT_COLUMN]).strip(), str(record[study_column]).strip()
            if not image_value:
                raise ImageRejected("no image path")
            if not patient:
                raise ImageRejected(f"no {PATIENT_COLUMN}")
            if not study:
                raise ImageRejected(f"no {study_column}")
            if len(patient) > 64:
                raise ImageRejected(f"{PATIENT_COLUMN} longer than 64 characters (DICOM PatientID)")
            if study in seen:
                raise ImageRejected(f"duplicate {study_column} (same as row {seen[study]})")
            view = str(record.get("view", "")).strip().upper()
            if view and not _VIEW.match(view):
                raise ImageRejected("view is not a DICOM ViewPosition (e.g. PA, AP, LL)")
            pixels = read_image(_resolve(table, image_value), max_pixels=max_pixels, max_bytes=max_bytes)
        except ImageRejected as exc:
            result.rejected.append(Rejection(locator, str(exc)))
            continue
        seen[study] = index
        row = _Row(patient, study, view, _date(str(record.get("study_date", ""))))
        ds = dicom_dataset(pixels, row, modality=modality)
        ds.save_as(dicom_dir / f"{ds.StudyInstanceUID}.dcm", enforce_file_format=True)
        result.study_uids.append(ds.StudyInstanceUID)
        report = str(record.get("report", "")).strip()
        if report:
            reports.append((ds.StudyInstanceUID, report))
        label_rows.append([ds.StudyInstanceUID, *(str(record[label]).strip() for label in labels)])

    _write_csv(result.reports, ["study_uid", "report"], [list(r) for r in reports])
    _write_csv(result.labels_path, ["study_uid", *labels], label_rows)
    images = {f"{table.name}:row {i}": str(r[IMAGE_COLUMN]) for i, r in enumerate(frame.to_dict("records"), 1)}
    _write_csv(
        out / "rejected.csv",
        ["row", "image", "reason"],
        [[r.source, images[r.source], r.reason] for r in result.rejected],
    )
    logger.info("imported %d studies, rejected %d rows", len(result.study_uids), len(result.rejected))
    return result


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
