"""The paper's training losses, by name: ERM, BAN, BAN+L, CWTM, DKPP and Hinton's KD.

Every loss has the signature ``loss(student_logits, teacher_logits, labels, **params) -> scalar``.
The teacher's logits are always detached here, so a teacher can never receive gradients even if
a caller forgets ``no_grad``; soft targets and losses are computed in fp32 whatever the logits' dtype.

Under data parallelism (an initialised process group) each rank's loss is its share of the loss of
the global batch, so that DDP's gradient average is the single-process gradient: the mean losses
are per-rank means over equal shards, and CWTM normalises its weights over the global batch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ray_ban.config.loss_names import LOSS_NAMES, LOSS_PARAMS, NEEDS_TEACHER, check_loss_params  # noqa: F401 (re-exported)

Loss = Callable[..., torch.Tensor]


def _teacher_probs(teacher_logits: Optional[torch.Tensor], name: str) -> torch.Tensor:
    if teacher_logits is None:
        raise ValueError(f"loss '{name}' needs a teacher: give the chain a teacher or use loss 'label'")
    return torch.softmax(teacher_logits.detach().float(), dim=1)


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_i p_i log q_i; its gradient w.r.t. z is (q - p) / batch."""
    return -(target_probs * torch.log_softmax(student_logits.float(), dim=1)).sum(dim=1).mean()


def label_loss(student_logits, teacher_logits, labels, **_unused) -> torch.Tensor:
    """ERM: cross-entropy with the labels; ignores the teacher."""
    return F.cross_entropy(student_logits.float(), labels)


def ban_loss(student_logits, teacher_logits, labels, **_unused) -> torch.Tensor:
    """BAN: cross-entropy to the teacher's softmax at temperature 1 (paper eq. 5)."""
    return soft_cross_entropy(student_logits, _teacher_probs(teacher_logits, "ban"))


def ban_label_loss(student_logits, teacher_logits, labels, label_weight: float = 1.0, **_unused) -> torch.Tensor:
    """BAN+L: BAN plus ``label_weight`` times the label cross-entropy."""
    return ban_loss(student_logits, teacher_logits, labels) + label_weight * label_loss(
        student_logits, teacher_logits, labels
    )


def cwtm_loss(student_logits, teacher_logits, labels, **_unused) -> torch.Tensor:
    """CWTM: label cross-entropy weighted per sample by the teacher's normalised confidence (eq. 10).

    The weights are normalised over the global batch: under DDP every rank must call this in step
    (one all-reduce of the normaliser), and the rank's term is scaled by the world size, since DDP
    averages the ranks' gradients where eq. 10 sums over the batch."""
    confidence = _teacher_probs(teacher_logits, "cwtm").max(dim=1).values
    normaliser, world_size = _global_sum(confidence.sum())
    per_sample = F.cross_entropy(student_logits.float(), labels, reduction="none")
    return world_size * (confidence * per_sample).sum() / normaliser


def _global_sum(value: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the sum of ``value`` over the process group's ranks, the world size); (value, 1) without a group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        total = value.detach().clone()
        dist.all_reduce(total)
        return total, dist.get_world_size()
    return value, 1


def permute_dark_knowledge(probs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keep each row's top probability in place and randomly permute the other n-1 entries."""
    batch, classes = probs.shape
    top = probs.argmax(dim=1, keepdim=True)

    def order_with_top_first() -> torch.Tensor:
        keys = torch.rand(batch, classes, generator=generator, device=probs.device)
        keys.scatter_(1, top, -1.0)
        return keys.argsort(dim=1)

    source, destination = order_with_top_first(), order_with_top_first()
    return torch.zeros_like(probs).scatter_(1, destination, probs.gather(1, source))


def dkpp_loss(student_logits, teacher_logits, labels, generator: Optional[torch.Generator] = None, **_unused):
    """DKPP: BAN against the teacher's distribution with all but the top entry permuted per sample."""
    permuted = permute_dark_knowledge(_teacher_probs(teacher_logits, "dkpp"), generator)
    return soft_cross_entropy(student_logits, permuted)


def kd_loss(student_logits, teacher_logits, labels, alpha: float = 0.9, temperature: float = 4.0, **_unused):
    """Hinton KD: (1-alpha) label CE + alpha T^2 KL(softmax(t/T) || softmax(z/T)), batchmean."""
    teacher_log_probs = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    student_log_probs = torch.log_softmax(student_logits.float() / temperature, dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return (1 - alpha) * label_loss(student_logits, teacher_logits, labels) + alpha * temperature**2 * kl


LOSSES: dict[str, Loss] = {
    "label": label_loss,
    "ban": ban_loss,
    "ban+l": ban_label_loss,
    "cwtm": cwtm_loss,
    "dkpp": dkpp_loss,
    "kd": kd_loss,
}

assert tuple(LOSSES) == LOSS_NAMES, "ray_ban.config.loss_names and the loss functions name the same losses"


def get_loss(name: str) -> Loss:
    """The loss called ``name``; a one-line ValueError listing the known names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}': use one of {', '.join(LOSSES)}") from None
