"""Read FHIR R5 DiagnosticReports (JSON resource, Bundle, NDJSON, Bulk Data ``$export``) into reports.

Readers return a :class:`~medfusion.ingest.records.ReportBatch`: the reports that could be used and a
:class:`~medfusion.ingest.records.Rejection` for each resource that could not, so that one bad resource
never stops the others. Every DiagnosticReport and ImagingStudy is validated with ``fhir.resources``
on its own. A file that cannot be read at all raises :class:`~medfusion.errors.ReportParseError`.
Accession numbers are pseudonymised as soon as they are read.

Conventions:

* text: ``presentedForm`` (``text/plain``, base64 ``data``) first, else ``conclusion``, else the
  narrative ``text.div`` with its XHTML tags stripped;
* accession number: the ``identifier`` whose type has coding ``ACSN``
  (``http://terminology.hl7.org/CodeSystem/v2-0203``). Reports written by
  :func:`medfusion.fhir.write.report_to_fhir` for which only the pseudonym is known carry it under
  :data:`~medfusion.fhir.codes.ACCESSION_PSEUDONYM_SYSTEM` instead;
* StudyInstanceUID: ``study[].identifier`` with system ``urn:dicom:uid`` and value
  ``urn:oid:<uid>``, or ``study[].reference`` (``ImagingStudy/<id>`` or a Bundle ``fullUrl``) resolved
  through an ImagingStudy of the same input (Bundle, NDJSON file, the files of a Bulk Data export or
  of a folder: :func:`read_fhir_files`) carrying such an identifier.

Imports: ``fhir.resources``, pydantic, :mod:`medfusion.fhir.codes`, :mod:`medfusion.ingest.records`,
:mod:`medfusion.ingest.reports.text`, :mod:`medfusion.ingest.reports.sections`, :mod:`medfusion.errors`,
:mod:`medfusion.privacy`.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from fhir.resources.bundle import Bundle
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy
from pydantic import ValidationError

from medfusion.errors import ReportParseError
from medfusion.fhir.codes import (
    ACCESSION_PSEUDONYM_SYSTEM,
    DICOM_UID_SYSTEM,
    FHIR_STATUSES,
    REJECTED_STATUSES,
    V2_0203_SYSTEM,
)
from medfusion.ingest.records import Rejection, Report, ReportBatch, is_dicom_uid, record_locator
from medfusion.ingest.reports.sections import split_sections
from medfusion.ingest.reports.text import DEFAULT_MAX_CHARS, clean_report_text
from medfusion.privacy import pseudonym

logger = logging.getLogger(__name__)

#: File suffixes read as FHIR (JSON resource or Bundle; NDJSON).
FHIR_SUFFIXES = (".json", ".ndjson", ".jsonl")

_ACC_PSEUDONYM = re.compile(r"^acc-[0-9a-f]{16}$")
_IMAGING_STUDY_REF = re.compile(r"(?:^|/)ImagingStudy/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


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
        text = clean_report_text(raw, item.source, max_chars)
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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ReportParseError(path, "file not found") from None
    except IsADirectoryError:
        raise ReportParseError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise ReportParseError(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from None


def _file_items(path: Path) -> list[_Item | Rejection]:
    """The resources of one FHIR file (NDJSON, JSON resource or Bundle; a Bulk Data manifest: its files)."""
    raw = _read_bytes(path)
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        return _ndjson_items(raw, path)
    return _json_items(raw, path, allow_manifest=True)


def read_fhir_reports(path: str | Path, *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read FHIR R5 DiagnosticReports from a JSON resource, a JSON Bundle, NDJSON or a Bulk Data export.

    ``.ndjson`` / ``.jsonl`` files hold one resource per line (blank lines ignored); a ``.json`` file
    holds one DiagnosticReport or one Bundle (or, if it turns out to be NDJSON, is read as such), or
    is the manifest of a FHIR Bulk Data ``$export`` (:func:`is_bulk_manifest`), whose
    DiagnosticReport and ImagingStudy files are read together. ImagingStudy resources of the same
    input resolve ``study`` references to StudyInstanceUIDs; other resource types are ignored. Every
    DiagnosticReport and ImagingStudy is validated with ``fhir.resources`` on its own, so one bad
    resource never stops the others.

    Args:
        path: The file.
        max_chars: Longest report text accepted.

    Returns:
        The batch. Rejections are located as ``file:line N`` (NDJSON), ``file#entry N`` (Bundle,
        1-based) or ``file``, with reasons such as ``invalid DiagnosticReport: code: Field required``,
        ``malformed JSON: ...`` or ``report status is entered-in-error``.

    Raises:
        ReportParseError: The file is missing or unreadable, a ``.json`` file is not UTF-8 or not
            JSON, or it is neither a DiagnosticReport nor a Bundle nor a Bulk Data manifest (or the
            Bundle envelope or the manifest is invalid).
    """
    path = Path(path)
    batch = _batch_from_items(_file_items(path), max_chars, str(path))
    logger.info("%s: %d FHIR report(s), %d rejected", path, len(batch.reports), len(batch.rejected))
    return batch


