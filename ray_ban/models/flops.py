"""FLOPs per image of a registered architecture, counted on the meta device: what the --dry-run plan
prices an architecture by when the throughput table has no row for it (``config.gpu_cost.Pricer``)."""

from __future__ import annotations

import functools
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from ray_ban.config.gpu_cost import Flops
from ray_ban.models import build


@functools.lru_cache(maxsize=None)
def count_flops(architecture: str, num_classes: int, kwargs_json: str = "{}") -> Flops:
    """FLOPs per image of a forward and of a forward + backward pass, on the meta device (no memory, no time
    on a device; a 1001-layer network takes a few seconds of Python)."""
    batch = 2
    with torch.device("meta"):
        model = build(architecture, num_classes, **json.loads(kwargs_json))
        images = torch.randn(batch, 3, 32, 32)
        with FlopCounterMode(display=False) as forward:
            logits = model(images)
        with FlopCounterMode(display=False) as backward:
            logits.float().sum().backward()
    fwd = forward.get_total_flops() / batch
    return Flops(fwd, fwd + backward.get_total_flops() / batch)
