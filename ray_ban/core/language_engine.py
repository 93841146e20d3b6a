"""One language-model generation in pure PyTorch: ``engine.Generation``'s interface over token streams.

Truncated BPTT over contiguous columns with the hidden state carried across chunks (and detached),
a frozen teacher that carries its own state, the losses of ``ray_ban.core.losses`` applied per token,
gradient-norm clipping, and the paper's PTB schedule: the lr is multiplied by ``plateau_factor``
whenever validation perplexity stops improving. The chain can drive either engine unchanged.
Precision follows ``recipe.precision`` as in ``engine.Generation``: the teacher always in fp32.
"""

from __future__ import annotations

import math
import time
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from ray_ban.config.recipe import Recipe, lr_factor
from ray_ban.core.engine import EpochReport, GenerationBase, NonFiniteLoss
from ray_ban.core.metrics import TokenMetrics
from ray_ban.data.text import BPTTLoader, TextSplits

# Validation and test run over this many contiguous columns, each with the state carried over the
# whole column (PyTorch word_language_model's eval batch size). Every rank evaluates the whole
# split: it is cheap next to training, and the columns need not divide among the workers.
EVAL_COLUMNS = 10


def _detach(hidden):
    return tuple(h.detach() for h in hidden)


class LanguageGeneration(GenerationBase):
    """Trains one language model for one generation, optionally distilled per token from a frozen ``teacher``."""

    def __init__(
        self,
        student: nn.Module,
        data: TextSplits,
        recipe: Recipe,
        *,
        loss: str = "label",
        loss_params: Optional[dict] = None,
        teacher: Optional[nn.Module] = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        for role, model in (("student", student), ("teacher", teacher)):
            if model is None:
                continue
            if not getattr(model, "is_language_model", False):
                raise ValueError(f"the {role} is not a language model: use lstm-{{layers}}x{{units}} or cnn-lstm-{{layers}}x{{units}} with text data")
            if getattr(model, "vocab_size", data.num_classes) != data.num_classes:
                raise ValueError(f"the {role} predicts {model.vocab_size} words but {data.name} has a vocabulary of {data.num_classes}")
        self._setup(student, teacher, recipe, loss, loss_params, device, seed, compile)
        self.vocab_size = data.num_classes

        self.train_loader = BPTTLoader(data.train, recipe.batch_size, recipe.bptt, device=self.device,
                                       rank=self.rank, world_size=self.world_size)
        self.val_loader = BPTTLoader(data.valid, EVAL_COLUMNS, recipe.bptt, device=self.device)
        self.test_loader = BPTTLoader(data.test, EVAL_COLUMNS, recipe.bptt, device=self.device)

        self.optimizer = self._optimizer()
        self.total_steps = recipe.epochs * len(self.train_loader)
        self.step = 0
        self.plateau_scale = 1.0
        self.epoch = 0
        self.best_test_error = float("inf")
        self.best_val_perplexity = float("inf")
        self._test_tokens: Optional[dict[str, torch.Tensor]] = None

    @property
    def lr(self) -> float:
        """The rate of the next optimiser step: recipe lr x per-step schedule x plateau decays so far."""
        return self.recipe.lr * lr_factor(self.recipe, self.step, self.total_steps) * self.plateau_scale

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume after the current epoch, the plateau state included."""
        return {
            "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "plateau_scale": self.plateau_scale,
            "best_val_perplexity": self.best_val_perplexity,
            "best_test_error": self.best_test_error,
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.plateau_scale = state["plateau_scale"]
        self.best_val_perplexity = state["best_val_perplexity"]
        self.best_test_error = state["best_test_error"]
        self._test_tokens = None

    # -- training -----------------------------------------------------------------------------
    def run(self) -> Iterator[EpochReport]:
        """Train the remaining epochs, yielding each epoch's report; ``test_predictions()`` gives the last model's."""
        while self.epoch < self.recipe.epochs:
            yield self.train_epoch()

    def _train_epoch(self) -> EpochReport:
        started = time.perf_counter()
        lr = self.lr  # the rate this epoch starts with
        torch.manual_seed(self.seed * 100_003 + self.epoch)  # dropout and DKPP draws, per epoch
        self.train_model.train()
        columns = self.train_loader.data.shape[0]
        hidden = self.student.init_hidden(columns, self.device)
        teacher_hidden = self.teacher.init_hidden(columns, self.device) if self.teacher else None
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for inputs, targets in self.train_loader:
            hidden = _detach(hidden)
            teacher_logits = None
            if self.teacher is not None:  # fp32, outside autocast
                with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                    teacher_out, teacher_hidden = self.teacher(inputs, teacher_hidden)
                teacher_logits = teacher_out.reshape(-1, self.vocab_size).float().clone()  # a normal tensor for autograd
            with self.precision.autocast():
                logits, hidden = self.train_model(inputs, hidden)
            loss = self.loss_fn(logits.reshape(-1, self.vocab_size), teacher_logits, targets.reshape(-1), **self.loss_params)
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.recipe.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the fp16-scaled one
                nn.utils.clip_grad_norm_(self.student.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            loss_sum += loss.detach() * targets.numel()
            seen += targets.numel()
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)])
        if self.world_size > 1:
            dist.all_reduce(totals)
        train_loss = (totals[0] / totals[1]).item()
        self.epoch += 1
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"training loss is {train_loss} at epoch {self.epoch}")
        train_seconds = time.perf_counter() - started

        val = self.evaluate(self.student, self.val_loader).result()
        test_metrics = self.evaluate(self.student, self.test_loader, self.teacher, keep_tokens=True)
        test = test_metrics.result()
        self._test_tokens = test_metrics.tokens()
        self.best_test_error = min(self.best_test_error, test["error"])
        if self.recipe.schedule == "plateau" and not val["perplexity"] < self.best_val_perplexity - self.recipe.plateau_threshold:
            self.plateau_scale *= self.recipe.plateau_factor
        self.best_val_perplexity = min(self.best_val_perplexity, val["perplexity"])
        return EpochReport(
            epoch=self.epoch, train_loss=train_loss, lr=lr,
            test_error=test["error"], test_loss=test["loss"], agreement=test["agreement"], kl=test["kl"],
            ece=test["ece"], val_error=val["error"], val_loss=val["loss"], best_test_error=self.best_test_error,
            seconds=time.perf_counter() - started, images_per_s=float(totals[1]) / train_seconds,
            test_perplexity=test["perplexity"], val_perplexity=val["perplexity"],
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: BPTTLoader, teacher: Optional[nn.Module] = None,
                 keep_tokens: bool = False) -> TokenMetrics:
        """Streaming metrics of ``model`` over a whole split, state carried over each column; with ``teacher``, agreement and KL."""
        was_training = model.training
        model.eval()
        metrics = TokenMetrics(self.device, keep_tokens=keep_tokens)
        columns = loader.data.shape[0]
        hidden = model.init_hidden(columns, self.device)
        teacher_hidden = teacher.init_hidden(columns, self.device) if teacher is not None else None
        with self.precision.math():
            for inputs, targets in loader:
                with self.precision.autocast():
                    logits, hidden = model(inputs, hidden)
                teacher_logits = None
                if teacher is not None:  # the teacher in fp32, as it teaches
                    teacher_logits, teacher_hidden = teacher(inputs, teacher_hidden)
                metrics.update(logits, targets, teacher_logits)
        model.train(was_training)
        return metrics

    def test_predictions(self) -> dict[str, torch.Tensor]:
        """The last evaluated model's per-token test predictions on the CPU, in stream order.

        ``target_logprob`` float32 (N,) is log p(target), ``argmax`` int32 (N,) the top token,
        ``label`` int64 (N,) the target: an ensemble's perplexity is
        exp(-mean(log(mean_k exp(target_logprob_k)))), exactly (``metrics.ensemble_target_logprob``).
        """
        if self._test_tokens is None:  # resumed after the last epoch: evaluate once
            self._test_tokens = self.evaluate(self.student, self.test_loader, keep_tokens=True).tokens()
        return {
            "target_logprob": self._test_tokens["target_logprob"].float().cpu(),
            "argmax": self._test_tokens["argmax"].int().cpu(),
            "label": self._test_tokens["label"].long().cpu(),
        }
