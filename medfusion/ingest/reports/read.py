"""Radiology reports in: plain text, CSV and (through :mod:`medfusion.fhir.read`) FHIR R5 DiagnosticReports.

Readers return a :class:`~medfusion.ingest.records.ReportBatch`: the reports that could be used and a
:class:`~medfusion.ingest.records.Rejection` for each one that could not, so that a batch job loses
nothing and one bad record never stops the others. A file that cannot be read at all (missing, not
UTF-8, not JSON, not a CSV with a report column) raises :class:`~medfusion.errors.ReportParseError`.
:func:`read_reports` picks the reader by file extension.

Accession numbers are pseudonymised with :func:`medfusion.privacy.pseudonym` (``kind="acc"``) as soon
as they are read; neither they nor any report content appear in logs or rejection reasons.

Imports: :mod:`medfusion.ingest.records`, :mod:`medfusion.ingest.reports.text`,
:mod:`medfusion.ingest.csv_table`, :mod:`medfusion.fhir.read`, :mod:`medfusion.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from medfusion.errors import ReportParseError
from medfusion.fhir.read import FHIR_SUFFIXES, read_fhir_files, read_fhir_reports
from medfusion.ingest.csv_table import read_text_csv
from medfusion.ingest.records import (
    Rejection,
    ReportBatch,
    is_dicom_uid,
    record_locator,
)
from medfusion.ingest.reports.text import DEFAULT_MAX_CHARS, report_from_text

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- text


def _uid_from_stem(stem: str) -> str | None:
    """A text file named after its study (``1.2.840....txt``) gives its StudyInstanceUID."""
    return stem if "." in stem and is_dicom_uid(stem) else None


def read_text_reports(folder_or_file: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read plain-text reports: one ``.txt`` file, or every ``.txt`` file of a folder (not recursive).

    The file stem is the report id. A stem that is a DICOM UID (``1.2.840.113619....txt``) is also
    taken as the report's StudyInstanceUID; otherwise text reports carry no linkage key.

    Args:
        folder_or_file: A ``.txt`` file or a folder.
        max_chars: Longest text accepted.

    Returns:
        The batch; a file that cannot be used (not UTF-8, empty, too long, unreadable) is a rejection.

    Raises:
        ReportParseError: The path does not exist.
    """
    root = Path(folder_or_file)
    if not root.exists():
        raise ReportParseError(root, "no such file or folder")
    files = sorted(p for p in root.glob("*.txt") if p.is_file()) if root.is_dir() else [root]
    if root.is_dir() and not files:
        logger.warning("%s: no .txt report files", root)
    batch = ReportBatch()
    for path in files:
        try:
            raw = path.read_bytes()
            batch.reports.append(
                report_from_text(
                    raw,
                    source=str(path),
                    report_id=path.stem,
                    study_uid=_uid_from_stem(path.stem),
                    max_chars=max_chars,
                )
            )
        except OSError as exc:
            batch.rejected.append(Rejection(str(path), f"cannot read file: {exc.strerror or type(exc).__name__}"))
        except ReportParseError as exc:
            batch.rejected.append(Rejection(str(path), exc.reason))
    logger.info("%s: %d text report(s), %d rejected", root, len(batch.reports), len(batch.rejected))
    return batch


# ---------------------------------------------------------------------------------------------- CSV

#: The columns of a report CSV: the text (required), and the keys that link a report to its study
#: (optional; at least one of accession number and StudyInstanceUID for the report to be linked).
CSV_REPORT_COLUMNS = {
    "report": "report text (required)",
    "accession_number": "accession number in clear, pseudonymised on reading (links by accession)",
    "study_uid": "StudyInstanceUID (links by study)",
    "report_id": "report id (default row<N>)",
}


