"""Report <-> study linkage.

A report is linked to its study by StudyInstanceUID when it carries one, else by pseudonymised
accession number (both sides are pseudonyms; clear accession numbers never meet here). A report whose
UID is unknown but whose accession number matches is linked by accession. A report whose UID and
accession number point at different studies is refused: linking it could attach one patient's report
to another patient's images.

When two reports claim one study, the one with the more final status wins (corrected / amended /
appended > final > preliminary / modified / partial > registered / unknown / none); between equal
statuses the later one in the input wins, inputs being taken as chronological (append-only exports,
files read in name order). The loser is kept as a conflict rejection. Studies without a report are
allowed (the text modality is missing) and listed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from medfusion.ingest.records import Rejection, Report

logger = logging.getLogger(__name__)

NO_STUDY = "no study with this accession number / study UID"
NO_KEY = "report has neither a study UID nor an accession number"
KEY_MISMATCH = "study UID and accession number point to different studies"

_STATUS_RANK = {
    "corrected": 3,
    "amended": 3,
    "appended": 3,
    "final": 2,
    "preliminary": 1,
    "modified": 1,
    "partial": 1,
}


@dataclass
class LinkResult:
    """Outcome of :func:`link_reports`.

    Attributes:
        by_study: StudyInstanceUID to the report kept for it (one report may serve several studies
            that share its accession number).
        unmatched_reports: Reports that match no study (or match inconsistently).
        conflicts: Reports that lost to another report of the same study.
        studies_without_report: StudyInstanceUIDs with no report, in the order of ``studies``.
    """

    by_study: dict[str, Report] = field(default_factory=dict)
    unmatched_reports: list[Rejection] = field(default_factory=list)
    conflicts: list[Rejection] = field(default_factory=list)
    studies_without_report: list[str] = field(default_factory=list)


def _source(report: Report, index: int) -> str:
    """Where a report came from, for rejections (its input position when it has no source)."""
    return report.source or f"report {report.report_id or index}"


def _targets(report: Report, studies: Mapping[str, str | None], by_accession: dict[str, list[str]]) -> list[str] | str:
    """The study UIDs a report belongs to, or the reason it belongs to none."""
    acc = report.accession_pseudonym
    if report.study_uid and report.study_uid in studies:
        known_acc = studies[report.study_uid]
        if acc and known_acc and acc != known_acc:
            return KEY_MISMATCH
        return [report.study_uid]
    if acc and acc in by_accession:
        return by_accession[acc]
    return NO_STUDY if (report.study_uid or acc) else NO_KEY


def link_reports(studies: Mapping[str, str | None], reports: list[Report], *, summary: bool = True) -> LinkResult:
    """Attach reports to studies.

    Args:
        studies: StudyInstanceUID to the study's accession pseudonym (None when unknown).
        reports: Parsed reports, in chronological / input order.
        summary: Log the INFO summary line (counts only). Callers that link one study at a time (a
            scoring job's report lookup) pass False: one line per study would flood the log.

    Returns:
        The :class:`LinkResult`. Every report is kept in ``by_study``, or rejected in
        ``unmatched_reports`` (reason :data:`NO_STUDY`, :data:`NO_KEY` or :data:`KEY_MISMATCH`) or in
        ``conflicts`` (only a report serving several studies through a shared accession number can be
        both kept for one and a conflict for another).
    """
    by_accession: dict[str, list[str]] = {}
    for uid, acc in studies.items():
        if acc:
            by_accession.setdefault(acc, []).append(uid)
    result = LinkResult()
    kept_index: dict[str, int] = {}
    for index, report in enumerate(reports):
        targets = _targets(report, studies, by_accession)
        if isinstance(targets, str):
            result.unmatched_reports.append(Rejection(_source(report, index), targets))
            continue
        for uid in targets:
            previous = result.by_study.get(uid)
            if previous is None:
                result.by_study[uid] = report
                kept_index[uid] = index
                continue
            previous_index = kept_index[uid]
            # Same status rank: the later report (this one) wins.
            if _STATUS_RANK.get(report.status or "", 0) >= _STATUS_RANK.get(previous.status or "", 0):
                result.by_study[uid] = report
                kept_index[uid] = index
                (winner, winner_index), (loser, loser_index) = (report, index), (previous, previous_index)
            else:
                (winner, winner_index), (loser, loser_index) = (previous, previous_index), (report, index)
            reason = (
                f"study {uid} has two reports; kept the other one "
                f"({winner.status or 'no'} status, {_source(winner, winner_index)})"
            )
            result.conflicts.append(Rejection(_source(loser, loser_index), reason))
    result.studies_without_report = [uid for uid in studies if uid not in result.by_study]
    if not summary:
        return result
    logger.info(
        "linked %d study(ies) to reports; %d unmatched report(s), %d conflict(s), %d study(ies) without report",
        len(result.by_study),
        len(result.unmatched_reports),
        len(result.conflicts),
        len(result.studies_without_report),
    )
    return result
