"""A study whose decoding kills the worker process is retried, then dead-lettered; the job goes on, and
the files the dead worker had retrieved for the study do not outlive the job."""

from __future__ import annotations

from pathlib import Path

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.ledger import Ledger
from tests.scoring.crashing_source import CrashingSource
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, score_job


def test_worker_crash_is_retried_then_dead_lettered(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    uids = sorted(scan_dicom_folder(small_cohort.dicom).studies)
    crash_uid = uids[5]
    left = tmp_path / "workdirs.txt"
    source = CrashingSource(small_cohort.dicom, crash_uid=crash_uid, record_workdir=str(left))
    summary = score_job(
        demo_project, small_cohort, tmp_path / "out", source=source, batch_size=4, part_size=4, max_attempts=2
    )
    results = read_results(tmp_path / "out")
    assert set(results["study_uid"]) == set(uids) - {crash_uid}  # the innocent studies in flight were rescored
    with Ledger(tmp_path / "out") as ledger:
        ref, status, attempts, part = ledger.get(crash_uid)
        [row] = [r for r in ledger.dead_letters() if r["study_uid"] == crash_uid]
    assert status == "failed" and attempts == 2 and part is None
    assert row["stage"] == "worker-crash" and "died" in row["reason"] and row["file"] == ref.locator[0]
    assert summary.scored == len(uids) - 1 and summary.failed == 1 and summary.pending == 0
    workdirs = [Path(line) for line in left.read_text().splitlines()]
    assert workdirs  # each killed with the study's files in it
    assert not any(d.exists() or d.parent.exists() for d in workdirs)