def read_csv_reports(
    path: str | Path,
    *,
    text_column: str = "report",
    accession_column: str = "accession_number",
    study_uid_column: str = "study_uid",
    id_column: str = "report_id",
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ReportBatch:
    """Read reports from a UTF-8 CSV file, one report per row.

    Args:
        path: The CSV file.
        text_column: Column holding the report text (required).
        accession_column: Column holding accession numbers in clear (optional column).
        study_uid_column: Column holding StudyInstanceUIDs (optional column).
        id_column: Column holding report ids (optional; default id ``row<N>``).
        max_chars: Longest text accepted.

    Returns:
        The batch. A bad row becomes a rejection ``"<path>:row N: <reason>"``, N counting data rows
        from 1 (the header is not a row).

    Raises:
        ReportParseError: The file is missing, not UTF-8, not parseable as CSV, or lacks ``text_column``.
    """
    path = Path(path)
    table = read_text_csv(path, ReportParseError, "CSV file")
    _require_text_column(path, table.columns, text_column)
    batch = ReportBatch()
    for n, row in enumerate(table.to_dict(orient="records"), start=1):
        source = record_locator(path, "row", n)
        try:
            batch.reports.append(
                report_from_text(
                    row[text_column],
                    source=source,
                    accession=row.get(accession_column) or None,
                    study_uid=row.get(study_uid_column) or None,
                    report_id=row.get(id_column) or f"row{n}",
                    max_chars=max_chars,
                )
            )
        except ReportParseError as exc:
            batch.rejected.append(Rejection(source, exc.reason))
    logger.info("%s: %d CSV report(s), %d rejected", path, len(batch.reports), len(batch.rejected))
    return batch


def _require_text_column(path: Path, columns: Iterable[object], text_column: str) -> None:
    """Raise :class:`ReportParseError` naming the report CSV columns when ``text_column`` is not a column."""
    names = [str(c) for c in columns]
    if text_column not in names:
        known = ", ".join(CSV_REPORT_COLUMNS)
        raise ReportParseError(
            path,
            f"missing report text column {text_column!r} "
            f"(report CSV columns: {known}; the file has: {', '.join(names)})",
        )


# ------------------------------------------------------------------------------------------ dispatch

_SUFFIXES = (*FHIR_SUFFIXES, ".csv", ".txt")


def _in_file_order(batch: ReportBatch, files: list[Path]) -> ReportBatch:
    """The batch's reports and rejections sorted (stably) by the file they come from."""
    names = sorted(((str(f), i) for i, f in enumerate(files)), key=lambda x: -len(x[0]))  # longest prefix wins

    def rank(source: str) -> int:
        return next((i for name, i in names if source.startswith(name)), len(files))

    return ReportBatch(
        sorted(batch.reports, key=lambda r: rank(r.source)), sorted(batch.rejected, key=lambda r: rank(r.source))
    )


def _unsupported(suffix: str) -> str:
    return f"unsupported report file type {suffix or '(none)'!r} (use {', '.join(_SUFFIXES)})"


def check_report_source(path: str | Path) -> None:
    """Cheap checks of a report source before any work: it exists, its type is known, a CSV has its text column.

    Reads a CSV's header only. A folder is only checked to exist (its files are checked as they are read,
    and a bad one becomes a rejection).

    Raises:
        ReportParseError: The path does not exist, has an unsupported extension, or is a CSV file
            that cannot be read or lacks the ``report`` column (the message lists the columns).
    """
    path = Path(path)
    if not path.exists():
        raise ReportParseError(path, "no such file or folder")
    if path.is_dir():
        return
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ReportParseError(path, _unsupported(suffix))
    if suffix == ".csv":
        header = read_text_csv(path, ReportParseError, "CSV file", header_only=True)
        _require_text_column(path, header.columns, "report")


def read_reports(path: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read reports from any supported source, chosen by extension.

    ``.json`` / ``.ndjson`` / ``.jsonl``: :func:`medfusion.fhir.read.read_fhir_reports`; ``.csv``:
    :func:`read_csv_reports` (default columns); ``.txt``: :func:`read_text_reports`. A folder: every
    file with one of these extensions directly in it (not recursive), sorted by name, its FHIR files
    read as one input (:func:`medfusion.fhir.read.read_fhir_files`: ``study`` references resolve
    across them; a FHIR Bulk Data export folder with its manifest is read by the manifest); there a
    file that cannot be read at all becomes a rejection instead of an error.

    Args:
        path: A file or a folder.
        max_chars: Longest report text accepted.

    Returns:
        The batch.

    Raises:
        ReportParseError: The path does not exist, has an unsupported extension, or (a single file)
            cannot be read at all.
    """
    path = Path(path)
    if path.is_dir():
        batch = ReportBatch()
        try:
            children = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
        except OSError as exc:
            raise ReportParseError(path, f"cannot read folder: {exc.strerror or type(exc).__name__}") from None
        if not children:
            logger.warning("%s: no report files (%s)", path, ", ".join(_SUFFIXES))
        fhir_files = [p for p in children if p.suffix.lower() in FHIR_SUFFIXES]
        if fhir_files:  # one input: references resolve across the files (an export spread over files)
            batch.extend(read_fhir_files(fhir_files, max_chars=max_chars))
        for child in children:
            if child in fhir_files:
                continue
            try:
                batch.extend(read_reports(child, max_chars=max_chars))
            except ReportParseError as exc:
                batch.rejected.append(Rejection(exc.source, exc.reason))
        return _in_file_order(batch, children)
    if not path.exists():
        raise ReportParseError(path, "no such file or folder")
    suffix = path.suffix.lower()
    if suffix in FHIR_SUFFIXES:
        return read_fhir_reports(path, max_chars=max_chars)
    if suffix == ".csv":
        return read_csv_reports(path, max_chars=max_chars)
    if suffix == ".txt":
        return read_text_reports(path, max_chars=max_chars)
    raise ReportParseError(path, _unsupported(suffix))
