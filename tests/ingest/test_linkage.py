"""Report <-> study linkage."""

from __future__ import annotations

import logging

import pytest

from medfusion.ingest.linkage import KEY_MISMATCH, NO_KEY, NO_STUDY, link_reports
from medfusion.ingest.records import Report
from medfusion.privacy import pseudonym
from medfusion.scoring.sources import ReportIndex

ACC1, ACC2, ACC3 = (pseudonym(a, kind="acc") for a in ("A1", "A2", "A3"))
STUDIES = {"1.1": ACC1, "1.2": ACC2, "1.3": None, "1.4": ACC3}


def rep(rid: str, *, uid: str | None = None, acc: str | None = None, status: str | None = "final") -> Report:
    return Report(
        text=f"report {rid}",
        study_uid=uid,
        accession_pseudonym=acc,
        report_id=rid,
        status=status,
        source=f"reports.ndjson:{rid}",
    )


def test_links_by_uid_then_accession() -> None:
    result = link_reports(
        STUDIES,
        [
            rep("a", uid="1.1"),
            rep("b", acc=ACC2),
            rep("c", uid="9.9", acc=ACC3),  # unknown UID, known accession: linked by accession
            rep("d", uid="9.9"),
            rep("e", acc=pseudonym("nope", kind="acc")),
            rep("f"),
        ],
    )
    assert {uid: r.report_id for uid, r in result.by_study.items()} == {"1.1": "a", "1.2": "b", "1.4": "c"}
    assert [(r.source, r.reason) for r in result.unmatched_reports] == [
        ("reports.ndjson:d", NO_STUDY),
        ("reports.ndjson:e", NO_STUDY),
        ("reports.ndjson:f", NO_KEY),
    ]
    assert NO_STUDY == "no study with this accession number / study UID"
    assert result.conflicts == []
    assert result.studies_without_report == ["1.3"]


def test_uid_and_accession_disagreeing_is_refused() -> None:
    result = link_reports(STUDIES, [rep("x", uid="1.1", acc=ACC2)])
    assert result.by_study == {}
    assert [r.reason for r in result.unmatched_reports] == [KEY_MISMATCH]


def test_uid_match_with_unknown_study_accession_is_linked() -> None:
    result = link_reports(STUDIES, [rep("x", uid="1.3", acc=ACC1)])
    assert result.by_study["1.3"].report_id == "x"


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ("final", "preliminary", "first"),
        ("preliminary", "final", "second"),
        ("final", "amended", "second"),
        ("corrected", "final", "first"),
        ("final", "final", "second"),  # same rank: the later one
        (None, None, "second"),
        ("preliminary", None, "first"),
    ],
)
def test_conflicts_keep_the_final_most_recent(first: str | None, second: str | None, kept: str) -> None:
    reports = [rep("first", uid="1.1", status=first), rep("second", acc=ACC1, status=second)]
    result = link_reports(STUDIES, reports)
    assert result.by_study["1.1"].report_id == kept
    (conflict,) = result.conflicts
    loser = "second" if kept == "first" else "first"
    assert conflict.source == f"reports.ndjson:{loser}"
    assert "study 1.1 has two reports" in conflict.reason and f"reports.ndjson:{kept}" in conflict.reason
    # Deterministic: the same input gives the same outcome.
    assert link_reports(STUDIES, reports) == result


def test_shared_accession_links_every_study() -> None:
    studies = {"2.1": ACC1, "2.2": ACC1, "2.3": None}
    result = link_reports(studies, [rep("r", acc=ACC1)])
    assert sorted(result.by_study) == ["2.1", "2.2"]
    assert result.studies_without_report == ["2.3"]


def test_no_reports() -> None:
    result = link_reports(STUDIES, [])
    assert result.by_study == {} and result.studies_without_report == list(STUDIES)


def test_summary_line_is_logged_once_per_call_unless_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="medfusion.ingest.linkage"):
        link_reports(STUDIES, [rep("a", uid="1.1")])
        assert [r.getMessage() for r in caplog.records if r.name == "medfusion.ingest.linkage"] == [
            "linked 1 study(ies) to reports; 0 unmatched report(s), 0 conflict(s), 3 study(ies) without report"
        ]
        caplog.clear()
        quiet = link_reports(STUDIES, [rep("a", uid="1.1")], summary=False)
        assert not [r for r in caplog.records if r.name == "medfusion.ingest.linkage"]
    assert quiet.by_study["1.1"].report_id == "a"


def test_a_scoring_jobs_report_lookups_leave_the_logging_setup_alone(caplog: pytest.LogCaptureFixture) -> None:
    """The per-study lookup neither logs a line per study nor touches logger levels.

    Changing a level (as the lookup once did, twice a study, to hide the summary line) clears the
    level cache of every logger of the process, and is seen meanwhile by other threads' calls.
    """
    index = ReportIndex([rep("a", uid="1.1"), rep("b", acc=ACC2), rep("c", uid="1.3")])
    other = logging.getLogger("medfusion.test.level-cache")
    linkage = logging.getLogger("medfusion.ingest.linkage")
    with caplog.at_level(logging.INFO, logger="medfusion.ingest.linkage"):  # (sets a level: caches cleared)
        other.isEnabledFor(logging.INFO)  # fills that logger's level cache
        level = linkage.level
        found = [index.lookup(uid, acc) for uid, acc in STUDIES.items()]
        assert linkage.level == level
        assert logging.INFO in other._cache  # not cleared: no level was set anywhere
    assert [r.report_id if r else None for r in found] == ["a", "b", "c", None]
    assert not [r for r in caplog.records if r.name == "medfusion.ingest.linkage"]
