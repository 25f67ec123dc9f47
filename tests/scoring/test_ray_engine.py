"""--engine ray (Ray Data on a local Ray): the same results and dead letters as the local engine, one
scorer pool (one model load per actor) for the whole job."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import engine_ray, read_results
from medfusion.scoring.ledger import Ledger
from medfusion.scoring.workdir import WORK_DIR
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, ScoredJob, copy_cohort, score_job

#: Folder where :class:`CountedScorer` leaves one file per construction (set for the Ray workers).
CONSTRUCTIONS_ENV = "MEDFUSION_TEST_SCORER_CONSTRUCTIONS"


class CountedScorer(engine_ray.ScorerActor):
    """The scorer actor, leaving a file in ``$MEDFUSION_TEST_SCORER_CONSTRUCTIONS`` per construction."""

    def __init__(self, model_dir: str, batch_size: int, device: str = "auto", amp: str = "auto") -> None:
        super().__init__(model_dir, batch_size, device, amp)
        (Path(os.environ[CONSTRUCTIONS_ENV]) / f"{os.getpid()}-{uuid.uuid4().hex}").touch()


@pytest.mark.slow
def test_ray_engine_matches_local_engine(
    demo_project: DemoProject,
    small_cohort: Cohort,
    scored_demo: ScoredJob,
    tmp_path: Path,
) -> None:
    """12 studies on Ray vs the same files (copied) scored by the local engine in ``scored_demo``."""
    pytest.importorskip("ray")
    ray_run = score_job(demo_project, small_cohort, tmp_path / "ray", engine="ray", workers=1)
    b = read_results(tmp_path / "ray")
    a = read_results(scored_demo.out).set_index("study_uid").loc[b["study_uid"]].reset_index()
    assert ray_run.scored == len(b) == 12 and ray_run.failed == 0
    assert not (tmp_path / "ray" / WORK_DIR).exists()  # the workers' folders went with the job's
    assert list(a["study_uid"]) == list(b["study_uid"])
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-6)
    decisions = [c for c in a.columns if c.startswith("decision_")]
    assert (a[decisions].to_numpy() == b[decisions].to_numpy()).all()


def _dead_letters(out: Path) -> list[tuple[str, str, str, str]]:
    with Ledger(out) as ledger:
        return sorted(
            (r["study_uid"] or "", r["file"] or "", r["reason"] or "", r["stage"] or "") for r in ledger.dead_letters()
        )


@pytest.mark.slow
def test_one_scorer_pool_per_job_and_local_parity_on_broken_inputs(
    demo_project: DemoProject,
    small_cohort: Cohort,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """12 studies in windows of 4 (3 windows, i.e. more than one old 4,096-study chunk at this scale),
    one of them truncated, plus a file that is not DICOM: the model is loaded once by the one scorer
    actor; results (1e-6) and dead-letter rows equal the local engine's on the same files."""
    pytest.importorskip("ray")
    cohort = copy_cohort(small_cohort, tmp_path / "broken")
    scan = scan_dicom_folder(cohort.dicom)
    victim_uid = sorted(scan.studies)[3]
    victim = scan.studies[victim_uid].paths[0]
    victim.write_bytes(victim.read_bytes()[:-100])  # header intact, pixel data cut short
    (cohort.dicom / "notes.dcm").write_text("not an image")
    constructions = tmp_path / "constructions"
    constructions.mkdir()
    monkeypatch.setenv(CONSTRUCTIONS_ENV, str(constructions))  # before Ray starts: its workers inherit it
    monkeypatch.setattr(engine_ray, "WINDOW", 4)
    monkeypatch.setattr(engine_ray, "ScorerActor", CountedScorer)

    ray_run = score_job(demo_project, cohort, tmp_path / "ray", engine="ray", workers=2, batch_size=4)
    local_run = score_job(demo_project, cohort, tmp_path / "local", workers=1)

    assert len(list(constructions.iterdir())) == 1  # one actor, one model load, 3 windows
    assert (ray_run.scored, ray_run.failed, ray_run.pending) == (local_run.scored, local_run.failed, 0) == (11, 1, 0)
    a = read_results(tmp_path / "local").set_index("study_uid").sort_index()
    b = read_results(tmp_path / "ray").set_index("study_uid").sort_index()
    assert list(a.index) == list(b.index) and victim_uid not in b.index
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(b[probs].to_numpy(), a[probs].to_numpy(), atol=1e-6, rtol=0)
    ray_rows, local_rows = _dead_letters(tmp_path / "ray"), _dead_letters(tmp_path / "local")
    assert ray_rows == local_rows and len(ray_rows) == 2
    assert {(uid, stage) for uid, _, _, stage in ray_rows} == {(victim_uid, "decode"), ("", "discover")}
