"""The two ranks of the BatchNorm test of :mod:`tests.training.test_distributed` (a small module: the spawned
interpreters import only torch and :mod:`medfusion.training`'s process-group helpers)."""

from __future__ import annotations

import datetime as dt

import torch


def bn_rank(rank: int, store: str, out: str, runs: int = 1) -> None:
    """Rank ``rank`` of two: ``runs`` times, join a process group, take one DDP backward pass over its
    slice and leave the group with :func:`medfusion.training.distributed.shutdown`; rank 0 saves the
    gradients of the last run to ``out``.

    Args:
        rank: 0 or 1.
        store: A file prefix the ranks meet at (``file://`` rendezvous: no port to race other processes for).
        out: Where rank 0 saves ``{"grads": [...], "running_var": (4,)}``.
        runs: Process groups to make and destroy in turn (each teardown is a chance to deadlock).
    """
    import torch.distributed as dist

    from medfusion.training.distributed import shutdown

    for run in range(runs):
        dist.init_process_group(
            "gloo", init_method=f"file://{store}.{run}", rank=rank, world_size=2, timeout=dt.timedelta(seconds=120)
        )
        grads, running_var = _one_step(rank)  # the DDP wrapper is gone when this returns, as after a real run
        shutdown()
    if rank == 0:
        torch.save({"grads": grads, "running_var": running_var}, out)


def _one_step(rank: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    from torch import nn

    from medfusion.training.sync_norm import synchronise_batchnorm

    x, y, net = bn_problem()
    model = nn.parallel.DistributedDataParallel(synchronise_batchnorm(net, torch.device("cpu")))
    lo, hi = (0, 3) if rank == 0 else (3, 8)  # unequal halves, as a global batch's slices can be
    loss = ((model(x[lo:hi]) - y[lo:hi]) ** 2).sum() / (y.numel() / 2)  # global mean, DDP averages ranks
    loss.backward()
    return [p.grad for p in net.parameters()], net[1].running_var


def bn_problem():
    from torch import nn

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))  # fmt: skip
    return torch.randn(8, 1, 10, 10, generator=g) * 3 + 5, torch.randn(8, 2, generator=g), net
