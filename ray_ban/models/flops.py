"""FLOPs per image of a registered architecture, counted on the meta device: what the --dry-run plan
prices an architecture by when the throughput table has no row for it (``config.gpu_cost.Pricer``).

The count is torch's own rule (``torch.utils.flop_counter``: 2 FLOPs per multiply-add of convolutions
and matrix products; a backward pass computes a weight gradient for each, and an input gradient
wherever the input needs one), taken from forward hooks on the ``Conv2d`` and ``Linear`` modules in
one forward pass. ``FlopCounterMode`` gives the same numbers (tests/test_gpu_plan.py checks it) but
intercepts every operator of forward and backward: seconds per DenseNet, where hooks take a fraction."""

from __future__ import annotations

import functools
import json
import math

import torch
from torch import nn

from ray_ban.config.gpu_cost import Flops
from ray_ban.models import build


@functools.lru_cache(maxsize=None)
def count_flops(architecture: str, num_classes: int, kwargs_json: str = "{}") -> Flops:
    """FLOPs per image of a forward and of a forward + backward pass of ``architecture`` on 32x32 images."""
    batch = 2
    totals = {"forward": 0, "backward": 0}

    def counted(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:  # nn.Linear
            per_output = module.in_features
        flops = 2 * output.numel() * per_output
        totals["forward"] += flops
        # the weight's gradient always; the input's unless it is the images themselves
        totals["backward"] += flops * (2 if inputs[0].requires_grad else 1)

    with torch.device("meta"):
        model = build(architecture, num_classes, **json.loads(kwargs_json))
    _drop_normalization(model)  # shape-preserving and FLOP-free by the rule; its meta kernels are slow Python
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(counted)
    # outside the device context: it intercepts every torch call, which costs more than the pass itself
    model(torch.empty(batch, 3, 32, 32, device="meta"))
    forward = totals["forward"] / batch
    return Flops(forward, forward + totals["backward"] / batch)


def _drop_normalization(module: nn.Module) -> None:
    """Replace every batch-norm layer of ``module`` (a throw-away copy on the meta device) by an identity."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)):
            setattr(module, name, nn.Identity())
        else:
            _drop_normalization(child)
