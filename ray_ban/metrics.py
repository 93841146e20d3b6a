"""Pure functions of logits: error, loss, teacher agreement, KL, calibration, ensembles.

Shared by the engine (per epoch) and the results layer (ensembles from stored predictions), so a
number means the same thing wherever it is computed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def error_rate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 error in percent."""
    return 100.0 * (logits.argmax(dim=1) != labels).float().mean().item()


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy (negative log-likelihood) of the labels."""
    return F.cross_entropy(logits.float(), labels).item()


def agreement(logits: torch.Tensor, other_logits: Optional[torch.Tensor]) -> Optional[float]:
    """Percent of samples where both models predict the same class (None without a teacher)."""
    if other_logits is None:
        return None
    return 100.0 * (logits.argmax(dim=1) == other_logits.argmax(dim=1)).float().mean().item()


def teacher_kl(student_logits: torch.Tensor, teacher_logits: Optional[torch.Tensor]) -> Optional[float]:
    """Mean KL(teacher || student) in nats over the samples (None without a teacher)."""
    if teacher_logits is None:
        return None
    return F.kl_div(
        torch.log_softmax(student_logits.float(), 1),
        torch.log_softmax(teacher_logits.float(), 1),
        reduction="batchmean",
        log_target=True,
    ).item()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE in percent: confidence-vs-accuracy gap averaged over equal-width confidence bins."""
    confidence, predicted = torch.softmax(logits.float(), dim=1).max(dim=1)
    correct = (predicted == labels).float()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    counts = torch.bincount(which, minlength=bins).float()
    gap = torch.bincount(which, weights=confidence - correct, minlength=bins).abs()
    return 100.0 * (gap.sum() / counts.sum()).item()


def ensemble_logits(members: Sequence[torch.Tensor]) -> torch.Tensor:
    """Log of the averaged softmax of the members (the paper's BANE), usable as logits."""
    probs = torch.stack([torch.softmax(m.float(), dim=1) for m in members]).mean(dim=0)
    return probs.clamp_min(1e-12).log()


def summary(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: Optional[torch.Tensor] = None) -> dict:
    """Every test metric of one set of logits, as plain floats (None where there is no teacher)."""
    return {
        "error": error_rate(logits, labels),
        "loss": mean_nll(logits, labels),
        "agreement": agreement(logits, teacher_logits),
        "kl": teacher_kl(logits, teacher_logits),
        "ece": expected_calibration_error(logits, labels),
    }
