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
    demo_manifest(config_for(project), progress=False)  # the cohort, once, for all three processes

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
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    parts = dict(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, dropout_rng=torch.Generator(), loaders={}
    )
    cfg = config_for(tmp_path)
    EpochCheckpoints(tmp_path, cfg, **parts).commit(ResumeState(epoch=1, best_score=0.5, best_epoch=1), improved=True)
    assert EpochCheckpoints(tmp_path, cfg, **parts).restore().epoch == 1
    other = config_for(tmp_path).model_copy(update={"name": "other"})
    with pytest.raises(MedfusionError, match="another configuration"):
        EpochCheckpoints(tmp_path, other, **parts).restore()


def _cli_train(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``medfusion train`` on a small demo configuration in a real process (a few seconds if it trains at all)."""
    small = ["data.demo.n_studies=40", "data.demo.image_size=32", "data.demo.broken_files=0", "data.image_size=[32,32]",
             "training.epochs=1", f"project_dir={project}"]  # fmt: skip
    command = [sys.executable, "-m", "medfusion.cli", "train", *(f"--set={s}" for s in small), *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow  # two CLI processes: torch, MONAI and MLflow imports take 20 s of CPU each
def test_cli_resume_with_nothing_to_resume_refuses_in_one_line(tmp_path: Path) -> None:
    project = tmp_path / "project"
    done = _cli_train(project, "--resume")
    assert done.returncode == 1, done.stdout[-2000:]
    assert done.stderr.strip().splitlines() == [
        (
            f"error: --resume: nothing to resume in {project / 'training'} (no run folder with an epoch checkpoint); "
            "train without --resume to start a new run"
        )
    ]
    assert not project.exists()  # refused before the cohort, the tracking store or a run folder was made

    orphan = project / "training" / "0123456789abcdef" / "checkpoints" / "state.json"  # no MLflow run of that id
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}")
    done = _cli_train(project, "--resume")
    assert done.returncode == 1, done.stdout[-2000:]
    last = done.stderr.strip().splitlines()[-1]  # after MLflow's own lines about creating its store
    assert last.startswith(f"error: --resume: {orphan.parents[1]} has a checkpoint but the tracking store has no")
    assert "Traceback" not in done.stderr and not (project / "demo_cohort").exists()


def test_resume_without_a_checkpoint_is_refused_by_every_entry_point(tmp_path: Path) -> None:
    from medfusion.errors import MedfusionError
    from medfusion.training.engine import train
    from medfusion.training.run import train_from_config
    from medfusion.workflow import train_and_register

    cfg = config_for(tmp_path / "project")
    with pytest.raises(MedfusionError, match=f"^--resume: nothing to resume in {tmp_path / 'project' / 'training'} "):
        train_and_register(cfg, resume=True)
    with pytest.raises(MedfusionError, match=f"nothing to resume in {tmp_path / 'project' / 'training'}"):
        train_from_config(cfg, resume=True, progress=False)
    empty = tmp_path / "empty_run"
    with pytest.raises(MedfusionError, match=f"{empty / 'checkpoints' / 'state.json'}: nothing to resume"):
        train_from_config(cfg, out_dir=empty, resume=True, progress=False)
    records = {"train": [{"image": [], "report": "x", "label": np.zeros(5, np.float32)}]}
    records["val"] = records["train"]
    with pytest.raises(MedfusionError, match=f"{empty / 'checkpoints' / 'state.json'}: nothing to resume"):
        train(cfg, records, empty, resume=True, progress=False)
    assert not (tmp_path / "project").exists() and not empty.exists()  # no cohort generated, no folder made
