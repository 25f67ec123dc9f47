"""Pseudonymisation of identifiers that must never leave the process in clear.

Patient names, IDs, birth dates and accession numbers are never written to logs, MLflow or exports.
Where a join key is needed (report <-> study linkage by accession number), both sides are hashed
with :func:`pseudonym` and compared as hashes. The salt is the site's own, decided in one place for
every process (:func:`medfusion.salt.resolve_salt`); the public demo salt only for the synthetic demo.

A second line of defence for logs: readers :func:`remember_phi` the identifiers they see, and
:func:`install_log_redaction` rewrites every log record of the process with :func:`redact`, so an
identifier quoted by an error message or a third-party library becomes ``[PHI]``.

No DICOM dataset leaves the process: outputs are result rows, FHIR resources and review exports keyed
by StudyInstanceUID and these pseudonyms, and instances retrieved from a PACS live in a scratch folder
deleted after each study. What protects outputs is therefore the pseudonyms, the redaction and
``tests/test_phi_scan.py``, which scans every output of a full demo run for the cohort's identifiers.
"""

from __future__ import annotations

import hashlib
import logging
import re

from medfusion.salt import resolve_salt


def pseudonym(value: str, *, kind: str = "id") -> str:
    """Return a stable, non-reversible pseudonym for an identifier.

    Args:
        value: The identifier in clear (accession number, patient ID, ...). Leading/trailing
            whitespace is ignored.
        kind: A namespace so that equal strings of different kinds do not collide.

    Returns:
        ``"<kind>-<16 hex chars>"``, keyed by the salt of :func:`resolve_salt`.

    Raises:
        SiteSaltError: No usable salt (see :func:`resolve_salt`).
    """
    digest = hashlib.sha256(f"{resolve_salt()}\x00{kind}\x00{value.strip()}".encode()).hexdigest()
    return f"{kind}-{digest[:16]}"


# ------------------------------------------------------------------------------ log redaction

#: Replaces a known identifier in a log message.
REDACTED = "[PHI]"
#: Bound on remembered identifiers (oldest forgotten first); a cohort of 100k studies fits.
MAX_REMEMBERED = 200_000
#: Shortest identifier remembered (shorter strings would redact ordinary words and numbers).
MIN_LENGTH = 4
#: Shortest part of a multi-part value (a person name's family or given name) remembered.
MIN_PART_LENGTH = 3

_known: dict[str, None] = {}  # insertion-ordered set of lower-cased identifiers and name parts
_TOKEN = re.compile(r"[^\s'\"()\[\]{}<>,;:=/\\|]+")  # maximal runs a value could be part of


def remember_phi(*values: object) -> None:
    """Remember identifiers read from inputs so that :func:`redact` (and the log filter) hide them.

    Person names (``FAMILY^GIVEN``) are remembered whole and by component. Call this wherever a
    reader sees an identifier in clear (PatientID, AccessionNumber, ...), even when it only keeps
    the pseudonym: a later error message or third-party log line may still quote the value.

    Args:
        *values: Identifiers; None, blanks and strings shorter than :data:`MIN_LENGTH` are ignored.
    """
    for value in values:
        if value is None:
            continue
        text = str(value).strip().lower()
        parts = {p.strip() for p in text.replace("^", " ").split()} - {text}
        for item, shortest in ((text, MIN_LENGTH), *((p, MIN_PART_LENGTH) for p in parts)):
            if len(item) >= shortest:
                _known.pop(item, None)
                _known[item] = None
    while len(_known) > MAX_REMEMBERED:
        del _known[next(iter(_known))]


def forget_phi() -> None:
    """Forget every remembered identifier (tests; long-lived services between cohorts)."""
    _known.clear()


def redact(text: str) -> str:
    """``text`` with every remembered identifier replaced by :data:`REDACTED`.

    Matching is case-insensitive on whole tokens and on ``^``/``_``/``-``/``.`` separated parts of
    tokens (``DOE^JOHN``, ``MF123_scan.dcm``), so an identifier inside a path or a DICOM name is caught.
    """
    if not _known or not text:
        return text

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        low = token.lower()
        if low in _known or low.strip(".") in _known:
            return REDACTED
        parts = re.split(r"([\^_.\-])", token)
        if len(parts) > 1 and any(p.lower() in _known for p in parts[::2]):
            return "".join(REDACTED if i % 2 == 0 and p.lower() in _known else p for i, p in enumerate(parts))
        return token

    return _TOKEN.sub(replace, text)  # display forms ("JOHN DOE") are caught part by part


class PhiRedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message with :func:`redact` (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if not _known:
        return
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)


_installed = False


def install_log_redaction() -> None:
    """Redact remembered identifiers in **every** log record of the process, whatever its handler.

    Wraps the log record factory (so records are clean before any handler, formatter, MLflow or
    third-party library sees them). Idempotent; call it once at start-up (the CLI does).
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
