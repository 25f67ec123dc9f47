"""One scoring job per output folder: a second job is refused at once, naming the first one's pid and
host; the lock goes with the process that held it, however it ends (kill -9 included)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfusion.errors import MedfusionError
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring import read_results
from medfusion.scoring.lock import LOCK_FILE, OutputLock
from tests.support.demo import ROOT, DemoProject
from tests.support.scoring import Cohort, score_job

from .cli_process import cli_command, cli_env, error_lines, run_cli

_HOLD = (
    "import sys, time\n"
    "from medfusion.scoring.lock import OutputLock\n"
    "lock = OutputLock(sys.argv[1])\n"
    "lock.acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def test_lock_is_exclusive_within_a_process_and_released_on_exit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out):
        info = json.loads((out / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(MedfusionError, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
            OutputLock(out).acquire()
    with OutputLock(out):  # released: the next job gets it
        pass


@pytest.mark.slow  # three `medfusion score` processes, one killed -9: about 35 s of CPU
def test_second_job_is_refused_at_once_and_kill_9_frees_the_folder(tmp_path: Path) -> None:
    src, no_model, out = tmp_path / "src", tmp_path / "no_model", tmp_path / "out"
    src.mkdir()
    no_model.mkdir()
    args = ["score", src, "--out", out, "--model", no_model, "--no-progress"]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = run_cli(args)
        lines = error_lines(refused)
        assert refused.returncode == 1 and len(lines) == 1, refused.stderr[-3000:]
        assert lines[0].startswith(f"error: {out}: another scoring job")
        assert f"pid {holder.pid} on host {socket.gethostname()}" in lines[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    after = run_cli(args)  # the lock died with the holder: this job gets past it (to the bad model)
    assert after.returncode == 1 and "not a medfusion model folder" in after.stderr, after.stderr[-3000:]


@pytest.mark.slow
def test_two_score_jobs_into_one_out(demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path) -> None:
    """The first job is paused (SIGSTOP) mid-run: the second is refused instead of scoring the same
    studies; the first then finishes with every study exactly once, and the folder is free again."""
    out = tmp_path / "out"
    args = ["score", small_cohort.dicom, "--reports", small_cohort.reports, "--model", demo_project.model_uri]
    args += ["--out", out, "--part-size", "4", "--workers", "1", "--batch-size", "4", "--no-progress"]
    env = {"MLFLOW_TRACKING_URI": demo_project.tracking_uri}
    first = subprocess.Popen(
        cli_command(*args), cwd=ROOT, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 600
        while not (out / "ledger.sqlite").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1][-3000:]
        first.send_signal(signal.SIGSTOP)  # still holds the folder, does nothing
        second = run_cli(args, **env)
        first.send_signal(signal.SIGCONT)
        lines = error_lines(second)
        assert second.returncode == 1 and len(lines) == 1, second.stderr[-3000:]
        assert f"pid {first.pid} on host {socket.gethostname()}" in lines[0]
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    uids = set(scan_dicom_folder(small_cohort.dicom).studies)
    results = read_results(out)
    assert set(results["study_uid"]) == uids and results["study_uid"].is_unique
    again = score_job(demo_project, small_cohort, out)  # first exited: the folder is free, nothing left to do
    assert again.scored_this_run == 0 and again.scored == len(uids)
