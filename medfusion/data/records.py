"""Plain records that flow between the data layer, training and scoring.

All metadata here is PHI-free: no patient names, IDs, birth dates, accession numbers or study
dates in clear. Identifiers needed for joins are pseudonymised with :func:`medfusion.privacy.pseudonym`.
DICOM UIDs are kept (they are needed to address studies in a PACS and in results).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: Manifest column prefix for label columns: ``y_<label>`` holds 1, 0 or empty (unknown).
LABEL_PREFIX = "y_"


@dataclass(frozen=True)
class DicomImage:
    """One decoded DICOM instance.

    Attributes:
        pixels: float32 tensor of shape ``(frames, channels, rows, cols)``, values in ``[0, 1]`` as
            a reader would see them on screen: modality LUT (rescale) applied, then the VOI LUT or
            window, then MONOCHROME1 inverted so that higher is always brighter. ``channels`` is 1
            for grayscale and 3 for colour (RGB; YBR converted to RGB).
        meta: PHI-free metadata (see :func:`medfusion.data.dicom.read_dicom` for the keys).
        source: Path of the file it came from.
    """

    pixels: torch.Tensor
    meta: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Report:
    """A radiology report, as parsed from text, CSV or a FHIR DiagnosticReport.

    Attributes:
        text: The full report text.
        sections: Upper-case section name (``FINDINGS``, ``IMPRESSION``, ``HISTORY``...) to its text;
            empty when the report has no recognisable headings.
        accession_pseudonym: Pseudonymised accession number, or None when the source has none.
        study_uid: StudyInstanceUID the report refers to (from an ImagingStudy reference), or None.
        report_id: A non-identifying id (the FHIR resource id, a CSV row number...).
        status: FHIR status (``final``, ``preliminary``...) when known.
        source: File (and line / entry) it came from.
    """

    text: str
    sections: dict[str, str] = field(default_factory=dict)
    accession_pseudonym: str | None = None
    study_uid: str | None = None
    report_id: str | None = None
    status: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Rejection:
    """An input that could not be used, kept so that batch jobs lose nothing.

    Attributes:
        source: File path (or ``file:line`` / ``file#entry``) of the rejected input.
        reason: Why it was rejected, free of patient data.
    """

    source: str
    reason: str
