"""Run the generations of one chain in order, in plain PyTorch, with hooks for reporting.

This is the per-worker logic of a chain, kept free of Ray so it runs alone in tests and
benchmarks: ``ray_ban.orchestration.chain`` plugs Ray Train's report/checkpoint calls into the hooks.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch
import torch.distributed as dist

from ray_ban import models
from ray_ban.audit import audit  # every rank records its shard per epoch and final weight digests
from ray_ban.data import ImageSplits, TextSplits, is_text, load_dataset
from ray_ban.data.sources import SYNTHETIC_SIZES, generate
from ray_ban.core.engine import EpochReport, Generation, NonFiniteLoss, world
from ray_ban.core.language_engine import LanguageGeneration
from ray_ban.config.recipe import Recipe
from ray_ban.config.spaces import Training
from ray_ban.store import RunStore


class GenerationLogger(Protocol):
    """What rank 0 tells about one generation as it trains (a TensorBoard run, for instance)."""

    def epoch(self, report: dict) -> None: ...

    def finish(self, summary: Optional[dict], failed: bool = False) -> None: ...


@dataclass
class Resume:
    """Where a restarted worker group picks up: the model being trained and its engine state."""

    key: str
    engine_state: dict
    history: list


def prepare_data(data_config: dict, data_root: Optional[str] = None, download: bool = False) -> ImageSplits | TextSplits:
    """Load the sweep's dataset with its subset and validation split, identically on every worker.

    A text corpus (``synthetic-text``, ``ptb:<dir>``) comes with its own validation split. A ``parquet:``
    dataset (a folder or a storage URI) is decoded once per node and read from the node's cache after that;
    ``label_column`` in ``data_config`` picks its label column."""
    if is_text(data_config["dataset"]):
        return load_dataset(data_config["dataset"], data_root, download)
    train, test = data_config.get("train_subset"), data_config.get("test_subset")
    if data_config["dataset"] in SYNTHETIC_SIZES:  # generate only the images that will be used
        data = generate(data_config["dataset"], train, test)
    else:
        data = load_dataset(data_config["dataset"], data_root, download, label_column=data_config.get("label_column"))
    if train or test:
        data = data.subset(train, test)
    return data.with_validation(data_config.get("validation_size") or 0, seed=0)


def build_model(training: Training, num_classes: int, vocab: Optional[tuple] = None) -> torch.nn.Module:
    """The training's architecture, initialised from its own seed (the same on every rank).

    ``vocab``: a text corpus's words, which a character-aware language model spells."""
    torch.manual_seed(training.seed)
    kwargs = dict(training.model_kwargs)
    if vocab is not None and training.architecture.startswith("cnn-lstm"):
        kwargs["vocab"] = vocab
    return models.build(training.architecture, num_classes, **kwargs)


def load_trained(store: RunStore, training: Training, num_classes: int, vocab: Optional[tuple] = None) -> torch.nn.Module:
    model = build_model(training, num_classes, vocab)
    model.load_state_dict(store.load_state(training.key))
    return model


def run_chain(
    trainings: list[Training],
    teachers: dict[str, Training],
    recipe: Recipe,
    data: ImageSplits,
    store: RunStore,
    *,
    device: torch.device,
    resume: Optional[Resume] = None,
    on_epoch: Callable[[Training, EpochReport, Callable[[], dict], list], None] = lambda *a: None,
    compile: bool = False,
    board_log: Callable[[Training, int], Optional["GenerationLogger"]] = lambda training, start_epoch: None,
    stopping: Optional[dict] = None,
) -> Optional[str]:
    """Train every unfinished training in order; each distilled one learns from its predecessor.

    ``teachers`` maps a teacher key to its Training (for teachers trained elsewhere in the sweep).
    ``on_epoch(training, report, state_fn, history)`` runs on every rank after every epoch (the Ray
    layer reports and checkpoints there). ``board_log(training, start_epoch)`` gives rank 0 a logger of each
    generation (the Ray layer's writes its TensorBoard run), or None. ``stopping`` ({"patience", "metric"})
    ends the chain once ``patience`` generations in a row fail to improve the validation ``metric`` on the
    best of the lineage before them (the teacher included); rank 0 marks the generations left ``skipped``.
    Returns None, or the failure message of a non-finite loss.
    """
    rank, world_size = world()
    known = {**teachers, **{t.key: t for t in trainings}}
    vocab = data.vocab if isinstance(data, TextSplits) else None
    teacher_model = None
    lineage = _lineage_values(store, trainings, stopping)
    for index, training in enumerate(trainings):
        if stopping and should_stop(lineage, stopping["patience"]):
            if rank == 0:
                _skip_rest(store, trainings[index:], trainings[index - 1].generation, lineage, stopping)
            break
        if store.is_done(training.key):
            teacher_model = None  # loaded from the store if the next generation needs it
            if stopping:
                lineage.append(_metric(store.summary(training.key), stopping["metric"]))
            continue
        if training.teacher_key and teacher_model is None:
            teacher_model = load_trained(store, known[training.teacher_key], data.num_classes, vocab)
        student = build_model(training, data.num_classes, vocab)
        if teacher_model is not None and getattr(student, "inherits_stem_and_fc", False):
            models.inherit_from_teacher(student, teacher_model)
        engine = LanguageGeneration if isinstance(data, TextSplits) else Generation
        generation = engine(
            student, data, recipe, loss=training.loss, loss_params=training.loss_params,
            teacher=teacher_model, device=device, seed=training.seed, compile=compile,
        )
        history: list[dict] = []
        resumed_from = None  # the epoch of the checkpoint this generation continued from, if any
        if resume is not None and resume.key == training.key:
            generation.load_state_dict(resume.engine_state)
            history = list(resume.history)
            resumed_from = generation.epoch
        log = board_log(training, generation.epoch) if rank == 0 else None
        try:
            for report in generation.run():
                history.append({**report.to_dict(), **({"resumed_from": resumed_from} if resumed_from else {})})
                if log is not None:
                    log.epoch(history[-1])
                audit(f"{training.key}/rank{rank}-epoch{report.epoch}.json",
                       lambda: generation.train_loader.shard_indices().tolist())
                on_epoch(training, report, generation.state_dict, history)
        except NonFiniteLoss as error:
            message = f"{training.key} (generation {training.generation}): {error}"
            if rank == 0:
                store.save_failure(training.key, message)
            if log is not None:
                log.finish(None, failed=True)
            return message
        if rank == 0:
            summary = summarize(training, generation, history, resumed_from)
            store.save_model(training.key, generation.student.state_dict(), generation.test_predictions(),
                             history, summary)
            if log is not None:
                log.finish(summary)
        audit(f"{training.key}/rank{rank}-weights.json",
               lambda: {k: float(v.double().sum()) for k, v in generation.student.state_dict().items()})
        if world_size > 1:
            dist.barrier()  # every rank sees the stored model before the next generation
        teacher_model = generation.student
        if stopping:
            lineage.append(_metric(store.summary(training.key), stopping["metric"]))
    return None


