"""One generation in pure PyTorch: a student trained from labels and/or a frozen teacher.

``Generation`` holds everything one generation needs (model, optimiser, schedule, loaders) and
trains it epoch by epoch, so a caller (the Ray chain, a test, a benchmark) can checkpoint between
epochs with ``state_dict()`` and resume with ``load_state_dict()``. No Ray here: data parallelism
is plain ``torch.distributed`` (DDP) when a process group is initialised, with BatchNorm over the
global batch (``recipe.sync_batchnorm``), so W workers train what one process trains on their
combined batches. Precision follows ``recipe.precision`` (``ray_ban.core.precision``): the student under
autocast or not, the frozen teacher always in fp32.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from ray_ban.core import metrics
from ray_ban.core import sync_batchnorm
from ray_ban.data import DeviceLoader, ImageSplits
from ray_ban.core.losses import NEEDS_TEACHER, check_loss_params, get_loss
from ray_ban.core.precision import resolve as resolve_precision
from ray_ban.config.recipe import Recipe, lr_factor, onecycle_peak


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: retrying would only repeat it."""


@dataclass
class EpochReport:
    """What one epoch measured. Errors, agreement and ECE are percentages; None where not defined.

    Language models report per token: ``images_per_s`` is tokens per second, losses are mean
    token NLL, and the perplexities are their exp (None for image models).
    """

    epoch: int
    train_loss: float
    lr: float
    test_error: float
    test_loss: float
    agreement: Optional[float]
    kl: Optional[float]
    ece: float
    val_error: Optional[float]
    val_loss: Optional[float]
    best_test_error: float
    seconds: float
    images_per_s: float
    test_perplexity: Optional[float] = None
    val_perplexity: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_distillation(student: nn.Module, teacher: Optional[nn.Module], loss: str, loss_params: Optional[dict]) -> None:
    """ValueError unless the loss, its parameters and the teacher make a generation (shared by both engines)."""
    check_loss_params(loss, loss_params or {})
    if loss in NEEDS_TEACHER and teacher is None:
        raise ValueError(f"loss '{loss}' needs a teacher model")
    if teacher is not None and teacher is student:
        raise ValueError("the teacher and the student are the same object: the distillation term would be zero")


class GenerationBase:
    """What both engines share: the loss, the precision, the student (DDP-wrapped over a process group,
    compiled on request), the frozen teacher, SGD over the trainable parameters, and the epoch loop."""

    def _setup(self, student: nn.Module, teacher: Optional[nn.Module], recipe: Recipe, loss: str,
               loss_params: Optional[dict], device: torch.device | str, seed: int, compile: bool,
               memory_format: torch.memory_format = torch.contiguous_format, sync_bn: bool = False) -> None:
        check_distillation(student, teacher, loss, loss_params)
        self.device = torch.device(device)
        self.rank, self.world_size = world()
        self.recipe, self.loss_name, self.seed = recipe, loss, seed
        self.loss_fn, self.loss_params = get_loss(loss), dict(loss_params or {})
        self.precision = resolve_precision(recipe.precision, self.device)
        self.scaler = self.precision.grad_scaler()
        self.student = student.to(self.device, memory_format=memory_format)
        self.teacher = teacher.to(self.device, memory_format=memory_format).eval().requires_grad_(False) if teacher else None
        if self.world_size > 1 and sync_bn:
            self.student = sync_batchnorm.convert(self.student, self.device)
        self.train_model: nn.Module = self.student
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.student, device_ids=ids)
        if compile:
            self.train_model = torch.compile(self.train_model)

    def _optimizer(self) -> torch.optim.SGD:
        """The recipe's SGD over the student's trainable parameters (a Table 5 student's frozen stem and fc stay out)."""
        recipe = self.recipe
        trainable = [p for p in self.student.parameters() if p.requires_grad]
        return torch.optim.SGD(
            trainable, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay, **({"fused": True} if self.device.type == "cuda" else {"foreach": True}),
        )

    def train_epoch(self) -> "EpochReport":
        """One pass over this rank's shard, then evaluation, under the recipe's matmul precision."""
        with self.precision.math():
            return self._train_epoch()

    def _train_epoch(self) -> "EpochReport":
        raise NotImplementedError


