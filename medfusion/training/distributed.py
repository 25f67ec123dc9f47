"""Data-parallel training across processes: process group, sharding samplers, gathering, rank-0-only work.

``medfusion train --nproc N`` (or ``torchrun … -m medfusion.cli train …``) starts N processes; each
runs :func:`medfusion.training.engine.train` on its share of every batch, wrapped in
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU). What this module guarantees:

* **Same global batch as one process.** :class:`GlobalBatchSampler` draws the permutation exactly as a
  one-process shuffling ``DataLoader`` would (from the loader's own generator) and gives rank ``r`` the
  ``r``-th contiguous slice of each global batch of ``training.batch_size`` studies. With the loss
  normalised by the global number of known targets (:func:`global_count`) and batch statistics
  synchronised across ranks (:mod:`medfusion.training.sync_norm`), a step on N processes is the step of
  one process, up to floating-point summation order.
* **Same augmentation as one process.** Training samples are indexed ``(epoch, study)`` and the
  dataset seeds each study's random transforms from that key (:func:`sample_seed`), so the draws do not
  depend on which process or worker reads the study.
* **Metrics over every study once.** Validation and test are split into contiguous, unpadded shards
  (:class:`ShardSampler`: no ``DistributedSampler`` padding, so no study is counted twice) and the
  predictions are gathered in study order (:func:`gather_rows`) before any metric is computed; every rank
  then holds the same metrics and takes the same early-stopping decision.
* **Rank 0 alone writes.** Checkpoints, the model folder and MLflow are rank 0's (:attr:`Dist.is_main`);
  the others wait at a barrier where rank 0's files must exist first (:func:`main_first`).

The process group is made from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …) by
:func:`init_from_env`; without it (a plain ``medfusion train``) nothing here changes the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import Sampler

from medfusion.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds a collective (rendezvous, barrier, gather) may wait for the other ranks before failing.
TIMEOUT_ENV = "MEDFUSION_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Dist:
    """This process's place in the run.

    Attributes:
        rank: Global rank (0 on a single process).
        world_size: Number of processes (1 on a single process).
        local_rank: Rank on this node (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether more than one process trains (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs to MLflow (rank 0)."""
        return self.rank == 0


def current() -> Dist:
    """The running process group's view (a single-process :class:`Dist` when there is none)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return Dist()
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> Dist:
    """Join the process group torchrun's environment describes; a no-op for a single process.

    The backend is NCCL when this process trains on CUDA (``device`` ``auto`` or ``cuda*`` with a GPU),
    else gloo. Each collective waits at most ``$MEDFUSION_DIST_TIMEOUT`` seconds (default 600), so a
    rank that died cannot leave the others hanging for ever.

    Raises:
        ConfigError: More CUDA processes on this node than GPUs.
    """
    if not launched() or (tdist.is_available() and tdist.is_initialized()):
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "start at most one process per GPU (--nproc)"
            )
        torch.cuda.set_device(local_rank)
    timeout = dt.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    tdist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    info = current()
    log.info("rank %d of %d joined the process group (%s)", info.rank, info.world_size, tdist.get_backend())
    return info


def device_for(configured: str, info: Dist) -> str:
    """The ``training.device`` of this rank: ``cuda:<local_rank>`` for CUDA runs of several processes."""
    if info.active and torch.cuda.is_available() and configured in ("auto", "cuda"):
        return f"cuda:{info.local_rank}"
    return configured


def _comm_device() -> torch.device:
    """Where a tensor for a collective must live: the current GPU under NCCL, else the CPU."""
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    """Leave the process group (end of a distributed run; no-op otherwise).

    Call it only once every ``DistributedDataParallel`` wrapper is out of reach (after
    :func:`medfusion.training.engine.train` has returned, or with the frames of a failure's traceback
    cleared). In torch 2.13 a wrapper freed *after* the group was destroyed drops the group's last
    reference from its reducer: ``ProcessGroupGloo``'s destructor then joins its worker threads while
    holding the GIL, and a worker still releasing a finished all-reduce (whose captured thread-local state
    holds a Python object) waits for the GIL: a deadlock, and the rank never exits (measured: 5 of 30
    two-rank runs). Unreachable wrappers kept by reference cycles are collected here first.
    """
    if tdist.is_available() and tdist.is_initialized():
        gc.collect()
        tdist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op on a single process)."""
    if current().active:
        tdist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (which may then read what rank 0 wrote)."""
    info = current()
    if info.active and not info.is_main:
        tdist.barrier()
    try:
        yield
    finally:
        if info.active and info.is_main:
            tdist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not current().active:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects)."""
    info = current()
    if not info.active:
        return [obj]
    out: list[Any] = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Concatenate each rank's rows in rank order (the shards of :class:`ShardSampler` are contiguous).

    Args:
        array: (n_r, ...) this rank's rows (may be empty).

    Returns:
        (sum n_r, ...) every rank's rows, in study order.
    """
    parts = [a for a in all_gather(np.asarray(array)) if a.shape[0] > 0]
    return np.concatenate(parts) if parts else np.asarray(array)


