"""Warn before a review comment stores a patient identifier.

The comment box is free text and the review store keeps it for good (an append-only audit trail),
so the app checks a comment before saving it and warns when it seems to hold an identifier. The
check reports kinds only, never the matched text:

* ``patient name``: a part (family, given or middle name, two letters or more) of a name in the
  study's own DICOM header (PatientName, OtherPatientNames), as a whole word in any case;
* ``patient ID``: the header's PatientID, OtherPatientIDs or AccessionNumber as a token;
* ``ID number``: a run of five or more digits (MRNs, accession numbers, ``MF1234567``) or an ID
  keyword with a value (``MRN 123``, ``ID: A12``, ``DOB ...``, ``SSN``, ``NHS no``);
* ``date``: ``12/03/2021``, ``3-12-21``, ``2021-03-12``, ``20210312``, ``03/2021``, ``12 March 2021``,
  ``March 12``, ``Mar 2021`` (a bare year is not flagged);
* ``phone number``: ``555-123-4567``, ``(555) 123 4567``, ``555-1234``, ``+44 20 7946 0958``;
* ``email address``.

The header values are read only for the check (:func:`comment_findings`) and are neither returned,
kept, nor logged. Ordinary clinical comments ("mild cardiomegaly, agree", "3 mm nodule RUL, T11-T12")
raise nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

#: DICOM attributes whose values are the patient's names, and those that identify patient or study.
NAME_TAGS = ("PatientName", "OtherPatientNames")
ID_TAGS = ("PatientID", "OtherPatientIDs", "AccessionNumber")
#: Instances of a study whose header is read (a study has one patient); bytes per element read.
MAX_HEADERS = 3
_DEFER_SIZE = 64 * 1024

#: Shortest name part and shortest ID that count (shorter ones would match ordinary words).
MIN_NAME_PART = 2
MIN_ID = 3

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_MONTH_NOT_MAY = _MONTH.replace("|may|", "|")  # "may" is also a verb: only with a year or an ordinal
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_ID_KEYWORD = (
    r"(?:mrn|mr\s*#|medical\s+record(?:\s+(?:no|number))?|patient\s+(?:id|no|number)|pid|id|ssn"
    r"|nhs(?:\s+(?:no|number))?|accession(?:\s+(?:no|number))?|dob|d\.o\.b|date\s+of\s+birth)"
)
_YEAR = r"(?:19|20)\d{2}"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("email address", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
        ("date", r"(?<![\d.])\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})(?![\d.]?\d)"),  # 12/03/2021, 3-12-21
        ("date", rf"(?<![\d.]){_YEAR}[/.-]\d{{1,2}}[/.-]\d{{1,2}}(?!\d)"),  # 2021-03-12
        ("date", rf"(?<!\d){_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"),  # 20210312 (DICOM DA)
        ("date", rf"(?<![\d.])\d{{1,2}}[/-]{_YEAR}(?!\d)"),  # 03/2021
        ("date", rf"\b{_DAY}\s+(?:of\s+)?{_MONTH_NOT_MAY}\b\.?(?:,?\s+\d{{2,4}})?"),  # 12 March (2021)
        ("date", rf"\b{_DAY}\s+(?:of\s+)?may,?\s+\d{{2,4}}\b"),  # 12 May 2021
        ("date", rf"\b{_MONTH_NOT_MAY}\.?\s+{_DAY}\b"),  # March 12
        ("date", r"\bmay\s+\d{1,2}(?:st|nd|rd|th|,?\s+\d{4})\b"),  # May 12th, May 12, 2021
        ("date", rf"\b{_MONTH}\.?,?\s+{_YEAR}\b"),  # Mar 2021
        ("phone number", r"(?<![\w+])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]\d{4}(?!\w)"),  # 555-123-4567
        ("phone number", r"(?<![\w.-])\d{3}[\s-]\d{4}(?![\w-])"),  # 555-1234
        ("phone number", r"\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?!\w)"),  # +44 20 7946 0958
        ("ID number", r"(?<![\d.,])\d{5,}"),  # 12345, MF1234567 (not inside decimals or UIDs)
        ("ID number", rf"\b{_ID_KEYWORD}\b\.?\s*(?:no\.?|number|#|:|=)?\s*[a-z]{{0,4}}-?\d"),  # MRN 123, ID: A12
    )
)


def _words(text: str) -> list[str]:
    """Lower-cased runs of letters (names: ``O'Brien`` -> ``o``, ``brien``; ``Smith-Jones`` -> both)."""
    return re.findall(r"[^\W\d_]+", text.lower())


def name_parts(person_names: Iterable[str]) -> set[str]:
    """Lower-cased family, given and middle name parts of DICOM person names (``FAMILY^GIVEN^MIDDLE``).

    Every ``=``-separated group (alphabetic, ideographic, phonetic) counts; prefixes and suffixes
    (``Dr``, ``Jr``) do not; parts shorter than :data:`MIN_NAME_PART` are dropped.
    """
    parts: set[str] = set()
    for value in person_names:
        for group in str(value).split("="):
            for component in group.split("^")[:3]:
                parts.update(w for w in _words(component) if len(w) >= MIN_NAME_PART)
    return parts


def identifier_findings(comment: str, names: Iterable[str] = (), ids: Iterable[str] = ()) -> tuple[str, ...]:
    """The kinds of identifier a comment seems to hold (sorted; empty when none).

    Args:
        comment: The reviewer's comment.
        names: Patient name values (DICOM person names) of the study.
        ids: The study's patient and accession identifiers.

    Returns:
        Kinds from the module docstring, e.g. ``("ID number", "patient name")``; never the text.
    """
    kinds = {kind for kind, pattern in _PATTERNS if pattern.search(comment)}
    parts = name_parts(names)
    if parts and parts & set(_words(comment)):
        kinds.add("patient name")
    tokens = {t.lower() for t in re.findall(r"[\w.^/-]+", comment)}
    tokens |= {t.strip(".-/") for t in tokens}
    if any(len(i) >= MIN_ID and i.strip().lower() in tokens for i in ids):
        kinds.add("patient ID")
    return tuple(sorted(kinds))


def _header_values(paths: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """Names and IDs in the headers of up to :data:`MAX_HEADERS` of the study's files (unreadable ones skipped)."""
    import pydicom
    from pydicom.multival import MultiValue

    names: list[str] = []
    ids: list[str] = []
    for path in list(paths)[:MAX_HEADERS]:
        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=[*NAME_TAGS, *ID_TAGS], force=True, defer_size=_DEFER_SIZE
            )
            for tag, into in [*((t, names) for t in NAME_TAGS), *((t, ids) for t in ID_TAGS)]:
                value = ds.get(tag)
                values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
                into.extend(str(v) for v in values if v is not None and str(v).strip())
        except Exception:  # noqa: BLE001 - a header we cannot parse adds no names; the patterns still apply
            continue
    return names, ids


def comment_findings(comment: str, dicom_paths: Sequence[str | Path] = ()) -> tuple[str, ...]:
    """:func:`identifier_findings` of a comment against its study's own DICOM header.

    The header's names and IDs are read here for this check only (pixel data is not read) and go
    out of scope with it.

    Args:
        comment: The reviewer's comment.
        dicom_paths: The study's DICOM files (the first :data:`MAX_HEADERS` are read).
    """
    if not comment.strip():
        return ()
    names, ids = _header_values(dicom_paths)
    return identifier_findings(comment, names, ids)


def describe(findings: Sequence[str]) -> str:
    """A warning for the reviewer naming the kinds found (e.g. ``a patient name and an ID number``)."""
    articles = {kind: ("an" if kind[0].lower() in "aeiou" or kind.startswith("ID") else "a") for kind in findings}
    items = [f"{articles[k]} {k}" for k in findings]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return (
        f"This comment seems to contain {listed}. Comments are kept in the audit trail: remove patient "
        "identifiers (names, MRNs, dates, phone numbers, e-mail addresses) before saving."
    )
