"""Plain records that flow between the data layer, training and scoring.

All metadata here is PHI-free: no patient names, IDs, birth dates, accession numbers or study
dates in clear. Identifiers needed for joins are pseudonymised with :func:`medfusion.privacy.pseudonym`.
DICOM UIDs are kept (they are needed to address studies in a PACS and in results).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Manifest column prefix for label columns: ``y_<label>`` holds 1, 0 or empty (unknown).
LABEL_PREFIX = "y_"

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_dicom_uid(value: str) -> bool:
    """Return True when ``value`` is a syntactically valid DICOM UID (digits and dots, <= 64 chars)."""
    return len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True)
class DicomImage:
    """One decoded DICOM instance.

    Attributes:
        pixels: float32 tensor of shape ``(frames, channels, rows, cols)``, values in ``[0, 1]`` as
            a reader would see them on screen: modality LUT (rescale) applied, then the VOI LUT or
            window, then MONOCHROME1 inverted so that higher is always brighter. ``channels`` is 1
            for grayscale and 3 for colour (RGB; YBR converted to RGB).
        meta: PHI-free metadata (see :func:`medfusion.ingest.dicom.read.read_dicom` for the keys).
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


_RECORD_SEPARATORS = {"line": ":line ", "row": ":row ", "entry": "#entry "}
_LOCATED = re.compile(r"^(?P<file>.+?)(?P<sep>:line |:row |#entry )(?P<n>[1-9][0-9]*)$")


def record_locator(path: Path | str, kind: str, n: int) -> str:
    """Where a record sits in its file: ``file:line N`` (NDJSON), ``file:row N`` (CSV data row) or
    ``file#entry N`` (Bundle entry), N from 1. :func:`split_locator` reads it back."""
    return f"{path}{_RECORD_SEPARATORS[kind]}{n}"


def split_locator(source: str) -> dict[str, str | int]:
    """A rejection's locator as fields: ``{"file": f, "line": 3}`` (or ``"row"`` / ``"entry"``), or
    ``{"file": f}`` for a whole file."""
    match = _LOCATED.match(source)
    if match is None:
        return {"file": source}
    kind = next(k for k, sep in _RECORD_SEPARATORS.items() if sep == match["sep"])
    return {"file": match["file"], kind: int(match["n"])}


def join_locator(fields: dict[str, str | int]) -> str:
    """The locator string again from :func:`split_locator`'s fields (other keys are ignored)."""
    kind = next((k for k in _RECORD_SEPARATORS if k in fields), None)
    return str(fields["file"]) if kind is None else record_locator(str(fields["file"]), kind, int(fields[kind]))


@dataclass(frozen=True)
class Rejection:
    """An input that could not be used, kept so that batch jobs lose nothing.

    Attributes:
        source: File path, or the record's :func:`record_locator` (``file:line N``, ``file:row N``,
            ``file#entry N``), of the rejected input.
        reason: Why it was rejected, free of patient data.
    """

    source: str
    reason: str


@dataclass
class ReportBatch:
    """What a report reader got out of its input.

    Attributes:
        reports: The usable reports, in input order.
        rejected: One entry per input record that could not be used.
    """

    reports: list[Report] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def extend(self, other: ReportBatch) -> None:
        """Append another batch's reports and rejections to this one."""
        self.reports.extend(other.reports)
        self.rejected.extend(other.rejected)
