"""A report's text: decoded, normalised and checked, then split into sections (one :class:`Report`).

Every report reader (plain text and CSV in :mod:`medfusion.ingest.reports.read`, FHIR in
:mod:`medfusion.fhir.read`) turns raw text into a report through this module, so the same limits
and the same cleaning apply to all of them.

Imports: :mod:`medfusion.ingest.records`, :mod:`medfusion.ingest.reports.sections`, :mod:`medfusion.errors`,
:mod:`medfusion.privacy`.
"""

from __future__ import annotations

from medfusion.errors import ReportParseError
from medfusion.ingest.records import Report, is_dicom_uid
from medfusion.ingest.reports.sections import split_sections
from medfusion.privacy import pseudonym

#: Longest report text accepted, in characters (after stripping surrounding whitespace).
DEFAULT_MAX_CHARS = 100_000


def clean_report_text(text: str | bytes, source: str, max_chars: int) -> str:
    """Decode, normalise line ends, strip and check a report text.

    Args:
        text: The text; bytes are decoded as UTF-8 (a leading BOM is dropped).
        source: Where it came from, named in errors.
        max_chars: Longest text accepted.

    Returns:
        The text, stripped, with ``\\n`` line ends.

    Raises:
        ReportParseError: Not UTF-8, empty, holding NUL characters, or longer than ``max_chars``.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReportParseError(source, f"report text is not valid UTF-8 (bad byte at offset {exc.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise ReportParseError(source, "empty report text")
    if "\x00" in text:
        raise ReportParseError(source, "report text contains NUL characters (binary data?)")
    if len(text) > max_chars:
        raise ReportParseError(source, f"report text too long ({len(text)} characters, limit {max_chars})")
    return text


def report_from_text(
    text: str | bytes,
    *,
    source: str,
    accession: str | None = None,
    study_uid: str | None = None,
    report_id: str | None = None,
    status: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Report:
    """Build a validated :class:`Report` from its text.

    Args:
        text: The report text; bytes are decoded as UTF-8 (a leading BOM is dropped).
        source: Where it came from (file, ``file:row N``...), used in errors and kept on the report.
        accession: Accession number in clear; stored only as its pseudonym. Blank means none.
        study_uid: StudyInstanceUID the report belongs to. Blank means none.
        report_id: A non-identifying id for the report.
        status: FHIR status when known.
        max_chars: Longest text accepted.

    Returns:
        The report, its text stripped and with ``\\n`` line ends, its sections split.

    Raises:
        ReportParseError: The text is not UTF-8, is empty, holds NUL characters or is too long, or
            ``study_uid`` is not a valid DICOM UID.
    """
    clean = clean_report_text(text, source, max_chars)
    uid = (study_uid or "").strip() or None
    if uid is not None and not is_dicom_uid(uid):
        raise ReportParseError(source, "study UID is not a valid DICOM UID")
    acc = (accession or "").strip()
    return Report(
        text=clean,
        sections=split_sections(clean),
        accession_pseudonym=pseudonym(acc, kind="acc") if acc else None,
        study_uid=uid,
        report_id=report_id,
        status=status,
        source=source,
    )
