"""The two ranks of the BatchNorm test of :mod:`tests.training.test_distributed` (a small module: the spawned
interpreters import only torch and :mod:`medfusion.training.sync_norm`)."""

from __future__ import annotations

import datetime as dt
import os

import torch


def bn_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch import nn

    from medfusion.training.sync_norm import synchronise_batchnorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=dt.timedelta(seconds=120))
    x, y, net = bn_problem()
    model = nn.parallel.DistributedDataParallel(synchronise_batchnorm(net, torch.device("cpu")))
    lo, hi = (0, 3) if rank == 0 else (3, 8)  # unequal halves, as a global batch's slices can be
    loss = ((model(x[lo:hi]) - y[lo:hi]) ** 2).sum() / (y.numel() / 2)  # global mean, DDP averages ranks
    loss.backward()
    if rank == 0:
        torch.save({"grads": [p.grad for p in net.parameters()], "running_var": net[1].running_var}, out)
    dist.destroy_process_group()


def bn_problem():
    from torch import nn

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))  # fmt: skip
    return torch.randn(8, 1, 10, 10, generator=g) * 3 + 5, torch.randn(8, 2, generator=g), net