def should_stop(values: list[float], patience: int) -> bool:
    """Whether the last ``patience`` values (one per generation, lowest best) all fail to improve on the
    best value before them: ``values`` holds the lineage from generation 0."""
    return len(values) > patience and min(values[-patience:]) >= min(values[:-patience])


def _metric(summary: dict, metric: str) -> float:
    """A finished model's validation metric (its last epoch's); a missing one counts as no improvement."""
    value = summary.get(metric)
    return float("inf") if value is None else float(value)


def _lineage_values(store: RunStore, trainings: list[Training], stopping: Optional[dict]) -> list[float]:
    """The stopping metric of the chain's generation 0 (the teacher its first generation learns from)."""
    if not stopping or not trainings or not trainings[0].teacher_key:
        return []
    return [_metric(store.summary(trainings[0].teacher_key), stopping["metric"])]


def _skip_rest(store: RunStore, rest: list[Training], last_run: int, values: list[float], stopping: dict) -> None:
    """Mark the generations a stopped chain will not train, saying after which one and why."""
    patience, metric = stopping["patience"], stopping["metric"]
    best = min(values[:-patience])
    message = (f"not trained: the chain stopped after generation {last_run}, whose last {patience} generation(s) "
               f"did not improve {metric} on the best before them ({best:.4g})")
    for training in rest:
        if not store.is_done(training.key):
            store.save_skipped(training.key, {"reason": "no_improvement", "metric": metric, "patience": patience,
                                              "after_generation": last_run, "message": message})


def summarize(training: Training, generation, history: list[dict], resumed_from: Optional[int] = None) -> dict:
    """The final numbers of one trained model, as stored in summary.json; ``resumed_from``: the epoch of the
    checkpoint its last run continued from (None: trained in one go)."""
    last = history[-1]
    return {
        "key": training.key,
        "parameters": models.parameter_count(generation.student),
        "epochs": last["epoch"],
        "final_test_error": last["test_error"],
        "best_test_error": min(h["test_error"] for h in history),
        "test_loss": last["test_loss"],
        "agreement": last["agreement"],
        "kl": last["kl"],
        "ece": last["ece"],
        "val_error": last["val_error"],
        "best_val_error": min((h["val_error"] for h in history if h["val_error"] is not None), default=None),
        "test_perplexity": last.get("test_perplexity"),  # language models only
        "val_perplexity": last.get("val_perplexity"),
        "best_val_perplexity": min((h["val_perplexity"] for h in history if h.get("val_perplexity") is not None), default=None),
        "wall_time_s": sum(h["seconds"] for h in history),
        "finished_at": time.time(),
        "resumed_from": resumed_from,
        **environment(generation.device, generation.precision.name, generation.world_size),
    }


def environment(device: torch.device, precision: str, workers: int) -> dict:
    """Where and how a model was trained: the accelerator's name, the precision that ran (``auto``
    resolved), the data-parallel workers and the versions of torch, Ray and ray-ban (Ray's read from
    its package metadata, so this process need not import it)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": name, "precision": precision, "workers": workers, "torch_version": torch.__version__,
            "ray_version": _package_version("ray"), "ray_ban_version": _package_version("ray-ban")}


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