def global_count(local: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a per-rank count (the local count on a single process).

    A rank's loss ``sum / global_count`` averaged by DDP over ranks is the global ``sum / count``.
    """
    if not current().active:
        return local
    total = local.detach().double().clone()
    tdist.all_reduce(total)
    return (total / current().world_size).to(local.dtype)


def mean_over_ranks(value: float) -> float:
    """The mean of a float over ranks."""
    info = current()
    if not info.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t)
    return float(t.item() / info.world_size)


def shard_span(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(lo, hi)``: rank ``rank``'s contiguous slice of ``size`` items (sizes differ by at most one)."""
    return rank * size // world_size, (rank + 1) * size // world_size


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random-transform seed of study ``index`` in ``epoch`` (32-bit, stable across processes)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's slice of each global training batch, as ``(epoch, study index)`` keys.

    The order is a one-process shuffling ``DataLoader``'s (``torch.randperm`` twice per epoch from
    ``generator``, as ``RandomSampler`` draws), so N processes see the same global batches as one.

    Args:
        n: Studies in the split.
        batch_size: Global batch size (``training.batch_size``).
        generator: The DataLoader's generator (the same object: it also draws the workers' base seed).
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the trailing global batch (see :func:`drop_last_global`).
        shuffle: Shuffle (training); False: study order.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        *,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        shuffle: bool = True,
    ) -> None:
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size, self.drop_last, self.shuffle = rank, world_size, drop_last, shuffle
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """The epoch (1-based) the next iteration belongs to (part of each sample's augmentation seed)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).tolist()
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's empty remainder draw
        else:
            order = list(range(self.n))
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            lo, hi = shard_span(len(batch), self.rank, self.world_size)
            yield [(self.epoch, i) for i in batch[lo:hi]]


def drop_last_global(n: int, batch_size: int, world_size: int) -> bool:
    """Whether the trailing global batch is dropped: it would hold one study (BatchNorm cannot
    normalise one), or fewer studies than processes (a rank would get none).

    Every study is still seen over the epochs, since the order is shuffled each epoch.
    """
    remainder = n % batch_size
    if batch_size <= 1 or n <= batch_size:
        return False
    return remainder == 1 or 0 < remainder < world_size


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous, unpadded share of ``range(n)`` (evaluation: every study once)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.lo, self.hi = shard_span(n, rank, world_size)

    def __len__(self) -> int:
        return self.hi - self.lo

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.lo, self.hi))


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m medfusion.cli <argv>`` in ``nproc`` processes on this node (torchrun, standalone).

    The rendezvous is local (``--standalone``: a free port is picked), so several runs can share a machine.

    Args:
        nproc: Processes (one per GPU on CUDA).
        argv: The CLI arguments after ``medfusion`` (``--nproc`` removed).

    Returns:
        The launcher's exit status (non-zero when any rank failed).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun's agent makes a log folder per run (``torchelastic_*`` in the temporary directory when
    # not told where) and never removes it; this one goes when the run ends.
    with tempfile.TemporaryDirectory(prefix="medfusion-torchrun-") as log_dir:
        args = get_args_parser().parse_args(
            ["--standalone", f"--nproc-per-node={nproc}", "--log-dir", log_dir, "--module", "medfusion.cli", *argv]
        )
        try:
            run(args)
        except ChildFailedError as exc:  # torchrun has printed the failing rank's traceback
            log.error("distributed training failed: %s", ", ".join(f"rank {r}" for r in sorted(exc.failures)))
            return 1
    return 0
