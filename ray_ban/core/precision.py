"""The numeric precision of one generation: what runs under autocast, the gradient scaler, TF32.

A recipe names one of ``auto``, ``bf16``, ``fp16``, ``tf32``, ``fp32`` (``Recipe.precision``); on a
device it resolves to what actually runs:

=========  ===========================================  =============================================
recipe     CUDA                                         CPU
=========  ===========================================  =============================================
auto       bf16                                         fp32
bf16       student under bf16 autocast, TF32 on         student under CPU bf16 autocast
fp16       student under fp16 autocast + GradScaler,    student under CPU fp16 autocast + GradScaler
           TF32 on                                      (valid in torch >= 2.4; slow, for testing)
tf32       no autocast, TF32 convolutions and matmuls   fp32 (CPUs have no TF32)
fp32       no autocast, TF32 off: IEEE fp32 throughout  fp32
=========  ===========================================  =============================================

Under every setting the frozen teacher's forward runs outside autocast, so the soft targets come
from fp32 logits (a bf16 logit near 16 is only good to 0.125), and the losses are computed in fp32.
Under ``bf16``/``fp16``/``tf32`` that fp32 forward uses TF32 tensor-core math on CUDA (IEEE-fp32
convolutions would cost several times the student's bf16 step); only ``fp32`` is IEEE everywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from ray_ban.config.recipe import precision_on


@dataclass(frozen=True)
class Precision:
    """A recipe's precision resolved on one device (``name`` is what runs: bf16, fp16, tf32 or fp32)."""

    name: str
    device_type: str

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def tf32(self) -> bool:
        """Whether fp32 convolutions and matmuls (the teacher's forward, fp32 students) may use TF32 on CUDA."""
        return self.name != "fp32"

    def autocast(self):
        """The context the student's forward and the loss run in (a no-op without autocast)."""
        dtype = self.autocast_dtype
        return torch.autocast(device_type=self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16's dynamic loss scaler; a disabled (pass-through) scaler otherwise."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    @contextlib.contextmanager
    def math(self) -> Iterator[None]:
        """TF32 on or off for CUDA fp32 math while training or evaluating, restored after (the flags
        are process-wide: another generation in the same process may want the other setting)."""
        if self.device_type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def resolve(name: str, device: torch.device | str) -> Precision:
    """The recipe's ``precision`` on ``device`` (see the module docstring's table)."""
    device_type = torch.device(device).type
    name = precision_on(name, device_type)
    if name not in ("bf16", "fp16", "tf32", "fp32"):
        raise ValueError(f"precision must be one of auto, bf16, fp16, tf32, fp32, got '{name}'")
    return Precision(name, device_type)
