"""Report section splitting and selection."""

from __future__ import annotations

import pytest

from medfusion.ingest.records import Report
from medfusion.ingest.reports.sections import select_sections, split_sections

REPORT = """EXAM: CHEST PA AND LATERAL
Clinical History: cough for two weeks.
COMPARISON: none.
Findings:
LUNGS: The lungs are clear.
PLEURA: No pleural effusion.

IMPRESSION: No acute cardiopulmonary process.
RECOMMENDATIONS: none.
"""


def test_split_sections_recognises_headings_and_synonyms() -> None:
    sections = split_sections(REPORT)
    assert sections["HISTORY"] == "cough for two weeks."
    assert sections["COMPARISON"] == "none."
    # Organ sub-headings stay inside FINDINGS; the preamble before the first heading is in no section.
    assert sections["FINDINGS"] == "LUNGS: The lungs are clear.\nPLEURA: No pleural effusion."
    assert sections["IMPRESSION"] == "No acute cardiopulmonary process."
    assert sections["RECOMMENDATION"] == "none."
    assert list(sections) == ["HISTORY", "COMPARISON", "FINDINGS", "IMPRESSION", "RECOMMENDATION"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("findings: clear lungs", {"FINDINGS": "clear lungs"}),
        ("FINDINGS\nclear lungs", {"FINDINGS": "clear lungs"}),
        ("  Impression :  normal  ", {"IMPRESSION": "normal"}),
        ("CONCLUSION: normal", {"IMPRESSION": "normal"}),
        ("Indication: fever\nHISTORY: cough", {"HISTORY": "fever\ncough"}),
        ("CLINICAL   HISTORY: fever", {"HISTORY": "fever"}),
        ("TECHNIQUE: PA view.\nFINDINGS: ok", {"TECHNIQUE": "PA view.", "FINDINGS": "ok"}),
        ("FINDINGS:\nIMPRESSION: normal", {"IMPRESSION": "normal"}),  # empty section left out
    ],
)
def test_split_sections_cases(text: str, expected: dict[str, str]) -> None:
    assert split_sections(text) == expected


@pytest.mark.parametrize(
    "text",
    ["The lungs are clear. Impression is of a normal study.", "", "No findings: lungs clear", "EXAM: CHEST\nLUNGS: ok"],
)
def test_split_sections_without_headings_is_empty(text: str) -> None:
    assert split_sections(text) == {}


def _report(text: str, sections: dict[str, str] | None = None) -> Report:
    return Report(text=text, sections=split_sections(text) if sections is None else sections)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["impression"], "No acute cardiopulmonary process."),
        (
            ["findings", "impression"],
            "LUNGS: The lungs are clear.\nPLEURA: No pleural effusion.\n\nNo acute cardiopulmonary process.",
        ),
        (["history"], "cough for two weeks."),
        (["full"], REPORT.strip()),
        (["impression", "full"], REPORT.strip()),
    ],
)
def test_select_sections(names: list[str], expected: str) -> None:
    assert select_sections(_report(REPORT.strip()), names) == expected


def test_select_sections_falls_back_to_full_text() -> None:
    plain = _report("Lungs are clear, no effusion.")
    assert select_sections(plain, ["impression"]) == "Lungs are clear, no effusion."
    partial = _report("FINDINGS: clear lungs")
    assert select_sections(partial, ["impression", "history"]) == "FINDINGS: clear lungs"


def test_select_sections_splits_when_report_has_no_sections() -> None:
    assert select_sections(_report("FINDINGS: a\nIMPRESSION: b", sections={}), ["impression"]) == "b"


@pytest.mark.parametrize("names", [[], ["conclusion"], ["FINDINGS"]])
def test_select_sections_rejects_unknown_names(names: list[str]) -> None:
    with pytest.raises(ValueError, match="section"):
        select_sections(_report("x"), names)
