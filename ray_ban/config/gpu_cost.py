"""What one model costs on one GPU: seconds per image from a measured throughput table, FLOPs-scaled where
the table has no row, and a model's seconds from them. Pure arithmetic on plain data (no torch: FLOPs
come in as a function, ``models.flops.count_flops``); ``gpu_plan`` builds a sweep's plan on it.

The table (``ray_ban/config/throughput.json``, written on a GPU by ``benchmarks/throughput_table.py``)
holds per GPU, precision and architecture images/s of a label-only training step, of a distillation
step (with a teacher of the same architecture) and of evaluation. An architecture missing from it is
priced by its FLOPs per image (forward and backward) at the FLOPs/s the nearest measured architecture
reached (same family first, by name: ``family``, then the nearest in FLOPs).

One model's seconds on one GPU::

    epochs x (train images x (student step + teacher forward) + (test + validation images) x evaluation)
    + test images x teacher evaluation (its test logits, once)

Packing (``--gpus-per-worker 1/n``) puts n chains on a GPU: each runs n / S(n) times slower, where S(n)
is the measured aggregate speed-up of n processes on one GPU (1 where the table has none: no gain
assumed); ``--workers w`` divides a model's time by w (ideal data parallelism).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

TABLE_PATH = Path(str(resources.files("ray_ban.config") / "throughput.json"))  # package data
STAND_IN = {"tf32": "fp32", "fp16": "bf16"}  # precisions the table may lack, priced at the nearest it has


@dataclass(frozen=True)
class Cost:
    """Seconds per image of one architecture on one GPU."""

    train: float  # a label-only training step
    teacher: float  # its forward as the frozen teacher inside a distillation step
    evaluate: float  # its forward in evaluation
    source: str  # "measured", or "FLOPs x <architecture>"


@dataclass(frozen=True)
class Flops:
    """FLOPs per image (a multiply-add counts two)."""

    forward: float
    train: float  # forward + backward


def load_table(path: Path = TABLE_PATH) -> dict:
    """The throughput table (the shipped one by default)."""
    return json.loads(Path(path).read_text())


def device_entry(table: dict, device: Optional[str] = None) -> tuple[str, dict]:
    """(GPU name, its entry): ``device`` if the table has it, else the table's first GPU."""
    devices = table["devices"]
    name = device if device in devices else next(iter(devices))
    return name, devices[name]


def measured_cost(rates: dict) -> Cost:
    """A table row (label, distill, forward images/s; distill and forward optional) as seconds per image.

    The teacher's share of a distillation step is 1/distill - 1/label; without a measured evaluation
    pass, evaluation is priced as that forward."""
    train = 1.0 / rates["label"]
    forward = 1.0 / rates["forward"] if rates.get("forward") else None
    teacher = max(0.0, 1.0 / rates["distill"] - train) if rates.get("distill") else (forward or train / 3)
    return Cost(train, teacher, forward if forward is not None else teacher, "measured")


def scaled_cost(reference: Cost, reference_flops: Flops, flops: Flops, reference_name: str) -> Cost:
    """An unmeasured architecture's cost: the reference's seconds per FLOP times its own FLOPs."""
    step, forward = flops.train / reference_flops.train, flops.forward / reference_flops.forward
    return Cost(reference.train * step, reference.teacher * forward, reference.evaluate * forward,
                f"FLOPs x {reference_name}")


def model_seconds(student: Cost, teacher: Optional[Cost], epochs: int, train_images: int, eval_images: int,
                  test_images: int) -> float:
    """One model's seconds on one GPU (the module docstring's formula)."""
    step = student.train + (teacher.teacher if teacher else 0.0)
    once = test_images * teacher.evaluate if teacher else 0.0
    return epochs * (train_images * step + eval_images * student.evaluate) + once


def per_gpu(gpus_per_worker: float) -> int:
    """Chains sharing one GPU at ``--gpus-per-worker`` (1 for whole GPUs)."""
    return max(1, math.floor(1.0 / gpus_per_worker + 1e-9)) if 0 < gpus_per_worker < 1 else 1


def packed(seconds: float, workers: int, gpus_per_worker: float, speedup: float = 1.0) -> tuple[float, float]:
    """(wall seconds, GPU-seconds) of a model that takes ``seconds`` on one whole GPU."""
    n = per_gpu(gpus_per_worker)
    wall = seconds * n / speedup / workers
    return wall, wall * workers * gpus_per_worker


def slots(gpus: float, workers: int, gpus_per_worker: float) -> int:
    """Chains that run at once on ``gpus`` GPUs (math.inf GPUs: no limit)."""
    if math.isinf(gpus):
        return 1_000_000
    return max(0, math.floor(gpus / (workers * gpus_per_worker) + 1e-9))


FAMILIES = ("densenet", "wrn", "preresnet", "lstm")


def family(architecture: str) -> str:
    """Which measured family an architecture is priced like: the family its name builds on (``densenet-90-60-
    depth2x`` is a DenseNet, ``ban-match-wrn-2-1`` a Wide-ResNet), else the name itself."""
    parts = architecture.split("-")
    return next((name for name in FAMILIES if name in parts), architecture)


class Pricer:
    """Costs per architecture from one GPU's table entry in one precision, FLOPs-scaled where unmeasured."""

    def __init__(self, entry: dict, precision: str, num_classes: int, flops: Callable[[str, int, str], Flops],
                 family_of: Callable[[str], str] = family):
        self.note = ""
        if precision not in entry["precisions"] and STAND_IN.get(precision) in entry["precisions"]:
            self.note = f"{precision} priced at the {STAND_IN[precision]} rate (the table has no {precision})"
            precision = STAND_IN[precision]
        if precision not in entry["precisions"]:
            raise ValueError(f"the throughput table has no {precision} figures; run benchmarks/throughput_table.py")
        self.precision, self.rates = precision, entry["precisions"][precision]
        self.num_classes, self.flops, self.family_of = num_classes, flops, family_of

    def cost(self, architecture: str, kwargs: Optional[dict] = None) -> Cost:
        """Seconds per image of ``architecture`` (built with ``kwargs``): measured, else FLOPs-scaled."""
        if architecture in self.rates:
            return measured_cost(self.rates[architecture])
        mine = self.flops(architecture, self.num_classes, json.dumps(kwargs or {}, sort_keys=True))
        measured = {name: self.flops(name, self.num_classes, "{}") for name in self.rates}
        same = [n for n in measured if self.family_of(n) == self.family_of(architecture)]
        reference = min(same or measured, key=lambda n: abs(math.log(measured[n].train / mine.train)))
        return scaled_cost(measured_cost(self.rates[reference]), measured[reference], mine, reference)
