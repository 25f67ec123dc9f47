"""Radiology reports in and out: plain text, CSV and FHIR R5 DiagnosticReport (JSON, NDJSON, Bundle).

Readers return a :class:`ReportBatch`: the reports that could be used and a
:class:`~medfusion.data.records.Rejection` for each one that could not, so that a batch job loses
nothing and one bad record never stops the others. A file that cannot be read at all (missing, not
UTF-8, not JSON, not a CSV with a report column) raises :class:`~medfusion.errors.ReportParseError`.

Accession numbers are pseudonymised with :func:`medfusion.privacy.pseudonym` (``kind="acc"``) as soon
as they are read; neither they nor any report content appear in logs or rejection reasons.

FHIR conventions (R5, ``fhir.resources`` 8):

* text: ``presentedForm`` (``text/plain``, base64 ``data``) first, else ``conclusion``, else the
  narrative ``text.div`` with its XHTML tags stripped;
* accession number: the ``identifier`` whose type has coding ``ACSN``
  (``http://terminology.hl7.org/CodeSystem/v2-0203``). Reports written by :func:`report_to_fhir` for
  which only the pseudonym is known carry it under :data:`ACCESSION_PSEUDONYM_SYSTEM` instead;
* StudyInstanceUID: ``study[].identifier`` with system ``urn:dicom:uid`` and value
  ``urn:oid:<uid>``, or ``study[].reference`` (``ImagingStudy/<id>`` or a Bundle ``fullUrl``) resolved
  through an ImagingStudy of the same Bundle / NDJSON file carrying such an identifier.
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from fhir.resources.bundle import Bundle, BundleEntry
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.resource import Resource
from pydantic import ValidationError

from medfusion.data.csv_table import read_text_csv
from medfusion.data.records import Rejection, Report
from medfusion.data.sections import split_sections
from medfusion.errors import ReportParseError
from medfusion.privacy import pseudonym

logger = logging.getLogger(__name__)

#: Longest report text accepted, in characters (after stripping surrounding whitespace).
DEFAULT_MAX_CHARS = 100_000

LOINC_SYSTEM = "http://loinc.org"
#: LOINC "Diagnostic imaging study", the code of every DiagnosticReport we write.
IMAGING_REPORT_CODE = "18748-4"
IMAGING_REPORT_DISPLAY = "Diagnostic imaging study"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
DICOM_UID_SYSTEM = "urn:dicom:uid"
#: Identifier system for an accession number that is already pseudonymised (value ``acc-<hex>``).
ACCESSION_PSEUDONYM_SYSTEM = "urn:medfusion:accession-pseudonym"

#: Every R5 DiagnosticReport status; ``fhir.resources`` does not enforce the value set.
FHIR_STATUSES = frozenset(
    {
        "registered",
        "partial",
        "preliminary",
        "modified",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
#: Statuses whose report must not be used.
REJECTED_STATUSES = frozenset({"entered-in-error", "cancelled"})

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ACC_PSEUDONYM = re.compile(r"^acc-[0-9a-f]{16}$")
_IMAGING_STUDY_REF = re.compile(r"(?:^|/)ImagingStudy/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


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


@dataclass
class ReportBatch:
    """What a reader got out of its input.

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


def is_dicom_uid(value: str) -> bool:
    """Return True when ``value`` is a syntactically valid DICOM UID (digits and dots, <= 64 chars)."""
    return len(value) <= 64 and _UID.match(value) is not None


# --------------------------------------------------------------------------------------------- text


