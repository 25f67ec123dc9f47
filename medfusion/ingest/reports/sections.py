"""Radiology report sections: split a report into FINDINGS / IMPRESSION / HISTORY ... and pick some.

A heading starts a line and is either alone on it (``FINDINGS``, ``Findings:``) or followed by text on
the same line (``IMPRESSION: No acute disease.``). Only the headings of :data:`SYNONYMS` count; they
are matched case-insensitively and normalised (``CLINICAL HISTORY`` and ``INDICATION`` become
``HISTORY``, ``CONCLUSION`` becomes ``IMPRESSION``). Other ``WORD:`` lines, such as the organ
sub-headings of structured reports (``LUNGS: clear.`` under FINDINGS), stay inside the section they
are in. Text before the first heading is not part of any section (it stays in the full text).
"""

from __future__ import annotations

import logging
import re

from medfusion.ingest.records import Report

logger = logging.getLogger(__name__)

#: Section names that :func:`select_sections` accepts; ``full`` means the whole report text.
SELECTABLE = ("findings", "impression", "history", "full")

#: Known heading spellings (upper case, single spaces) -> canonical section name.
SYNONYMS: dict[str, str] = {
    "FINDINGS": "FINDINGS",
    "FINDING": "FINDINGS",
    "IMPRESSION": "IMPRESSION",
    "IMPRESSIONS": "IMPRESSION",
    "CONCLUSION": "IMPRESSION",
    "CONCLUSIONS": "IMPRESSION",
    "HISTORY": "HISTORY",
    "CLINICAL HISTORY": "HISTORY",
    "INDICATION": "HISTORY",
    "INDICATIONS": "HISTORY",
    "CLINICAL INDICATION": "HISTORY",
    "CLINICAL INFORMATION": "HISTORY",
    "REASON FOR EXAM": "HISTORY",
    "REASON FOR EXAMINATION": "HISTORY",
    "REASON FOR STUDY": "HISTORY",
    "COMPARISON": "COMPARISON",
    "COMPARISONS": "COMPARISON",
    "TECHNIQUE": "TECHNIQUE",
    "RECOMMENDATION": "RECOMMENDATION",
    "RECOMMENDATIONS": "RECOMMENDATION",
}

_KNOWN = "|".join(sorted((re.escape(k).replace(r"\ ", r"\s+") for k in SYNONYMS), key=len, reverse=True))
# A known heading, any case: alone on its line (colon optional) or followed by ':' and text.
_KNOWN_HEADING = re.compile(rf"^[ \t]*(?P<name>{_KNOWN})[ \t]*(?::[ \t]*(?P<rest>.*?)|[ \t]*)$", re.IGNORECASE)


def _match_heading(line: str) -> tuple[str, str] | None:
    """Return ``(canonical name, text after the heading)`` when ``line`` starts a section."""
    match = _KNOWN_HEADING.match(line)
    if match is None:
        return None
    name = " ".join(match.group("name").upper().split())
    return SYNONYMS[name], (match.group("rest") or "").strip()


def split_sections(text: str) -> dict[str, str]:
    """Split a report into its sections.

    Args:
        text: The full report text.

    Returns:
        Upper-case canonical section name (``FINDINGS``, ``IMPRESSION``, ``HISTORY``, ``COMPARISON``,
        ``TECHNIQUE``, ``RECOMMENDATION``) to its stripped text, in order of first appearance. A
        section that appears twice (``HISTORY`` and ``INDICATION``) has its parts joined by a
        newline; empty sections are left out. ``{}`` when the text has no headings.
    """
    parts: dict[str, list[list[str]]] = {}  # name -> one list of lines per occurrence
    current: list[str] | None = None
    for line in text.splitlines():
        heading = _match_heading(line)
        if heading is not None:
            name, rest = heading
            current = [rest] if rest else []
            parts.setdefault(name, []).append(current)
            continue
        if current is not None:
            current.append(line.rstrip())
    sections: dict[str, str] = {}
    for name, chunks in parts.items():
        texts = ["\n".join(chunk).strip() for chunk in chunks]
        joined = "\n".join(t for t in texts if t)
        if joined:
            sections[name] = joined
    return sections


def select_sections(report: Report, names: list[str]) -> str:
    """Return the text of the requested sections of a report.

    Args:
        report: The report. Its ``sections`` are used; when empty they are recomputed from its text.
        names: Section names from :data:`SELECTABLE` (``findings``, ``impression``, ``history``,
            ``full``), in the order wanted. ``full`` means the whole report text and wins over the rest.

    Returns:
        The texts of the requested sections that are present, in the order of ``names``, joined by a
        blank line; the full report text when none of them is present.

    Raises:
        ValueError: ``names`` is empty or holds a name outside :data:`SELECTABLE`.
    """
    if not names:
        raise ValueError(f"no report sections requested; choose from {', '.join(SELECTABLE)}")
    unknown = [n for n in names if n not in SELECTABLE]
    if unknown:
        raise ValueError(f"unknown report section(s) {unknown}; choose from {', '.join(SELECTABLE)}")
    if "full" in names:
        return report.text
    sections = report.sections or split_sections(report.text)
    chosen = [sections[n.upper()] for n in dict.fromkeys(names) if sections.get(n.upper())]
    if not chosen:
        logger.debug("report %s has none of the sections %s; using the full text", report.report_id, names)
        return report.text
    return "\n\n".join(chosen)
