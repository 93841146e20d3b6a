"""BatchNorm over the global data-parallel batch: torch's SyncBatchNorm on GPUs, an all-reduce one on CPUs.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo), yet ray-ban's CPU chains run DDP over gloo.
``AllReduceBatchNorm`` computes the same statistics there with two autograd-aware all-reduces (the
sum, then the squared deviations), so W workers normalise, and back-propagate, exactly as one
process over their concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose backward sums the gradients over the ranks (each rank's loss depends
    on every rank's inputs through the sum). ``torch.distributed.nn.functional.all_reduce`` does the
    same but is deprecated for a replacement without autograd."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are the whole process group's batch (any backend, any rank count)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local_count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        totals = _AllReduceSum.apply(torch.cat([x.sum(dims), local_count]))
        count = totals[-1].detach()
        mean = totals[:-1] / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (count / (count - 1)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` with every BatchNorm synchronised over the process group (in place where possible).

    CUDA: ``torch.nn.SyncBatchNorm`` (fused kernels); other devices: ``AllReduceBatchNorm``. The
    parameter and buffer names stay the same, so state dicts load into the unconverted model."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_all_reduce(model)


def _convert_all_reduce(module: nn.Module) -> nn.Module:
    """As ``SyncBatchNorm.convert_sync_batchnorm``: the new modules share the old ones' parameters and buffers."""
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        converted = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                       module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, _convert_all_reduce(child))
    return converted
