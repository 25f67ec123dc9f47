"""Distributed (torchrun, DDP) training on CPU with gloo.

Fast tests check the pieces: the training sampler gives one process the batches of a shuffling
``DataLoader`` and N processes the slices of those same global batches; evaluation shards cover every
study once (no ``DistributedSampler`` padding); BatchNorm over two ranks' halves has the gradients of
BatchNorm over the whole batch.

Slow tests train the 48-study demo configuration of :mod:`tests.training.ddp_worker`:

* one process vs two (global batch 8 both): at a learning rate too small to move the weights
  (1e-6), every per-epoch loss and validation metric and the test probabilities agree to 1e-4 relative
  (float summation order). This isolates what data parallelism must get right: the same studies in
  each global batch with the same augmentation, batch statistics over the global batch, the loss over
  the global batch, every validation study counted once. At a real learning rate the two drift apart
  like two GPU runs do (Adam's first steps move each weight by about ``lr`` in the direction of its
  gradient's sign, and a gradient near zero can change sign with the summation order); docs/distributed.md
  gives the measured drift.
* a two-process run killed with SIGKILL after its first committed epoch and resumed reaches the
  uninterrupted two-process run's history, metrics and test probabilities at 1e-6.

Every launch gets a free port (``--standalone``) and a bounded wait (subprocess timeout; collectives
fail after ``MEDFUSION_DIST_TIMEOUT`` seconds), so a hung rendezvous fails the test instead of CI.
"""

from __future__ import annotations

import contextlib
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
from torch.utils.data import DataLoader, Dataset

from medfusion.cli import _without_nproc
from medfusion.training.distributed import (
    GlobalBatchSampler,
    ShardSampler,
    drop_last_global,
    sample_seed,
    shard_span,
)
from tests.training.ddp_worker import EPOCHS, config_for

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 420


# ------------------------------------------------------------------------------------------ pieces
class _Keys(Dataset):
    """``(epoch, study)`` -> study."""

    def __getitem__(self, key: tuple[int, int]) -> int:
        return key[1]


@pytest.mark.parametrize("n", [29, 32, 33])
def test_one_process_batches_are_a_shuffling_dataloaders(n: int) -> None:
    seed, batch = 5, 8
    plain = DataLoader(list(range(n)), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)
    ours = DataLoader(_Keys(), batch_sampler=GlobalBatchSampler(n, batch, gen), generator=gen, collate_fn=list)
    for _epoch in range(3):  # the generator's stream continues across epochs the same way
        assert [b.tolist() for b in plain] == list(ours)


def test_ranks_share_each_global_batch_between_them() -> None:
    n, batch, world = 37, 8, 3
    single = list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(1)))
    ranks = [list(GlobalBatchSampler(n, batch, torch.Generator().manual_seed(1), rank=r, world_size=world))
             for r in range(world)]  # fmt: skip
    assert all(len(r) == len(single) == 5 for r in ranks)
    for b, whole in enumerate(single):
        assert [k for r in ranks for k in r[b]] == whole  # rank order = the global batch's order
        assert max(len(r[b]) for r in ranks) - min(len(r[b]) for r in ranks) <= 1


def test_epoch_and_study_key_the_augmentation_seed() -> None:
    sampler = GlobalBatchSampler(10, 4, torch.Generator().manual_seed(0), shuffle=False)
    sampler.set_epoch(3)
    assert next(iter(sampler)) == [(3, 0), (3, 1), (3, 2), (3, 3)]
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1)
    assert len({sample_seed(0, e, i) for e in range(1, 4) for i in range(50)}) == 150


def test_evaluation_shards_cover_every_study_once() -> None:
    for n in (0, 1, 5, 10, 11):
        for world in (1, 2, 3, 4):
            seen = [i for r in range(world) for i in ShardSampler(n, r, world)]
            assert seen == list(range(n)), (n, world)  # in order: gathered rows are in study order
    assert shard_span(5, 1, 2) == (2, 5)


def test_the_trailing_global_batch_is_dropped_only_when_a_rank_would_be_empty_or_bn_alone() -> None:
    assert drop_last_global(33, 8, 1) and drop_last_global(33, 8, 2)  # remainder 1
    assert not drop_last_global(34, 8, 2) and drop_last_global(34, 8, 3)  # remainder 2: 3 ranks cannot share it
    assert not drop_last_global(32, 8, 4) and not drop_last_global(5, 8, 2)


def test_nproc_is_removed_from_the_launched_command_line() -> None:
    argv = ["-v", "train", "--nproc", "2", "-c", "x.yaml", "--nproc=3", "--set", "a=1"]
    assert _without_nproc(argv) == ["-v", "train", "-c", "x.yaml", "--set", "a=1"]


