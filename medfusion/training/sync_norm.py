"""BatchNorm statistics over the global batch, on every device.

With data parallelism each rank sees only its slice of a batch; plain BatchNorm would normalise with
the slice's statistics, so N processes would not train the model one process trains. PyTorch's
``nn.SyncBatchNorm`` fixes that on GPUs only (torch 2.13: "SyncBatchNorm expected input tensor to be on
GPU or XPU"), so :func:`synchronise_batchnorm` uses it on CUDA and :class:`AllReduceBatchNorm` elsewhere:
the per-channel sum, sum of squares and count are all-reduced with autograd
(``torch.distributed.nn.functional.all_reduce``), so forward and backward are those of one
BatchNorm over the global batch. Module names and state-dict keys are unchanged (checkpoints and saved
models load into a model with plain BatchNorm).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.distributed.nn.functional import all_reduce

# Its suggested replacement (torch.distributed._functional_collectives.all_reduce) has no autograd: the
# gradients through the batch statistics need this one, so its deprecation notice is silenced (only it).
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated")


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any spatial rank) whose training statistics are those of the batch over all ranks."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` (B, C, *spatial) with the global batch's per-channel mean and variance."""
        if not self.training or not torch.distributed.is_initialized():
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))  # (2C + 1,)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)  # biased, as BatchNorm normalises with
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                if tracked is not None:
                    tracked.add_(1)
                momentum = self.momentum
                if momentum is None:  # cumulative moving average
                    momentum = 1.0 / float(tracked) if tracked is not None else 0.0
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def synchronise_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm made global-batch: ``nn.SyncBatchNorm`` on CUDA, else
    :class:`AllReduceBatchNorm` (parameters and buffers are moved over, not copied)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        out = AllReduceBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