class Generation(GenerationBase):
    """Trains one student for one generation, optionally distilled from a frozen ``teacher``."""

    def __init__(
        self,
        student: nn.Module,
        data: ImageSplits,
        recipe: Recipe,
        *,
        loss: str = "label",
        loss_params: Optional[dict] = None,
        teacher: Optional[nn.Module] = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
        channels_last: bool = True,
    ):
        if recipe.schedule == "plateau":
            raise ValueError("schedule 'plateau' is for language models (LanguageGeneration); use multistep, onecycle, cosine or constant")
        # channels_last on CPU too: 1.28x (label) to 1.36x (BAN) faster for wrn-10-1 here
        # (benchmarks/cpu_channels_last.py); contiguous_format stays available for odd models.
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if torch.device(device).type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._setup(student, teacher, recipe, loss, loss_params, device, seed, compile, memory_format,
                    sync_bn=recipe.sync_batchnorm)

        mean, std = data.channel_stats() if recipe.normalize else (torch.zeros(3), torch.full((3,), 255.0))
        if recipe.batch_size % self.world_size:
            raise ValueError(f"batch_size {recipe.batch_size} is not divisible by {self.world_size} workers")
        self.train_loader = DeviceLoader(
            data.train_images, data.train_labels, recipe.batch_size // self.world_size,
            device=self.device, train=True, seed=seed, rank=self.rank, world_size=self.world_size,
            mean=mean, std=std, crop_padding=recipe.crop_padding, padding_mode=recipe.crop_padding_mode,
            flip=recipe.flip, channels_last=channels_last,
        )
        if len(self.train_loader) == 0:
            raise ValueError(f"{data.train_images.shape[0]} train images make no batch of {recipe.batch_size}")
        eval_kwargs = dict(device=self.device, train=False, rank=self.rank, world_size=self.world_size,
                           mean=mean, std=std, channels_last=channels_last)
        self.test_loader = DeviceLoader(data.test_images, data.test_labels, recipe.eval_batch_size, **eval_kwargs)
        self.test_labels = data.test_labels.to(self.device)
        self.val_loader = None
        if data.val_images is not None:
            self.val_loader = DeviceLoader(data.val_images, data.val_labels, recipe.eval_batch_size, **eval_kwargs)
            self.val_labels = data.val_labels.to(self.device)

        self.optimizer = self._optimizer()
        self.total_steps = recipe.epochs * len(self.train_loader)
        if recipe.schedule == "onecycle-cosine":  # torch's own, so momentum cycles as in the anchor
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, recipe.lr, total_steps=self.total_steps, pct_start=onecycle_peak(recipe),
                base_momentum=recipe.momentum - 0.05, max_momentum=recipe.momentum + 0.05)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: lr_factor(recipe, step, self.total_steps))
        self.epoch = 0
        self.best_test_error = float("inf")
        self.test_logits: Optional[torch.Tensor] = None
        self.teacher_test_logits = self.predict(self.teacher, self.test_loader, fp32=True) if self.teacher else None

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to resume after the current epoch."""
        return {
            "model": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_test_error": self.best_test_error,
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.best_test_error = state["best_test_error"]

    def test_predictions(self) -> dict[str, torch.Tensor]:
        """The last evaluated model's test predictions on the CPU: float32 ``logits`` (N, C) and ``label`` (N,)."""
        if self.test_logits is None:
            self.test_logits = self.predict(self.student, self.test_loader)
        return {"logits": self.test_logits.float().cpu(), "label": self.test_labels.cpu()}

    # -- training -----------------------------------------------------------------------------
    def run(self) -> Iterator[EpochReport]:
        """Train the remaining epochs, yielding each epoch's report; ``test_logits`` holds the last."""
        while self.epoch < self.recipe.epochs:
            yield self.train_epoch()
        if self.test_logits is None:  # resumed after the last epoch: evaluate once for the logits
            self.test_logits = self.predict(self.student, self.test_loader)

    def _train_epoch(self) -> EpochReport:
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch starts with
        torch.manual_seed(self.seed * 100_003 + self.epoch)  # dropout and DKPP draws, per epoch
        self.train_model.train()
        self.train_loader.set_epoch(self.epoch)
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for images, labels in self.train_loader:
            teacher_logits = self._teacher_logits(images)  # fp32, outside autocast
            with self.precision.autocast():
                logits = self.train_model(images)
            loss = self.loss_fn(logits, teacher_logits, labels, **self.loss_params)  # fp32 losses
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss_sum += loss.detach() * labels.shape[0]
            seen += labels.shape[0]
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)])
        if self.world_size > 1:
            dist.all_reduce(totals)
            # DDP syncs BN running stats at the start of each forward only: after the last step the
            # replicas differ slightly. Take rank 0's so every rank evaluates and stores one model.
            for buffer in self.student.buffers():
                dist.broadcast(buffer, src=0)
        train_loss = (totals[0] / totals[1]).item()
        self.epoch += 1
        if not torch.isfinite(torch.tensor(train_loss)):
            raise NonFiniteLoss(f"training loss is {train_loss} at epoch {self.epoch}")
        train_seconds = time.perf_counter() - started

        self.test_logits = self.predict(self.student, self.test_loader)
        test = metrics.summary(self.test_logits, self.test_labels, self.teacher_test_logits)
        self.best_test_error = min(self.best_test_error, test["error"])
        val_error = val_loss = None
        if self.val_loader is not None:
            val_logits = self.predict(self.student, self.val_loader)
            val_error, val_loss = metrics.error_rate(val_logits, self.val_labels), metrics.mean_nll(val_logits, self.val_labels)
        return EpochReport(
            epoch=self.epoch, train_loss=train_loss, lr=lr,
            test_error=test["error"], test_loss=test["loss"], agreement=test["agreement"], kl=test["kl"],
            ece=test["ece"], val_error=val_error, val_loss=val_loss, best_test_error=self.best_test_error,
            seconds=time.perf_counter() - started, images_per_s=float(totals[1]) / train_seconds,
        )

    def _teacher_logits(self, images: torch.Tensor) -> Optional[torch.Tensor]:
        """The frozen teacher's fp32 logits of a batch: its forward runs outside any autocast."""
        if self.teacher is None:
            return None
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            logits = self.teacher(images)
        return logits.float().clone()  # a normal tensor, so autograd may save it for the student's backward

    @torch.no_grad()
    def predict(self, model: nn.Module, loader: DeviceLoader, fp32: bool = False) -> torch.Tensor:
        """Float32 logits of ``model`` over the whole split, in order; ranks split the work.

        The student is evaluated in the recipe's precision, the teacher (``fp32``) as it teaches."""
        was_training = model.training
        model.eval()
        with self.precision.math(), (torch.autocast(self.device.type, enabled=False) if fp32 else self.precision.autocast()):
            local = torch.cat([model(images).float() for images, _ in loader])
        model.train(was_training)
        if self.world_size == 1:
            return local
        per_rank = -(-loader.images.shape[0] // self.world_size)
        padded = torch.zeros(per_rank, local.shape[1], device=self.device)
        padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        # rank r held indices r, r+W, r+2W, ...: interleave back into dataset order
        return torch.stack(gathered, dim=1).reshape(-1, local.shape[1])[: loader.images.shape[0]]