def read_fhir_files(paths: list[Path], *, max_chars: int = DEFAULT_MAX_CHARS) -> ReportBatch:
    """Read several FHIR files as one input: ``study`` references resolve across all of them.

    This is how an export spread over files is read (DiagnosticReports in one NDJSON, their
    ImagingStudies in another). A Bulk Data manifest among them brings its own files; a file both
    listed by a manifest and given directly is read once. A file that cannot be read at all becomes
    a rejection; the others are read.

    Args:
        paths: FHIR files (see :func:`read_fhir_reports`).
        max_chars: Longest report text accepted.

    Returns:
        The batch, rejections in file order.
    """
    items: list[_Item | Rejection] = []
    listed: set[Path] = set()
    per_file: dict[Path, list[_Item | Rejection]] = {}
    for path in paths:  # manifests first: the files they list are then skipped below
        if path.suffix.lower() == ".json" and (manifest := _manifest_or_none(path)) is not None:
            try:
                per_file[path] = _bulk_items(manifest, path)
            except ReportParseError as exc:
                per_file[path] = [Rejection(exc.source, exc.reason)]
            listed |= {f.resolve() for f, _ in _bulk_outputs(manifest, path)[0]}
    for path in paths:
        if path in per_file or path.resolve() in listed:
            continue
        try:
            per_file[path] = _file_items(path)
        except ReportParseError as exc:
            per_file[path] = [Rejection(exc.source, exc.reason)]
    for path in paths:
        items += per_file.get(path, [])
    where = f"{len(paths)} FHIR file(s)"
    batch = _batch_from_items(items, max_chars, where)
    logger.info("%s: %d FHIR report(s), %d rejected", where, len(batch.reports), len(batch.rejected))
    return batch


# ------------------------------------------------------------------------------ FHIR Bulk Data export

#: Resource types of a Bulk Data export that reports are built from.
_BULK_TYPES = frozenset({"DiagnosticReport", "ImagingStudy"})


def is_bulk_manifest(obj: object) -> bool:
    """Whether a JSON document is a FHIR Bulk Data ``$export`` manifest (the complete-status body).

    Such a manifest has ``transactionTime``, ``request`` and an ``output`` list of
    ``{"type": <resource type>, "url": <file>}`` (FHIR Bulk Data Access IG, "Response - Complete
    Status").
    """
    return (
        isinstance(obj, dict)
        and "resourceType" not in obj
        and isinstance(obj.get("output"), list)
        and "transactionTime" in obj
    )


def _manifest_or_none(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(_read_bytes(path).decode("utf-8-sig"))
    except (ReportParseError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return obj if is_bulk_manifest(obj) else None


def _output_file(url: str, folder: Path) -> Path | None:
    """The local file of a manifest ``url``: a ``file:`` URL or relative path inside the manifest's
    folder, or, for an ``http(s)`` URL (the export as downloaded), its last path segment there."""
    try:
        parsed = urlparse(url)
    except ValueError:  # e.g. an unbalanced IPv6 host
        return None
    if "\x00" in unquote(url):
        return None
    if parsed.scheme in ("http", "https"):
        name = unquote(PurePosixPath(parsed.path).name)
        candidate = folder / name if name else None
    elif parsed.scheme == "file":
        candidate = Path(unquote(parsed.path))
    elif parsed.scheme == "":
        candidate = folder / unquote(url)
    else:
        return None
    if candidate is None:
        return None
    candidate = candidate.resolve()
    return candidate if candidate.is_relative_to(folder.resolve()) else None


def _bulk_outputs(manifest: dict[str, Any], path: Path) -> tuple[list[tuple[Path, str]], list[Rejection]]:
    """The manifest's DiagnosticReport / ImagingStudy files, and a rejection per unusable entry."""
    files: list[tuple[Path, str]] = []
    rejected: list[Rejection] = []
    for n, entry in enumerate(manifest["output"], start=1):
        source = f"{path}#output {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"]:
            rejected.append(Rejection(source, "Bulk Data output entry has no url"))
            continue
        kind = entry.get("type")
        if kind not in _BULK_TYPES:
            continue
        file = _output_file(entry["url"], path.parent)
        if file is None:
            rejected.append(Rejection(source, "Bulk Data output url is not a file in the manifest's folder"))
            continue
        files.append((file, kind))
    return files, rejected


def _bulk_items(manifest: dict[str, Any], path: Path) -> list[_Item | Rejection]:
    """Resources of the DiagnosticReport and ImagingStudy files a Bulk Data manifest lists.

    Each NDJSON line must be of the type its file is listed under (the specification's rule), else
    it is rejected. A listed file that is missing is a rejection naming it; the export's own error
    files (``error``, OperationOutcomes) are counted in the log.
    """
    files, items_rejected = _bulk_outputs(manifest, path)
    items: list[_Item | Rejection] = list(items_rejected)
    for file, kind in files:
        try:
            raw = _read_bytes(file)
        except ReportParseError as exc:
            items.append(Rejection(f"{path} -> {file.name}", f"Bulk Data output file: {exc.reason}"))
            continue
        for item in _ndjson_items(raw, file):
            if isinstance(item, _Item) and item.resource.get("resourceType") != kind:
                item = Rejection(item.source, f"a {item.resource['resourceType']} in the {kind} file of the export")
            items.append(item)
    other = Counter(
        e.get("type") for e in manifest["output"] if isinstance(e, dict) and e.get("type") not in _BULK_TYPES
    )
    errors = manifest.get("error")
    n_errors = len(errors) if isinstance(errors, list) else 0
    logger.info(
        "%s: Bulk Data export: %d report/study file(s) read, other types ignored %s, %d error file(s) listed",
        path,
        len(files),
        dict(other),
        n_errors,
    )
    return items


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


def _json_items(
    raw: bytes | str, path: Path | str, *, allow_ndjson: bool = True, allow_manifest: bool = False
) -> list[_Item | Rejection]:
    """Resources of one JSON document: one DiagnosticReport, a Bundle's entries (or NDJSON lines), or
    (``allow_manifest``) the files of a Bulk Data manifest."""
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
    if allow_manifest and is_bulk_manifest(obj):
        return _bulk_items(obj, Path(path))
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