def test_the_cli_launcher_leaves_no_torchrun_log_folder_behind(tmp_path: Path) -> None:
    """``medfusion train --nproc N`` goes through :func:`launch`; torchrun's agent makes a log folder per
    run in the temporary directory and never removes it (a ``torchelastic_*`` folder per training run)."""
    tmp = tmp_path / "tmp"
    code = "from medfusion.training.distributed import launch; raise SystemExit(launch(2, ['--help']))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Usage:") == 2  # both ranks ran the CLI
    assert list(tmp.iterdir()) == []


def _spawn_two_ranks(fn: object, args: tuple, timeout: float) -> None:
    """Run ``fn(rank, *args)`` in two spawned processes; fail (after killing them) if either has not
    exited within ``timeout`` seconds: a rank that finished its work but never exits is a failure too."""
    ctx = torch.multiprocessing.start_processes(fn, args=args, nprocs=2, start_method="spawn", join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            alive = [rank for rank, p in enumerate(ctx.processes) if p.is_alive()]
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"ranks {alive} had not exited after {timeout} s")


@pytest.mark.slow  # two spawned interpreters importing torch: 5-30 s
@pytest.mark.timeout(300)
def test_batchnorm_over_two_gloo_ranks_has_the_whole_batch_gradients_and_the_ranks_exit(tmp_path: Path) -> None:
    """20 process groups made, used and destroyed in turn: a teardown that can deadlock (torch's gloo
    group destroyed under a live DDP reducer hung 1 run in 6) fails here with the rank that never exited."""
    from tests.training.bn_ranks import bn_problem, bn_rank

    x, y, net = bn_problem()
    ((net(x) - y) ** 2).mean().backward()
    out = tmp_path / "rank0.pt"
    _spawn_two_ranks(bn_rank, (str(tmp_path / "store"), str(out), 20), timeout=200)
    got = torch.load(out, weights_only=True)
    for g, p in zip(got["grads"], net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["running_var"], net[1].running_var, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ whole runs
def _env(tmp: Path) -> dict[str, str]:
    """The launch's environment; its temporary folder (torchrun's ``torchelastic_*`` logs) is the test's."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEDFUSION_DIST_TIMEOUT": "120",
        "TMPDIR": str(tmp),
    }  # fmt: skip


def _start(project: Path, out: Path, nproc: int, *extra: str) -> subprocess.Popen:
    worker = ["-m", "tests.training.ddp_worker", str(project), str(out), *extra]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    return subprocess.Popen(
        [sys.executable, *launcher, *worker],
        cwd=ROOT, env=_env(out.parent / "tmp"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun starts its ranks in their own sessions)."""
    pids, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in children.read_text().split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> None:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"training did not finish in {timeout} s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]


def _run(project: Path, out: Path, nproc: int, *extra: str) -> dict:
    _finish(_start(project, out, nproc, *extra))
    return json.loads((out / "result.json").read_text())


def _committed_epoch(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoints" / "state.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _assert_same(a: dict, b: dict, rel: float, abs_: float) -> None:
    assert len(a["history"]) == len(b["history"]) == EPOCHS
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b.keys() == row_a.keys()
        for key in row_a:
            assert row_b[key] == pytest.approx(row_a[key], rel=rel, abs=abs_), (row_a["epoch"], key)
    for split in ("val_metrics", "test_metrics"):
        assert a[split].keys() == b[split].keys()
        for key, value in a[split].items():
            assert b[split][key] == pytest.approx(value, rel=rel, abs=abs_), (split, key)
    np.testing.assert_allclose(b["test_probabilities"], a["test_probabilities"], rtol=rel, atol=abs_)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medfusion.training.run import demo_manifest

    path = tmp_path_factory.mktemp("ddp") / "project"
    demo_manifest(config_for(path), progress=False)  # the cohort, once, for every process
    return path


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_TIMEOUT + 60)
def test_two_gloo_processes_give_one_process_metrics(project: Path, tmp_path: Path) -> None:
    one = _run(project, tmp_path / "one", 1, "--lr", "1e-6")
    two = _run(project, tmp_path / "two", 2, "--lr", "1e-6")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_same(one, two, rel=1e-4, abs_=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(3 * RUN_TIMEOUT + 60)
def test_sigkilled_two_process_run_resumes_to_the_uninterrupted_result(project: Path, tmp_path: Path) -> None:
    straight = _run(project, tmp_path / "straight", 2)

    killed = tmp_path / "killed"
    proc = _start(project, killed, 2, "--sleep", "3")
    deadline = time.monotonic() + RUN_TIMEOUT
    while _committed_epoch(killed) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_tree(proc)  # launcher and both ranks, no chance to clean up
    output, _ = proc.communicate(timeout=60)
    stopped_at = _committed_epoch(killed)
    assert 1 <= stopped_at < EPOCHS, output[-3000:]
    assert not (killed / "result.json").exists() and not (killed / "model").exists()

    resumed = _run(project, killed, 2, "--resume")
    assert resumed["best_epoch"] == straight["best_epoch"]
    _assert_same(straight, resumed, rel=1e-6, abs_=1e-6)
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["best.safetensors"]