def _clean_text(text: str | bytes, source: str, max_chars: int) -> str:
    """Decode, normalise line ends, strip and check a report text.

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
    clean = _clean_text(text, source, max_chars)
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
    if text_column not in table.columns:
        raise ReportParseError(path, f"missing report text column {text_column!r}")
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


# --------------------------------------------------------------------------------------------- FHIR


class _NarrativeText(HTMLParser):
    """Collects the text of an XHTML narrative, one line per block element."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _strip_xhtml(div: str) -> str:
    """Return the visible text of an XHTML fragment, one line per block, blank lines removed."""
    parser = _NarrativeText()
    parser.feed(div)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _validation_reason(exc: ValueError | TypeError, kind: str) -> str:
    """A short reason from a validation error: the first two failing fields, no input values."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)
        shown = []
        for err in errors[:2]:
            loc = ".".join(str(p) for p in err["loc"]) or "<resource>"
            msg = " ".join(str(err["msg"]).split())
            shown.append(f"{loc}: {msg[:120]}")
        more = f" (+{len(errors) - 2} more)" if len(errors) > 2 else ""
        return f"invalid {kind}: {'; '.join(shown)}{more}"
    return f"invalid {kind}: {type(exc).__name__}"


@dataclass(frozen=True)
class _Item:
    """One raw resource of a FHIR input, with where it came from."""

    source: str
    resource: dict[str, Any]
    full_url: str | None = None


def _uid_from_identifier(system: str | None, value: str | None) -> str | None:
    """``urn:dicom:uid`` + ``urn:oid:<uid>`` (or a bare UID) -> the UID; anything else -> None."""
    if system != DICOM_UID_SYSTEM or not value:
        return None
    uid = value.strip().removeprefix("urn:oid:")
    return uid if is_dicom_uid(uid) else None


def _imaging_study_uids(items: list[_Item | Rejection]) -> tuple[dict[str, str], dict[str, Rejection]]:
    """Validate the ImagingStudy resources.

    Returns:
        Their references (``ImagingStudy/<id>``, Bundle fullUrl) mapped to StudyInstanceUIDs, and a
        rejection per invalid ImagingStudy keyed by its source.
    """
    uids: dict[str, str] = {}
    invalid: dict[str, Rejection] = {}
    for item in items:
        if isinstance(item, Rejection) or item.resource.get("resourceType") != "ImagingStudy":
            continue
        try:
            study = ImagingStudy.model_validate(item.resource)
        except (ValueError, TypeError) as exc:
            invalid[item.source] = Rejection(item.source, _validation_reason(exc, "ImagingStudy"))
            continue
        uid = next(
            (u for i in study.identifier or [] if (u := _uid_from_identifier(i.system, i.value)) is not None), None
        )
        if uid is None:
            logger.debug("%s: ImagingStudy without a urn:dicom:uid identifier", item.source)
            continue
        if study.id:
            uids[f"ImagingStudy/{study.id}"] = uid
        if item.full_url:
            uids[item.full_url] = uid
    return uids, invalid


def _fhir_text(report: DiagnosticReport) -> str | None:
    """The report text: text/plain presentedForm, else conclusion, else the stripped narrative."""
    for form in report.presentedForm or []:
        media_type, _, params = (form.contentType or "").partition(";")
        if media_type.strip().lower() != "text/plain" or not form.data:
            continue
        charset = re.search(r"charset\s*=\s*\"?([A-Za-z0-9_\-]+)", params)
        encoding = charset.group(1) if charset else "utf-8"
        try:
            codec = codecs.lookup(encoding).name
            decoded = form.data.decode("utf-8-sig" if codec == "utf-8" else codec)
        except (LookupError, UnicodeDecodeError):
            logger.debug("presentedForm of DiagnosticReport %s is not decodable as %s", report.id, encoding)
            continue
        if decoded.strip():
            return decoded
    if report.conclusion and report.conclusion.strip():
        return report.conclusion
    if report.text is not None and report.text.div:
        narrative = _strip_xhtml(report.text.div)
        if narrative:
            return narrative
    return None


def _fhir_accession(report: DiagnosticReport) -> str | None:
    """The pseudonymised accession number of a DiagnosticReport, or None."""
    for ident in report.identifier or []:
        value = (ident.value or "").strip()
        if not value:
            continue
        codings = (ident.type.coding or []) if ident.type is not None else []
        if any(c.code == "ACSN" and c.system in (V2_0203_SYSTEM, None) for c in codings):
            return pseudonym(value, kind="acc")
    for ident in report.identifier or []:
        if ident.system == ACCESSION_PSEUDONYM_SYSTEM and ident.value and _ACC_PSEUDONYM.match(ident.value):
            return ident.value
    return None


def _fhir_study_uid(report: DiagnosticReport, study_uids: dict[str, str], source: str) -> str | None:
    """The StudyInstanceUID a DiagnosticReport refers to, or None."""
    for ref in report.study or []:
        if ref.identifier is not None:
            uid = _uid_from_identifier(ref.identifier.system, ref.identifier.value)
            if uid is not None:
                return uid
        if ref.reference:
            if ref.reference in study_uids:
                return study_uids[ref.reference]
            match = _IMAGING_STUDY_REF.search(ref.reference)
            if match and f"ImagingStudy/{match.group(1)}" in study_uids:
                return study_uids[f"ImagingStudy/{match.group(1)}"]
    if report.study:
        logger.debug("%s: study reference(s) could not be resolved to a StudyInstanceUID", source)
    return None


def _report_from_fhir(item: _Item, study_uids: dict[str, str], max_chars: int) -> Report | Rejection:
    """Validate one DiagnosticReport resource and turn it into a Report (or say why not)."""
    try:
        resource = DiagnosticReport.model_validate(item.resource)
    except (ValueError, TypeError) as exc:
        return Rejection(item.source, _validation_reason(exc, "DiagnosticReport"))
    if resource.status not in FHIR_STATUSES:
        return Rejection(item.source, "invalid DiagnosticReport: status is not a DiagnosticReport status code")
    if resource.status in REJECTED_STATUSES:
        return Rejection(item.source, f"report status is {resource.status}")
    raw = _fhir_text(resource)
    if raw is None:
        return Rejection(item.source, "no report text (no text/plain presentedForm, conclusion or narrative)")
    try:
        text = _clean_text(raw, item.source, max_chars)
    except ReportParseError as exc:
        return Rejection(item.source, exc.reason)
    return Report(
        text=text,
        sections=split_sections(text),
        accession_pseudonym=_fhir_accession(resource),
        study_uid=_fhir_study_uid(resource, study_uids, item.source),
        report_id=resource.id,
        status=resource.status,
        source=item.source,
    )


def _ndjson_items(raw: bytes, path: Path | str) -> list[_Item | Rejection]:
    """Split NDJSON bytes into resources; malformed lines become rejections, blank lines are skipped."""
    items: list[_Item | Rejection] = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        source = record_locator(path, "line", n)
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8-sig" if n == 1 else "utf-8"))
        except UnicodeDecodeError:
            items.append(Rejection(source, "line is not valid UTF-8"))
            continue
        except json.JSONDecodeError as exc:
            items.append(Rejection(source, f"malformed JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            items.append(Rejection(source, "malformed JSON: nested too deeply"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
            items.append(Rejection(source, "not a FHIR resource (no resourceType)"))
            continue
        items.append(_Item(source, obj))
    return items


def _bundle_items(obj: dict[str, Any], path: Path | str) -> list[_Item | Rejection]:
    """Validate a Bundle's envelope and return its entries' resources (each validated later, alone)."""
    entries = obj.get("entry") or []
    if not isinstance(entries, list):
        raise ReportParseError(path, "invalid Bundle: entry is not a list")
    try:
        Bundle.model_validate({k: v for k, v in obj.items() if k != "entry"})
    except (ValueError, TypeError) as exc:
        raise ReportParseError(path, _validation_reason(exc, "Bundle")) from None
    items: list[_Item | Rejection] = []
    for n, entry in enumerate(entries, start=1):
        source = record_locator(path, "entry", n)
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            items.append(Rejection(source, "Bundle entry holds no FHIR resource"))
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        items.append(_Item(source, resource, full_url))
    return items


def read_fhir_reports(path: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read FHIR R5 DiagnosticReports from a JSON resource, a JSON Bundle, or NDJSON.

    ``.ndjson`` / ``.jsonl`` files hold one resource per line (blank lines ignored); a ``.json`` file
    holds one DiagnosticReport or one Bundle (or, if it turns out to be NDJSON, is read as such).
    ImagingStudy resources of the same file resolve ``study`` references to StudyInstanceUIDs; other
    resource types are ignored. Every DiagnosticReport and ImagingStudy is validated with
    ``fhir.resources`` on its own, so one bad resource never stops the others.

    Args:
        path: The file.
        max_chars: Longest report text accepted.

    Returns:
        The batch. Rejections are located as ``file:line N`` (NDJSON), ``file#entry N`` (Bundle,
        1-based) or ``file``, with reasons such as ``invalid DiagnosticReport: code: Field required``,
        ``malformed JSON: ...`` or ``report status is entered-in-error``.

    Raises:
        ReportParseError: The file is missing or unreadable, a ``.json`` file is not UTF-8 or not
            JSON, or it is neither a DiagnosticReport nor a Bundle (or the Bundle envelope is invalid).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReportParseError(path, "file not found") from None
    except OSError as exc:
        raise ReportParseError(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from None
    items = _ndjson_items(raw, path) if path.suffix.lower() in (".ndjson", ".jsonl") else _json_items(raw, path)
    batch = _batch_from_items(items, max_chars, str(path))
    logger.info("%s: %d FHIR report(s), %d rejected", path, len(batch.reports), len(batch.rejected))
    return batch


def _batch_from_items(items: list[_Item | Rejection], max_chars: int, where: str) -> ReportBatch:
    """Turn parsed resources into reports and rejections, in input order."""
    study_uids, invalid_studies = _imaging_study_uids(items)
    batch = ReportBatch()
    ignored: Counter[str] = Counter()
    for item in items:  # input order, so rejections come out in file order
        if isinstance(item, Rejection):
            batch.rejected.append(item)
            continue
        kind = item.resource["resourceType"]
        if kind == "DiagnosticReport":
            outcome = _report_from_fhir(item, study_uids, max_chars)
            if isinstance(outcome, Report):
                batch.reports.append(outcome)
            else:
                batch.rejected.append(outcome)
        elif kind == "ImagingStudy":
            if item.source in invalid_studies:
                batch.rejected.append(invalid_studies[item.source])
        else:
            ignored[kind] += 1
    if ignored:
        logger.info("%s: ignored resources that are not reports: %s", where, dict(ignored))
    return batch


def _json_items(raw: bytes | str, path: Path | str, *, allow_ndjson: bool = True) -> list[_Item | Rejection]:
    """Resources of one JSON document: one DiagnosticReport, a Bundle's entries (or NDJSON lines)."""
    try:
        obj = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise ReportParseError(path, "JSON is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and allow_ndjson and isinstance(raw, bytes):  # NDJSON under a .json name
            return _ndjson_items(raw, path)
        raise ReportParseError(path, f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ReportParseError(path, "malformed JSON: nested too deeply") from None
    kind = obj.get("resourceType") if isinstance(obj, dict) else None
    if kind == "Bundle":
        return _bundle_items(obj, path)
    if kind == "DiagnosticReport":
        return [_Item(str(path), obj)]
    raise ReportParseError(path, f"expected a FHIR DiagnosticReport or Bundle, got {kind or 'no resourceType'}")


def report_from_fhir_json(text: str | bytes, *, source: str, max_chars: int = DEFAULT_MAX_CHARS) -> Report:
    """Parse one FHIR DiagnosticReport given as a JSON string (a table cell, a request body).

    A Bundle is accepted when it holds exactly one usable DiagnosticReport (its ImagingStudy
    resources resolve ``study`` references, as in :func:`read_fhir_reports`).

    Args:
        text: The JSON document.
        source: Named in errors and kept on the report.
        max_chars: Longest report text accepted.

    Returns:
        The report.

    Raises:
        ReportParseError: Not JSON, not a valid DiagnosticReport, withdrawn (entered-in-error,
            cancelled), without text, or a Bundle without exactly one usable DiagnosticReport.
    """
    batch = _batch_from_items(_json_items(text, source, allow_ndjson=False), max_chars, source)
    if len(batch.reports) == 1:
        return batch.reports[0]
    if not batch.reports and batch.rejected:
        raise ReportParseError(source, batch.rejected[0].reason)
    raise ReportParseError(source, f"expected one DiagnosticReport, found {len(batch.reports)}")


# ------------------------------------------------------------------------------------------ dispatch

_READERS = {".json": read_fhir_reports, ".ndjson": read_fhir_reports, ".jsonl": read_fhir_reports}
_SUFFIXES = (*_READERS, ".csv", ".txt")


def read_reports(path: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read reports from any supported source, chosen by extension.

    ``.json`` / ``.ndjson`` / ``.jsonl``: :func:`read_fhir_reports`; ``.csv``: :func:`read_csv_reports`
    (default columns); ``.txt``: :func:`read_text_reports`. A folder: every file with one of these
    extensions directly in it (not recursive), sorted by name; there a file that cannot be read at
    all becomes a rejection instead of an error.

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
        for child in children:
            try:
                batch.extend(read_reports(child, max_chars=max_chars))
            except ReportParseError as exc:
                batch.rejected.append(Rejection(exc.source, exc.reason))
        return batch
    if not path.exists():
        raise ReportParseError(path, "no such file or folder")
    suffix = path.suffix.lower()
    if suffix in _READERS:
        return _READERS[suffix](path, max_chars=max_chars)
    if suffix == ".csv":
        return read_csv_reports(path, max_chars=max_chars)
    if suffix == ".txt":
        return read_text_reports(path, max_chars=max_chars)
    raise ReportParseError(path, f"unsupported report file type {suffix or '(none)'!r} (use {', '.join(_SUFFIXES)})")


# -------------------------------------------------------------------------------------------- write


def report_to_fhir(
    report: Report,
    *,
    accession: str | None = None,
    study_uid: str | None = None,
    patient_reference: str | None = None,
    resource_id: str | None = None,
) -> DiagnosticReport:
    """Build a valid FHIR R5 DiagnosticReport from a report.

    The resource has LOINC code 18748-4 "Diagnostic imaging study", category RAD, the full text as a
    base64 ``text/plain`` presentedForm and, when the report has one, its IMPRESSION as ``conclusion``.
    Its status is the report's when that is a FHIR DiagnosticReport status, else ``final``.

    Args:
        report: The report.
        accession: Accession number in clear, written as an ``ACSN`` identifier. When None and the
            report has an accession pseudonym, that pseudonym is written under
            :data:`ACCESSION_PSEUDONYM_SYSTEM` so that reading the resource back gives it again.
        study_uid: StudyInstanceUID for ``study`` (an identifier reference ``urn:dicom:uid`` /
            ``urn:oid:<uid>``); default the report's own.
        patient_reference: ``subject`` reference (``Patient/<id>``), when wanted.
        resource_id: Resource id; default the report's id when that is a valid FHIR id.

    Returns:
        The validated resource.

    Raises:
        ValueError: ``accession`` or ``study_uid`` contradict the report's own, or ``study_uid`` is
            not a DICOM UID, or ``resource_id`` is not a valid FHIR id.
    """
    acc = (accession or "").strip() or None
    if acc and report.accession_pseudonym and pseudonym(acc, kind="acc") != report.accession_pseudonym:
        raise ValueError("accession number does not match the report's accession pseudonym")
    uid = study_uid or report.study_uid
    if study_uid and report.study_uid and study_uid != report.study_uid:
        raise ValueError("study_uid does not match the report's study UID")
    if uid is not None and not is_dicom_uid(uid):
        raise ValueError("study_uid is not a valid DICOM UID")
    if resource_id is not None and not _FHIR_ID.match(resource_id):
        raise ValueError("resource_id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})")
    rid = resource_id or (report.report_id if report.report_id and _FHIR_ID.match(report.report_id) else None)

    data: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": report.status if report.status in FHIR_STATUSES else "final",
        "category": [{"coding": [{"system": V2_0074_SYSTEM, "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [{"system": LOINC_SYSTEM, "code": IMAGING_REPORT_CODE, "display": IMAGING_REPORT_DISPLAY}],
            "text": IMAGING_REPORT_DISPLAY,
        },
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode(report.text.encode("utf-8")).decode("ascii")}
        ],
    }
    if rid:
        data["id"] = rid
    if acc:
        acsn = {"coding": [{"system": V2_0203_SYSTEM, "code": "ACSN", "display": "Accession ID"}]}
        data["identifier"] = [{"type": acsn, "value": acc}]
    elif report.accession_pseudonym:
        data["identifier"] = [{"system": ACCESSION_PSEUDONYM_SYSTEM, "value": report.accession_pseudonym}]
    if uid:
        study_id = {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}
        data["study"] = [{"type": "ImagingStudy", "identifier": study_id}]
    if patient_reference:
        data["subject"] = {"reference": patient_reference}
    impression = (report.sections or split_sections(report.text)).get("IMPRESSION")
    if impression:
        data["conclusion"] = impression
    return DiagnosticReport.model_validate(data)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_fhir_ndjson(resources: Iterable[Resource], path: str | Path) -> Path:
    """Write FHIR resources as NDJSON, one compact JSON resource per line.

    Args:
        resources: Validated ``fhir.resources`` resources (DiagnosticReport, ImagingStudy...).
        path: Output file (folders are created; the file is replaced atomically).

    Returns:
        The path written.
    """
    path = Path(path)
    _write_atomic(path, "".join(r.model_dump_json() + "\n" for r in resources))
    return path


def write_fhir_bundle(resources: Iterable[Resource], path: str | Path) -> Path:
    """Write FHIR resources as one ``collection`` Bundle (pretty-printed JSON).

    Args:
        resources: Validated ``fhir.resources`` resources.
        path: Output file (folders are created; the file is replaced atomically).

    Returns:
        The path written.
    """
    path = Path(path)
    bundle = Bundle(type="collection", entry=[BundleEntry(resource=r) for r in resources] or None)
    _write_atomic(path, bundle.model_dump_json(indent=2) + "\n")
    return path
