"""The training recipe of one generation as typed data, and its learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and augmentation of one generation. Defaults are the paper's CIFAR recipe.

    ``batch_size`` is the global batch: with W data-parallel workers each takes batch_size / W.
    ``lr_milestones`` are fractions of ``epochs`` (0.3/0.6/0.8 of 200 = epochs 60/120/160), so a
    shortened schedule keeps the paper's shape.

    Language models (``LanguageGeneration``) also read ``bptt`` (steps unrolled), ``grad_clip``
    (max gradient norm, 0 = off) and, with ``schedule: plateau``, multiply the lr by
    ``plateau_factor`` after every epoch whose validation perplexity did not improve on the best so
    far by more than ``plateau_threshold`` (absolute perplexity).

    ``precision``: ``auto`` (bf16 on CUDA, fp32 on CPU: the fast default), ``bf16`` / ``fp16`` (the
    student under autocast; fp16 with a gradient scaler), ``tf32`` (fp32 with TF32 tensor-core math on
    CUDA; plain fp32 on CPU) or ``fp32`` (IEEE fp32 throughout, TF32 off: what the paper trained with).
    Under every setting the frozen teacher runs outside autocast, so its logits, the soft targets
    and the losses are fp32 (``ray_ban.core.precision``). ``crop_padding_mode``: ``reflect`` (Wide-ResNet's
    augmentation, which the paper follows) or ``zeros``. ``sync_batchnorm``: with more than one
    data-parallel worker, BatchNorm statistics are those of the global batch (true) or of each
    worker's shard (false); one worker has nothing to synchronise.

    ``schedule: onecycle`` rises linearly from 0 to ``lr`` over the first 20% of the steps (or
    ``warmup_fraction``) and falls linearly to 0; ``onecycle-cosine`` is torch's ``OneCycleLR`` with its
    defaults, what the bare CIFAR anchor trains with: cosine from lr/25 up to ``lr`` and down to
    lr/25e4, and momentum cycled from ``momentum`` + 0.05 down to ``momentum`` - 0.05 at the peak and back.
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    lr_milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    lr_decay: float = 0.2
    warmup_fraction: float = 0.0
    normalize: bool = True
    crop_padding: int = 4
    crop_padding_mode: str = "reflect"
    flip: bool = True
    eval_batch_size: int = 1000
    plateau_factor: float = 0.25
    plateau_threshold: float = 0.0
    bptt: int = 35
    grad_clip: float = 0.0
    precision: str = "auto"
    sync_batchnorm: bool = True

    SCHEDULES = ("multistep", "onecycle", "onecycle-cosine", "cosine", "constant", "plateau")
    PRECISIONS = ("auto", "bf16", "fp16", "tf32", "fp32")
    PADDING_MODES = ("reflect", "zeros")

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.eval_batch_size < 1:
            problems.append(f"eval_batch_size must be a positive integer, got {self.eval_batch_size}")
        if self.lr <= 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}: use e.g. 0.9, or 0 for plain SGD")
        if self.nesterov and self.momentum == 0:
            problems.append("nesterov needs momentum > 0 (got momentum 0): set nesterov: false for plain SGD, "
                            "or a momentum such as 0.9")
        if self.schedule == "onecycle-cosine" and not 0.05 <= self.momentum <= 0.94:
            problems.append(f"schedule onecycle-cosine cycles momentum by +-0.05 around momentum, which must be in "
                            f"[0.05, 0.94], got {self.momentum}: use e.g. 0.9")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in self.SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(self.SCHEDULES)}, got '{self.schedule}'")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            problems.append(f"lr_milestones are fractions of the epochs in (0, 1), got {list(self.lr_milestones)}")
        elif any(a >= b for a, b in zip(self.lr_milestones, self.lr_milestones[1:])):
            problems.append(f"lr_milestones must increase, got {list(self.lr_milestones)}: sort them, e.g. [0.3, 0.6, 0.8]")
        if not 0 < self.lr_decay <= 1:
            problems.append(f"lr_decay must be in (0, 1] (the factor at each milestone), got {self.lr_decay}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1) (a fraction of all steps), got {self.warmup_fraction}")
        if self.crop_padding < 0:
            problems.append(f"crop_padding must be >= 0 pixels (0 = no crop), got {self.crop_padding}")
        if self.crop_padding_mode not in self.PADDING_MODES:
            problems.append(f"crop_padding_mode must be one of {', '.join(self.PADDING_MODES)}, got '{self.crop_padding_mode}'")
        if self.precision not in self.PRECISIONS:
            problems.append(f"precision must be one of {', '.join(self.PRECISIONS)}, got '{self.precision}'")
        if not 0 < self.plateau_factor <= 1:
            problems.append(f"plateau_factor must be in (0, 1], got {self.plateau_factor}")
        if self.plateau_threshold < 0:
            problems.append(f"plateau_threshold must be >= 0, got {self.plateau_threshold}")
        if self.bptt < 1:
            problems.append(f"bptt must be a positive integer, got {self.bptt}")
        if self.grad_clip < 0:
            problems.append(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Recipe":
        """Build from plain data, typed by ``schema.RecipeValues``: unknown keys and wrong types are refused
        (ints stay ints, bools stay bools), so that typos cannot pass silently."""
        from pydantic import ValidationError

        from ray_ban.config.schema import RecipeValues, first_problem

        try:
            given = RecipeValues.model_validate(dict(values)).model_dump(exclude_unset=True)
        except ValidationError as error:
            key, problem, fix = first_problem(error, RecipeValues)
            if problem == "unknown key":
                raise ValueError(f"unknown recipe key {key}; {fix}") from None
            raise ValueError(f"recipe key {key} {problem}; {fix}") from None
        return cls(**given)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lr_milestones"] = list(self.lr_milestones)
        return data

    def replace(self, **changes: Any) -> "Recipe":
        return Recipe.from_dict({**self.to_dict(), **changes})


def precision_on(name: str, device_type: str) -> str:
    """What a recipe's ``precision`` runs as on a device type (``cuda`` or ``cpu``): ``auto`` is bf16 on
    CUDA and fp32 elsewhere, ``tf32`` is fp32 off CUDA. Torch-free, so a Tune trial (which never imports
    torch) can name a model's precision; ``precision.resolve`` builds on it."""
    if name == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if name == "tf32" and device_type != "cuda":
        return "fp32"
    return name


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimiser steps out of ``total_steps``."""
    progress = step / max(1, total_steps)
    if recipe.warmup_fraction > 0 and progress < recipe.warmup_fraction:
        return progress / recipe.warmup_fraction
    if recipe.schedule == "multistep":
        return recipe.lr_decay ** sum(progress >= m for m in recipe.lr_milestones)
    if recipe.schedule == "onecycle":  # linear up for the first 20%, linear down to zero after
        peak = max(recipe.warmup_fraction, 0.2)
        return progress / peak if progress < peak else max(0.0, (1 - progress) / (1 - peak))
    if recipe.schedule == "onecycle-cosine":  # torch's OneCycleLR: div_factor 25, final_div_factor 1e4
        return onecycle_cosine_factor(step, total_steps, onecycle_peak(recipe))
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0  # constant; plateau: the language engine scales the rate itself after each epoch


def onecycle_peak(recipe: Recipe) -> float:
    """Fraction of the steps at which a one-cycle schedule peaks: ``warmup_fraction``, at least 0.2."""
    return max(recipe.warmup_fraction, 0.2)


def onecycle_cosine_factor(step: int, total_steps: int, peak: float) -> float:
    """OneCycleLR's lr curve (defaults) as a multiple of the peak lr after ``step`` of ``total_steps``."""
    start, end = 1 / 25, 1 / 25e4
    top, last = float(peak * total_steps) - 1, max(1, total_steps - 1)
    if step <= top:
        return end_cos(start, 1.0, step / top if top > 0 else 1.0)
    return end_cos(1.0, end, min(1.0, (step - top) / max(1e-9, last - top)))


def end_cos(a: float, b: float, t: float) -> float:
    """Cosine interpolation from a (t=0) to b (t=1)."""
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t))
