"""Pure functions of logits: error, loss, teacher agreement, KL, calibration, ensembles, perplexity.

Shared by the engine (per epoch) and the results layer (ensembles from stored predictions), so a
number means the same thing wherever it is computed.
"""

from __future__ import annotations

import math
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


def perplexity(mean_nll: float) -> float:
    """exp of the mean per-token negative log-likelihood (nats); inf rather than an overflow error."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


def ensemble_target_logprob(members: Sequence[torch.Tensor]) -> torch.Tensor:
    """log(mean_k p_k(target)) per token from each member's target log-probabilities (exact, no logits)."""
    stacked = torch.stack([m.double() for m in members])
    return torch.logsumexp(stacked, dim=0) - math.log(len(members))


class TokenMetrics:
    """Streaming ``summary`` over batches of (tokens, classes) logits: nothing but sums is kept.

    For language models, whose logits over a whole split would not fit in memory: ``update`` per
    evaluation batch adds device-side sums, ``result`` syncs once. Also keeps, per token, the
    target's log-probability and the argmax (small) for ``test_predictions``.
    """

    def __init__(self, device: torch.device | str, bins: int = 15, keep_tokens: bool = False):
        self.bins, self.keep_tokens = bins, keep_tokens
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.nll, self.wrong, self.agree, self.kl, self.count = (zero.clone() for _ in range(5))
        self.bin_count = torch.zeros(bins, dtype=torch.float64, device=device)
        self.bin_gap = torch.zeros(bins, dtype=torch.float64, device=device)
        self.has_teacher = False
        self.target_logprob: list[torch.Tensor] = []
        self.argmax: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: Optional[torch.Tensor] = None) -> None:
        """Add one batch: logits (..., C) for targets (...), e.g. (B, T, V) and (B, T) chunks of B streams."""
        shape = targets.shape
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        teacher_logits = None if teacher_logits is None else teacher_logits.reshape(-1, teacher_logits.shape[-1])
        log_probs = torch.log_softmax(logits.float(), dim=1)
        target_logprob = log_probs.gather(1, targets[:, None]).squeeze(1)
        confidence, predicted = log_probs.max(dim=1)
        correct = predicted == targets
        self.nll -= target_logprob.sum(dtype=torch.float64)
        self.wrong += (~correct).sum()
        self.count += targets.numel()
        which = torch.clamp((confidence.exp() * self.bins).long(), max=self.bins - 1)
        self.bin_count += torch.bincount(which, minlength=self.bins)
        self.bin_gap += torch.bincount(which, weights=(confidence.exp() - correct.float()).double(), minlength=self.bins)
        if teacher_logits is not None:
            self.has_teacher = True
            teacher_log_probs = torch.log_softmax(teacher_logits.float(), dim=1)
            self.agree += (teacher_log_probs.argmax(dim=1) == predicted).sum()
            self.kl += (teacher_log_probs.exp() * (teacher_log_probs - log_probs)).sum(dtype=torch.float64)
        if self.keep_tokens:
            self.target_logprob.append(target_logprob.reshape(shape))
            self.argmax.append(predicted.int().reshape(shape))
            self.labels.append(targets.reshape(shape))

    def tokens(self) -> dict[str, torch.Tensor]:
        """The kept per-token ``target_logprob``, ``argmax`` and ``label``, 1-D; batches of (B, T) join along T,
        so B streams come out one after the other, each in order."""
        def join(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(parts, dim=-1).reshape(-1)

        return {"target_logprob": join(self.target_logprob), "argmax": join(self.argmax), "label": join(self.labels)}

    def result(self) -> dict:
        """The same keys as ``summary`` (error, loss, agreement, kl, ece) plus perplexity, as floats."""
        count = max(1.0, self.count.item())
        loss = self.nll.item() / count
        return {
            "error": 100.0 * self.wrong.item() / count,
            "loss": loss,
            "perplexity": perplexity(loss),
            "agreement": 100.0 * self.agree.item() / count if self.has_teacher else None,
            "kl": self.kl.item() / count if self.has_teacher else None,
            "ece": 100.0 * (self.bin_gap.abs().sum() / self.bin_count.sum().clamp_min(1)).item(),
        }
