"""A training process killed with SIGKILL after its first checkpoint resumes to the same result.

Three processes train the same small configuration: one straight through, one killed (SIGKILL,
no chance to clean up) once its first epoch is committed, and one resuming the killed run. On CPU
the resumed run reaches the same final epoch with the same history, best epoch, metrics and test
probabilities as the uninterrupted run (random states continue exactly), so they are compared at
1e-6.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.resume_worker import EPOCHS, config_for

ROOT = Path(__file__).resolve().parents[2]


def _worker(project: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.training.resume_worker", str(project), str(out), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 400) -> None:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]


def _committed_epoch(out: Path) -> int:
    state = out / "checkpoints" / "state.json"
    try:
        return int(json.loads(state.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkilled_training_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    from medfusion.training.run import demo_manifest

    project = tmp_path / "project"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        demo_manifest(config_for(project), progress=False)  # the cohort, once, for all three processes
    finally:
        torch.set_num_threads(before)

    straight = tmp_path / "straight"
    _finish(_worker(project, straight))

    killed = tmp_path / "killed"
    proc = _worker(project, killed, "--sleep", "3")
    deadline = time.monotonic() + 400
    while _committed_epoch(killed) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = _committed_epoch(killed)
    assert 1 <= stopped_at < EPOCHS
    assert not (killed / "result.json").exists() and not (killed / "model").exists()

    _finish(_worker(project, killed, "--resume"))
    a = json.loads((straight / "result.json").read_text())
    b = json.loads((killed / "result.json").read_text())
    assert len(b["history"]) == len(a["history"]) == EPOCHS
    assert b["best_epoch"] == a["best_epoch"]
    for row_a, row_b in zip(a["history"], b["history"]):
        assert row_b.keys() == row_a.keys()
        for key in row_a:
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-6, abs=1e-6), (row_a["epoch"], key)
    for split in ("val_metrics", "test_metrics"):
        for key, value in a[split].items():
            assert b[split][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (split, key)
    np.testing.assert_allclose(b["test_probabilities"], a["test_probabilities"], rtol=1e-6, atol=1e-7)
    checkpoints = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert checkpoints == ["best.safetensors"]  # a finished run keeps only its best weights


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    """A checkpoint written under one configuration is not continued under another."""
    from medfusion.errors import MedfusionError
    from medfusion.training.checkpoint import EpochCheckpoints, ResumeState

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    parts = dict(model=model, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                 scaler=torch.amp.GradScaler("cpu", enabled=False), dropout_rng=torch.Generator(), loaders={})  # fmt: skip
    cfg = config_for(tmp_path)
    EpochCheckpoints(tmp_path, cfg, **parts).commit(ResumeState(epoch=1, best_score=0.5, best_epoch=1), improved=True)
    assert EpochCheckpoints(tmp_path, cfg, **parts).restore().epoch == 1
    other = config_for(tmp_path).model_copy(update={"name": "other"})
    with pytest.raises(MedfusionError, match="another configuration"):
        EpochCheckpoints(tmp_path, other, **parts).restore()
