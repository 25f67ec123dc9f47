"""Write DICOM Part-10 files from numpy arrays (demo cohorts and tests).

:func:`write_dicom` stores the values it is given: the caller decides the representation (for a
MONOCHROME1 file the caller inverts the values first). Compression uses pydicom's encoders
(:meth:`pydicom.dataset.Dataset.compress`: RLE via pydicom, JPEG-LS via pyjpegls, JPEG 2000 via
pylibjpeg-openjpeg); JPEG baseline is encoded with Pillow and encapsulated, because pydicom has no
JPEG baseline encoder.

The patient/study values of :class:`DicomSpec` are written into the file as given (tests use them to
check that readers never leak them); the defaults are anonymous.
"""

from __future__ import annotations

import datetime
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

logger = logging.getLogger(__name__)

_UNCOMPRESSED = {
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.DeflatedExplicitVRLittleEndian,
}
_ENCODED_BY_PYDICOM = {
    pydicom.uid.RLELossless,
    pydicom.uid.JPEGLSLossless,
    pydicom.uid.JPEG2000Lossless,
}
_SUPPORTED = _UNCOMPRESSED | _ENCODED_BY_PYDICOM | {pydicom.uid.JPEGBaseline8Bit}

_SINGLE_FRAME_SOP_CLASS = {
    "CR": pydicom.uid.ComputedRadiographyImageStorage,
    "DX": pydicom.uid.DigitalXRayImageStorageForPresentation,
    "CT": pydicom.uid.CTImageStorage,
    "MR": pydicom.uid.MRImageStorage,
}


@dataclass(frozen=True)
class DicomSpec:
    """What to put in the file besides the pixels.

    Attributes:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_uid: SOPInstanceUID; generated when None.
        modality: ``"CR"``, ``"DX"``, ``"CT"``, ... (also selects the SOP class).
        photometric: ``"MONOCHROME1"``, ``"MONOCHROME2"`` or ``"RGB"``. Values are written as given.
        transfer_syntax: One of Explicit/Implicit VR Little Endian, Deflated Explicit VR Little
            Endian, RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless, JPEG Baseline 8-bit (8-bit
            only, lossy). JPEG 2000 needs images of at least 32x32 pixels.
        bits_stored: 8, 12 or 16 for grayscale; 8 for RGB.
        rescale_slope: RescaleSlope, or None to omit.
        rescale_intercept: RescaleIntercept, or None to omit.
        window_center: WindowCenter, or None to omit.
        window_width: WindowWidth, or None to omit.
        view_position: ``"PA"``, ``"AP"``, ``"LL"`` or None.
        body_part: BodyPartExamined.
        patient_name: PatientName (PHI; only written to the file).
        patient_id: PatientID (PHI).
        patient_birth_date: PatientBirthDate, ``YYYYMMDD`` (PHI).
        patient_sex: PatientSex.
        accession_number: AccessionNumber (PHI).
        study_date: StudyDate, ``YYYYMMDD``.
        instance_number: InstanceNumber.
        pixel_spacing: PixelSpacing (row, column) in mm, or None to omit.
        image_position: ImagePositionPatient (x, y, z) in mm for slices of a 3D series (an axial
            ImageOrientationPatient is written with it), or None.
        slice_thickness: SliceThickness in mm, or None.
    """

    study_uid: str
    series_uid: str
    sop_uid: str | None = None
    modality: str = "CR"
    photometric: str = "MONOCHROME2"
    transfer_syntax: str = pydicom.uid.ExplicitVRLittleEndian
    bits_stored: int = 12
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_center: float | None = None
    window_width: float | None = None
    view_position: str | None = None
    body_part: str = "CHEST"
    patient_name: str = "ANONYMOUS"
    patient_id: str = "0"
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_date: str = ""
    instance_number: int = 1
    pixel_spacing: tuple[float, float] | None = (0.5, 0.5)
    image_position: tuple[float, float, float] | None = None
    slice_thickness: float | None = None


def write_dicom(path: str | Path, pixels: np.ndarray, spec: DicomSpec) -> Path:
    """Write one image as a DICOM Part-10 file.

    Args:
        path: Destination file; parent folders are created.
        pixels: Stored values. Grayscale: an integer array ``(rows, cols)`` or
            ``(frames, rows, cols)`` whose values fit in ``spec.bits_stored`` bits (negative values
            make the file signed). RGB: uint8 ``(rows, cols, 3)`` or ``(frames, rows, cols, 3)``.
        spec: Header values and encoding.

    Returns:
        The written path.

    Raises:
        ValueError: The array does not match the spec (shape, dtype, value range), or the transfer
            syntax is not supported.
    """
    path = Path(path)
    ts = UID(spec.transfer_syntax)
    if ts not in _SUPPORTED:
        raise ValueError(f"unsupported transfer syntax for writing: {ts} ({ts.name})")
    arr, frames = _prepare_pixels(np.asarray(pixels), spec)
    if ts == pydicom.uid.JPEGBaseline8Bit and spec.bits_stored != 8:
        raise ValueError("JPEG baseline needs bits_stored=8")
    rows, cols = arr.shape[-3:-1] if spec.photometric == "RGB" else arr.shape[-2:]
    if ts == pydicom.uid.JPEG2000Lossless and min(rows, cols) < 32:
        # pylibjpeg-openjpeg always uses 6 DWT resolutions, which need at least 2**5 pixels a side.
        raise ValueError(f"JPEG 2000 encoding needs at least 32x32 pixels, got {rows}x{cols}")

    ds = _base_dataset(spec, frames=frames, bits_allocated=arr.dtype.itemsize * 8)
    ds.set_pixel_data(arr, spec.photometric, spec.bits_stored, generate_instance_uid=False)

    if ts in _ENCODED_BY_PYDICOM:
        ds.compress(ts, generate_instance_uid=False)
    elif ts == pydicom.uid.JPEGBaseline8Bit:
        _compress_jpeg_baseline(ds, arr, frames)
    else:
        ds.file_meta.TransferSyntaxUID = ts

    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    logger.debug("wrote %s (%s, %d frame(s))", path.name, ts.name, frames)
    return path


