"""kill -9 at the worst moment (a part renamed into place, its ledger commit not yet done), then resume:
every study exactly once, none lost, none duplicated."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from medfusion.data.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.job import ScoreOptions, run_score
from tests.conftest import ROOT, DemoProject

from .conftest import Cohort, copy_cohort


def _state(out: Path) -> tuple[int, set[str], set[str]]:
    """(studies done, committed part names, part files on disk)."""
    on_disk = {p.stem for p in (out / "results").glob("part-*.parquet")} if (out / "results").is_dir() else set()
    if not (out / "ledger.sqlite").exists():
        return 0, set(), on_disk
    try:
        db = sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            done = db.execute("SELECT COUNT(*) FROM studies WHERE status = 'done'").fetchone()[0]
            parts = {r[0] for r in db.execute("SELECT DISTINCT part FROM studies WHERE part IS NOT NULL")}
        finally:
            db.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0, set(), on_disk
    return done, parts, on_disk


def _score_cmd(cohort: Cohort, out: Path, project: DemoProject) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medfusion.cli",
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
    ]


@pytest.mark.slow
def test_kill_9_between_rename_and_commit_then_resume(
    demo_project: DemoProject, demo_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(demo_cohort, tmp_path / "cohort", 16)
    uids = set(scan_dicom_folder(cohort.dicom).studies)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": demo_project.tracking_uri,
        "OMP_NUM_THREADS": "1",
        "MEDFUSION_SCORING_COMMIT_DELAY": "0.4",
    }
    proc = subprocess.Popen(
        _score_cmd(cohort, out, demo_project),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 150
    killed_state = None
    while time.monotonic() < deadline and proc.poll() is None:
        done, committed, on_disk = _state(out)
        if done >= 4 and on_disk - committed:  # a part is in place but not committed: kill now
            os.killpg(proc.pid, signal.SIGKILL)  # the job and its worker processes, as a scheduler would
            killed_state = (done, committed, on_disk)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert killed_state is not None, (
        f"never caught the rename-commit window (rc={proc.returncode}): {proc.stderr.read()[-2000:]!r}"
    )
    assert proc.returncode == -signal.SIGKILL
    done, committed, on_disk = _state(out)  # as the killed job left it
    orphans = on_disk - committed
    assert orphans and 4 <= done < len(uids)

    # resume (in-process: the same job, minus the interpreter start-up)
    torch.set_num_threads(1)
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
