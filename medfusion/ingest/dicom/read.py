"""Read DICOM files into display-ready tensors with PHI-free metadata: :func:`read_dicom`, :func:`read_dicom_header`.

Pipeline of :func:`read_dicom` (PS3.4 Annex N grayscale pipeline, then colour handling); each stage
lives in its own module of :mod:`medfusion.ingest.dicom`:

1. Refuse files larger than ``max_bytes`` (default :func:`~medfusion.ingest.dicom.limits.byte_limit`
   of ``max_pixels``) before reading them. Parse the header without pixel data
   (:mod:`~medfusion.ingest.dicom.header`) and refuse images larger than ``max_pixels``
   (``rows * cols * frames * samples``, :mod:`~medfusion.ingest.dicom.limits`) before any pixel byte
   is read or decoded. Deflated files are inflated only as far as the parser reads and never beyond
   ``max_bytes`` (:mod:`medfusion.ingest.dicom.deflate`): a header read inflates the header only, and
   a small "deflate bomb" is refused while inflating.
2. Decode with pydicom's pixel decoders (:mod:`~medfusion.ingest.dicom.decode`: native, deflate, RLE,
   JPEG baseline/extended/lossless via pylibjpeg-libjpeg or Pillow, JPEG-LS via pyjpegls, JPEG 2000
   via pylibjpeg-openjpeg), or, given ``min_size``, JPEG 2000 at the reduced resolution level the
   caller needs (:mod:`~medfusion.ingest.dicom.reduced`, Pillow's OpenJPEG). YBR_FULL /
   YBR_FULL_422 / YBR_ICT / YBR_RCT are converted to RGB by pydicom.
3. Grayscale: modality LUT (Modality LUT Sequence, or Rescale Slope/Intercept, also looked up in
   the shared functional groups of enhanced multi-frame files), then the VOI stage
   (:mod:`~medfusion.ingest.dicom.display`):

   * a VOI LUT Sequence when present (output scaled by the LUT's own min/max),
   * else the first Window Center/Width (LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2),
   * else **min-max of the modality values** over the whole image (all frames): the darkest
     value maps to 0 and the brightest to 1. A constant image maps to 0.

   Then MONOCHROME1 (and MONOCHROME2 with Presentation LUT Shape ``INVERSE``) is inverted so that
   higher is always brighter.
4. Colour (RGB after step 2, 8-16 bits) is divided by ``2**BitsStored - 1``; PALETTE COLOR is
   expanded through its palette (alpha dropped) and divided by the LUT's full scale.

Every failure becomes a :class:`~medfusion.errors.DicomReadError` naming the file and a short
reason; no other exception type escapes these functions (:mod:`~medfusion.ingest.dicom.guard`).
pydicom's warnings and log records are captured and logged once each at DEBUG level, quoted values
redacted (they may be patient data).

Metadata (``DicomImage.meta`` and :func:`read_dicom_header`) holds no patient name, ID, birth
date, accession number (only its pseudonym) or date of any kind.

Inside :func:`~medfusion.ingest.dicom.watch.watch_files`, every reader reports each file it starts on
(scoring workers send it to a watchdog that bounds the wall time spent on one file). A 3D series of
single-frame slices is read by :func:`~medfusion.ingest.dicom.series.read_series`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medfusion.ingest.dicom.decode import decode
from medfusion.ingest.dicom.display import display
from medfusion.ingest.dicom.guard import guard, pydicom_warnings
from medfusion.ingest.dicom.header import HEADER_TAGS, image_meta, read_dataset
from medfusion.ingest.dicom.limits import DEFAULT_MAX_PIXELS, byte_limit
from medfusion.ingest.dicom.watch import report_start
from medfusion.ingest.records import DicomImage


def read_dicom(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    min_size: Sequence[int] | None = None,
) -> DicomImage:
    """Read one DICOM file into a display-ready image.

    Args:
        path: The file.
        max_pixels: Refuse images whose ``rows * cols * frames * samples`` exceeds this, checked
            from the header before the pixel data is read.
        max_bytes: Refuse files larger than this before reading them, and deflated datasets that
            inflate to more; None: :func:`~medfusion.ingest.dicom.limits.byte_limit` of ``max_pixels``.

    Returns:
        A :class:`~medfusion.ingest.records.DicomImage` whose ``pixels`` is a float32 tensor
        ``(frames, channels, rows, cols)`` in ``[0, 1]`` (channels 1 for grayscale, 3 for colour) and
        whose ``meta`` holds:
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
    report_start(path)
    with pydicom_warnings(path):
        decoded = guard(path, lambda: decode(path, max_pixels, max_bytes or byte_limit(max_pixels), min_size))
        pixels = guard(path, lambda: display(decoded, None))
    return DicomImage(pixels=torch.from_numpy(pixels), meta=decoded.meta, source=str(path))


def read_dicom_header(path: str | Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Read the PHI-free metadata of a file without reading its pixel data.

    Args:
        path: The file.
        max_bytes: Refuse larger files before reading them (and deflated headers that inflate to
            more); None: :func:`~medfusion.ingest.dicom.limits.byte_limit` of
            :data:`~medfusion.ingest.dicom.limits.DEFAULT_MAX_PIXELS`.

    Returns:
        The ``meta`` dict of :func:`read_dicom` (without ``window``/``voi``, which need the pixels).

    Raises:
        DicomReadError: The file is not DICOM, is too large, or lacks the image tags (Rows, Columns).
    """
    path = Path(path)
    limit = max_bytes or byte_limit()
    report_start(path)
    with pydicom_warnings(path):
        ds = guard(path, lambda: read_dataset(path, pixels=False, max_bytes=limit, tags=HEADER_TAGS))
        return guard(path, lambda: image_meta(path, ds))