def _prepare_pixels(arr: np.ndarray, spec: DicomSpec) -> tuple[np.ndarray, int]:
    """Validate ``arr`` against ``spec`` and cast it to the stored dtype.

    Returns:
        The array to store (uint8/uint16/int16, same shape) and the number of frames.
    """
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pixels must be an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError("pixels is empty")
    if spec.photometric == "RGB":
        if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
            raise ValueError(f"RGB pixels must be (rows, cols, 3) or (frames, rows, cols, 3), got {arr.shape}")
        if spec.bits_stored != 8 or arr.min() < 0 or arr.max() > 255:
            raise ValueError("RGB pixels must be 8-bit (bits_stored=8, values 0..255)")
        frames = arr.shape[0] if arr.ndim == 4 else 1
        return arr.astype(np.uint8), frames
    if spec.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"unsupported photometric interpretation for writing: {spec.photometric}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"grayscale pixels must be (rows, cols) or (frames, rows, cols), got {arr.shape}")
    if not 1 <= spec.bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 1..16, got {spec.bits_stored}")
    lo, hi = int(arr.min()), int(arr.max())
    signed = lo < 0
    if signed:
        limit_lo, limit_hi = -(1 << (spec.bits_stored - 1)), (1 << (spec.bits_stored - 1)) - 1
    else:
        limit_lo, limit_hi = 0, (1 << spec.bits_stored) - 1
    if lo < limit_lo or hi > limit_hi:
        raise ValueError(f"pixel values {lo}..{hi} do not fit in {spec.bits_stored} bits")
    small = spec.bits_stored <= 8
    dtype: type[np.integer] = (np.int8 if small else np.int16) if signed else (np.uint8 if small else np.uint16)
    frames = arr.shape[0] if arr.ndim == 3 else 1
    return arr.astype(dtype), frames


def _sop_class(spec: DicomSpec, frames: int, bits_allocated: int) -> UID:
    if frames > 1:
        if spec.photometric == "RGB":
            return pydicom.uid.MultiFrameTrueColorSecondaryCaptureImageStorage
        if bits_allocated == 8:
            return pydicom.uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage
        return pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    if spec.photometric == "RGB":
        return pydicom.uid.SecondaryCaptureImageStorage
    return _SINGLE_FRAME_SOP_CLASS.get(spec.modality.upper(), pydicom.uid.SecondaryCaptureImageStorage)


def _base_dataset(spec: DicomSpec, *, frames: int, bits_allocated: int) -> Dataset:
    """Everything except the pixel module."""
    sop_class = _sop_class(spec, frames, bits_allocated)
    sop_uid = pydicom.uid.UID(spec.sop_uid) if spec.sop_uid else pydicom.uid.generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = spec.modality
    ds.StudyDate = spec.study_date
    ds.StudyTime = ""
    now = datetime.datetime.now()
    ds.ContentDate = spec.study_date or now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = spec.accession_number
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = spec.instance_number
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    ds.BodyPartExamined = spec.body_part
    ds.PatientOrientation = ""
    if sop_class in (
        pydicom.uid.SecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        pydicom.uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    ):
        ds.ConversionType = "WSD"
    if spec.view_position is not None:
        ds.ViewPosition = spec.view_position
    if spec.pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in spec.pixel_spacing]
    if spec.image_position is not None:
        ds.ImagePositionPatient = [float(v) for v in spec.image_position]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if spec.slice_thickness is not None:
        ds.SliceThickness = float(spec.slice_thickness)
    if spec.rescale_slope is not None or spec.rescale_intercept is not None:
        ds.RescaleIntercept = float(spec.rescale_intercept if spec.rescale_intercept is not None else 0.0)
        ds.RescaleSlope = float(spec.rescale_slope if spec.rescale_slope is not None else 1.0)
        ds.RescaleType = "HU" if spec.modality.upper() == "CT" else "US"
    if spec.window_center is not None and spec.window_width is not None:
        ds.WindowCenter = float(spec.window_center)
        ds.WindowWidth = float(spec.window_width)
    if frames > 1:
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
        ds.FrameTime = 0.0
    return ds


def _compress_jpeg_baseline(ds: Dataset, arr: np.ndarray, frames: int) -> None:
    """Encode 8-bit frames with Pillow (quality 95) and encapsulate them into ``ds``.

    RGB input is stored as ``YBR_FULL_422`` (the JPEG codestream's own colour space, 4:2:2
    chroma subsampling), as the DICOM standard requires for JPEG baseline colour images.
    """
    from PIL import Image

    colour = ds.PhotometricInterpretation == "RGB"
    stack = arr if frames > 1 else arr[None]
    encoded: list[bytes] = []
    for frame in stack:
        buffer = io.BytesIO()
        image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))  # (r, c) -> L, (r, c, 3) -> RGB
        options = {"subsampling": 1} if colour else {}
        image.save(buffer, format="JPEG", quality=95, **options)
        encoded.append(buffer.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ratio = arr.nbytes / max(1, sum(len(b) for b in encoded))
    ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
