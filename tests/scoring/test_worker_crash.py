"""A study whose decoding kills the worker process is retried, then dead-lettered; the job goes on."""

from __future__ import annotations

from pathlib import Path

import torch

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.job import ScoreOptions, run_score
from medfusion.scoring.ledger import Ledger
from tests.scoring.crashing_source import CrashingSource
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort


def test_worker_crash_is_retried_then_dead_lettered(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    uids = sorted(scan_dicom_folder(small_cohort.dicom).studies)
    crash_uid = uids[5]
    source = CrashingSource(small_cohort.dicom, crash_uid=crash_uid)
    options = ScoreOptions(
        source=source,
        reports=small_cohort.reports,
        model=demo_project.model_uri,
        out_dir=tmp_path / "out",
        tracking_uri=demo_project.tracking_uri,
        workers=2,
        batch_size=4,
        part_size=4,
        max_attempts=2,
    )
    summary = run_score(options)
    results = read_results(tmp_path / "out")
    assert set(results["study_uid"]) == set(uids) - {crash_uid}  # the innocent studies in flight were rescored
    with Ledger(tmp_path / "out") as ledger:
        ref, status, attempts, part = ledger.get(crash_uid)
        [row] = [r for r in ledger.dead_letters() if r["study_uid"] == crash_uid]
    assert status == "failed" and attempts == 2 and part is None
    assert row["stage"] == "worker-crash" and "died" in row["reason"] and row["file"] == ref.locator[0]
    assert summary.scored == len(uids) - 1 and summary.failed == 1 and summary.pending == 0
