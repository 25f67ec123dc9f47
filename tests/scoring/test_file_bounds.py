"""Scoring jobs over inputs that used to stall a job or lose a study, with real files and processes.

* a 250 KB deflated file of a 16000² zero image (its deflate stream padded to even length, as pydicom
  pads it) hung discovery forever: now it is dead-lettered at decode and the job carries on;
* a study whose one step (a decode, a stalled read) outlasts the per-file bound is stopped and
  dead-lettered with the file and the reason, the studies interrupted with it are rescored;
* a broken copy of an instance that sorts first by path used to get the intact copy rejected and the
  study dead-lettered: now the copy that decodes is scored and the broken one recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.read import read_dicom
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.ledger import Ledger
from tests.robustness import fuzz
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, copy_cohort, score_job

from .crashing_source import HangingSource

#: Generous wall-time bound of a whole small job on a busy 2-core box (a hang never ends).
JOB_BOUND_S = 600


def _healthy(cohort: Cohort) -> list[str]:
    """Studies all of whose files decode."""
    healthy = []
    for uid, study in sorted(scan_dicom_folder(cohort.dicom).studies.items()):
        try:
            for path in study.paths:
                read_dicom(path)
        except DicomReadError:
            continue
        healthy.append(uid)
    return healthy


@pytest.mark.slow
@pytest.mark.timeout(JOB_BOUND_S + 300)
def test_a_deflated_huge_zero_image_is_dead_lettered_and_the_job_goes_on(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(small_cohort, tmp_path / "cohort", 4)
    before = scan_dicom_folder(cohort.dicom)
    healthy = _healthy(cohort)
    ds = fuzz.image_dataset(fuzz.HUGE_SIDE, fuzz.HUGE_SIDE)
    stream = fuzz.deflated_image_stream(ds, fuzz.HUGE_SIDE**2)
    huge = fuzz.write_deflated(cohort.dicom / "incoming" / "huge.dcm", ds, stream + b"\x00" * (len(stream) % 2))
    assert huge.stat().st_size < 300_000

    start = time.perf_counter()
    summary = score_job(demo_project, cohort, tmp_path / "out")
    assert time.perf_counter() - start < JOB_BOUND_S

    with Ledger(tmp_path / "out") as ledger:
        [row] = [r for r in ledger.dead_letters() if r["study_uid"] == ds.StudyInstanceUID]
        assert ledger.get(ds.StudyInstanceUID)[1] == "failed"
    assert row["file"] == str(huge) and row["stage"] == "decode"
    assert row["reason"] == "image too large: 16000x16000x1 pixels > max_pixels 64000000"
    scored = set(read_results(tmp_path / "out")["study_uid"])
    assert set(healthy) <= scored and ds.StudyInstanceUID not in scored
    assert summary.pending == 0 and summary.discovered == len(before.studies) + 1


@pytest.mark.slow
@pytest.mark.timeout(JOB_BOUND_S + 300)
def test_steps_over_the_per_file_bound_are_stopped_and_dead_lettered(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(small_cohort, tmp_path / "cohort", 6)
    healthy = _healthy(cohort)
    hang_uid = healthy[1]
    # Header reads stop before the pixel data (fast); decoding parses millions of elements after it (4x the bound).
    bound_s = 3.0
    slow = fuzz.slow_dicom_beyond(cohort.dicom / "slow" / "slow.dcm", bound_s, read_dicom, after_pixels=True)
    slow_uid = scan_dicom_folder(slow.parent).studies.popitem()[0]
    source = HangingSource(cohort.dicom, file_timeout_s=None, hang_uid=hang_uid)

    start = time.perf_counter()
    summary = score_job(
        demo_project, cohort, tmp_path / "out", source=source, batch_size=4, part_size=4, file_timeout_s=bound_s
    )
    assert time.perf_counter() - start < JOB_BOUND_S

    with Ledger(tmp_path / "out") as ledger:
        rows = {r["study_uid"]: r for r in ledger.dead_letters() if r["study_uid"]}
        hang_ref = ledger.get(hang_uid)[0]
    assert rows[hang_uid]["stage"] == "materialize" and rows[hang_uid]["file"] == hang_ref.locator[0]
    assert rows[hang_uid]["reason"].startswith("materialize exceeded 3 s on one file (stopped after ")
    assert rows[slow_uid]["stage"] == "decode" and rows[slow_uid]["file"] == str(slow)
    assert rows[slow_uid]["reason"].startswith("decode exceeded 3 s on one file (stopped after ")
    scored = set(read_results(tmp_path / "out")["study_uid"])
    assert set(healthy) - {hang_uid} <= scored  # the studies interrupted by the stops were scored again
    assert summary.pending == 0 and hang_uid not in scored and slow_uid not in scored


@pytest.mark.slow
@pytest.mark.timeout(JOB_BOUND_S + 300)
@pytest.mark.parametrize("broken_first", [True, False], ids=["broken_sorts_first", "broken_sorts_last"])
def test_the_copy_that_decodes_is_scored_and_the_broken_copy_recorded(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path, broken_first: bool
) -> None:
    cohort = copy_cohort(small_cohort, tmp_path / "cohort", 4)
    victim_uid = _healthy(cohort)[0]
    intact = scan_dicom_folder(cohort.dicom).studies[victim_uid].paths[0]
    name = ("0_" if broken_first else "zz_") + intact.name
    broken = intact.parent / name
    broken.write_bytes(intact.read_bytes()[:-500])  # a partly transferred re-send of the same instance

    summary = score_job(demo_project, cohort, tmp_path / "out")

    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get(victim_uid)[1] == "done"
        rows = [r for r in ledger.dead_letters() if r["file"] == str(broken)]
    assert victim_uid in set(read_results(tmp_path / "out")["study_uid"])
    [row] = rows
    assert row["study_uid"] == victim_uid and row["stage"] == "decode"
    assert row["reason"].startswith(f"duplicate SOPInstanceUID: kept {intact}, which decodes; this copy: truncated")
    assert summary.pending == 0
