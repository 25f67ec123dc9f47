"""kill -9 at the worst moment (a part renamed into place, its ledger commit not yet done), then resume:
every study exactly once, none lost, none duplicated. The moment is hit exactly, not by timing: the job
runs under :mod:`tests.scoring.die_after_rename`, which kills it from inside the rename."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.job import ScoreOptions, run_score
from medfusion.scoring.workdir import WORK_DIR
from tests.support.demo import ROOT, DemoProject
from tests.support.scoring import Cohort, copy_cohort

#: The part whose rename is the last thing the killed job does (its second: the first is committed).
KILLED_PART = "part-000001"


def _state(out: Path) -> tuple[int, set[str], set[str]]:
    """(studies done, committed part names, part files on disk), read from the job's files."""
    on_disk = {p.stem for p in (out / "results").glob("part-*.parquet")}
    with closing(sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5)) as db:
        done = db.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'").fetchone()[0]
        parts = {r[0] for r in db.execute("SELECT DISTINCT part FROM studies WHERE part IS NOT NULL")}
    return done, parts, on_disk


def _killed_score(cohort: Cohort, out: Path, project: DemoProject) -> subprocess.CompletedProcess[str]:
    """``medfusion score`` (4 studies a part) in a process group SIGKILLed right after renaming
    :data:`KILLED_PART` into place (see :mod:`tests.scoring.die_after_rename`)."""
    args = [
        "score",
        str(cohort.dicom),
        "--reports",
        str(cohort.reports),
        "--model",
        project.model_uri,
        "--out",
        str(out),
        "--part-size",
        "4",
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
        "--config",
        str(ROOT / "medfusion" / "configs" / "demo.yaml"),
    ]
    pythonpath = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "MLFLOW_TRACKING_URI": project.tracking_uri, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "tests.scoring.die_after_rename", KILLED_PART, *args]
    proc = subprocess.Popen(
        cmd,
        cwd=out.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # timed out: take the job's workers along
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)


@pytest.mark.slow
def test_kill_9_between_rename_and_commit_then_resume(
    demo_project: DemoProject, demo_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(demo_cohort, tmp_path / "cohort", 16)
    uids = set(scan_dicom_folder(cohort.dicom).studies)
    out = tmp_path / "out"
    killed = _killed_score(cohort, out, demo_project)
    assert killed.returncode == -signal.SIGKILL, f"rc={killed.returncode}: {killed.stderr[-2000:]!r}"
    done, committed, on_disk = _state(out)  # as the killed job left it
    orphans = on_disk - committed
    assert orphans == {KILLED_PART} and committed == {"part-000000"} and done == 4
    assert any((out / WORK_DIR).iterdir())  # the killed worker's folder: nothing removed it

    # resume (in-process: the same job, minus the interpreter start-up)
    summary = run_score(
        ScoreOptions(
            source=str(cohort.dicom),
            reports=cohort.reports,
            model=demo_project.model_uri,
            out_dir=out,
            tracking_uri=demo_project.tracking_uri,
            workers=1,
            batch_size=4,
            part_size=4,
        )
    )
    results = read_results(out)
    raw = pd.concat([pd.read_parquet(p) for p in sorted((out / "results").glob("part-*.parquet"))])
    assert raw["study_uid"].is_unique  # zero duplicates on disk, not only in read_results
    assert set(results["study_uid"]) == uids  # zero lost (this subset has no broken file)
    assert not any((out / "results" / f"{name}.parquet").exists() and name not in _state(out)[1] for name in orphans)
    assert summary.orphan_parts_deleted >= 1 and summary.scored_this_run == len(uids) - done
    assert not (out / WORK_DIR).exists()  # the resume removed what the killed run left, then its own
