"""One generation chain as one Ray Train run: a TorchTrainer whose workers train every generation.

``chain_trial`` is the Ray Tune trainable (one trial = one chain). It starts a single TorchTrainer
for all unfinished generations of its chain, so Ray's start-up is paid once per chain. Workers
checkpoint every epoch; a restarted worker group resumes from the last epoch checkpoint, and a
TorchTrainer re-created with the same (storage, name) after a driver crash finds it again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from .generations import Resume, audit, prepare_data, run_chain
from .placement import GROUP_KEY, current_group_id
from .recipe import Recipe
from .spaces import Training
from .store import RunStore

CHECKPOINT_FILE = "chain_state.pt"


class ChainTrainer(TorchTrainer):
    """A TorchTrainer without the per-run helper actors a chain has no use for.

    Every Train run starts a DatasetManager actor even with no Ray Datasets (a chain loads its own
    tensors) and a PlacementGroupCleaner that asks the State API, which only answers where the
    dashboard runs. On two cores each actor is a Python process of about 3 s of CPU per chain;
    ``placement.ReleaseStoppedChains`` frees a stopped chain's placement group instead."""

    def __init__(self, *args, keep_group_cleaner: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_group_cleaner = keep_group_cleaner

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        unused = (DatasetsCallback,) if self._keep_group_cleaner else (DatasetsCallback, PlacementGroupCleanerCallback)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]


class ChainFailed(RuntimeError):
    """A chain could not finish (non-finite loss, or its workers failed past --max-failures)."""


def _trainings(raw: list[dict]) -> list[Training]:
    return [Training(**t) for t in raw]


def chain_worker(config: dict) -> None:
    """The Train worker loop: every rank runs the chain's generations in lockstep (DDP)."""
    store = RunStore(config["run_dir"])
    trainings = _trainings(config["trainings"])
    teachers = {t.key: t for t in _trainings(config["teachers"])}
    recipe = Recipe.from_dict(config["recipe"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    audit(f"placement/{config['chain_id']}-rank{rank}-{os.getpid()}.json",  # test hook: where Ray put this rank
          lambda: {"chain": config["chain_id"], "rank": rank, "node_id": ray.get_runtime_context().get_node_id()})
    data = prepare_data(config["data"], config.get("data_root"), config.get("download", False))
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        resume = Resume(saved["key"], saved["engine"], saved["history"])

    group_id = current_group_id()

    def report(training: Training, epoch_report, state_fn, history) -> None:
        metrics = {**epoch_report.to_dict(), "generation": training.generation, "model_key": training.key,
                   "chain_id": config["chain_id"], "generations": len(trainings) and trainings[-1].generation,
                   "epochs_total": recipe.epochs, GROUP_KEY: group_id}
        metrics = {k: (float("nan") if v is None else v) for k, v in metrics.items()}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"key": training.key, "engine": state_fn(), "history": history}, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint_{training.key}_e{epoch_report.epoch:04d}")

    failure = run_chain(trainings, teachers, recipe, data, store, device=ray.train.torch.get_device(),
                        resume=resume, on_epoch=report, compile=config.get("compile", False),
                        board=config.get("board"))
    if failure is not None:
        return  # the failure is in the store; the trial raises it without retrying a deterministic NaN


def chain_trial(trial_config: dict) -> dict:
    """The Tune trainable of one chain: fit one TorchTrainer for everything unfinished, then summarise."""
    config = trial_config["chain"]
    store = RunStore(config["run_dir"])
    trainings = _trainings(config["trainings"])
    for training in trainings:
        store.clear_failure(training.key)  # a rerun gets a fresh try at a failed model
    if any(not store.is_done(t.key) for t in trainings):
        resources = config["resources"]
        trainer = ChainTrainer(
            chain_worker,
            keep_group_cleaner=resources.get("group_cleaner", True),
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=resources["workers"],
                use_gpu=resources["gpus_per_worker"] > 0,
                resources_per_worker={"CPU": resources["cpus_per_worker"], "GPU": resources["gpus_per_worker"]},
            ),
            run_config=RunConfig(
                name=config["chain_id"],
                storage_path=store.path("ray"),
                storage_filesystem=store.fs,
                failure_config=FailureConfig(max_failures=config.get("max_failures", 3)),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=[TuneReportCallback()],
            ),
        )
        try:
            trainer.fit()
        except Exception as error:  # TrainingFailedError and friends: name the chain, keep it to one line
            raise ChainFailed(f"chain {config['chain_id']}: workers failed: {str(error).splitlines()[0]}") from None
    failures = [store.failure(t.key) for t in trainings if store.failure(t.key)]
    if failures:
        raise ChainFailed(f"chain {config['chain_id']}: {failures[0]}")
    final = store.summary(trainings[-1].key)
    return final_metrics(final, trainings[-1], config["metric"])


def final_metrics(summary: dict, training: Training, metric: str) -> dict[str, Any]:
    """The dict a finished trial returns to Tune; it must carry the Tune metric."""
    values = {"done": True, "chain_complete": True, "generation": training.generation, "model_key": training.key,
              "test_error": summary["final_test_error"], "val_error": summary.get("val_error")}
    values = {k: (float("nan") if v is None else v) for k, v in values.items()}
    values.setdefault(metric, float("nan"))
    return values


def search_trial(hparams: dict, plan, chain, base: dict) -> dict:
    """The Tune trainable of one search trial: the template chain rebuilt with the sampled values,
    then trained exactly like a sweep's chain (one TorchTrainer, per-epoch reports for the scheduler)."""
    from .search import apply_hparams
    from .tensorboard_runs import search_runs

    trial = tune.get_context().get_trial_name()
    searched, recipe = apply_hparams(plan, chain, hparams)
    config = {**base, "chain_id": f"{chain.chain_id}.{trial}", "trainings": [t.__dict__ for t in searched.generations],
              "recipe": recipe.to_dict(),
              "board": {**base["board"], "runs": search_runs(plan, searched, recipe, trial, hparams)}}
    return chain_trial({"chain": config})


DRIVER_RESOURCE = "chain_driver"  # a custom resource for chain drivers: they need no CPU of their own


def trainable(cluster_resources: dict, function=chain_trial):
    """``chain_trial`` with a request that never takes CPU from its own Train workers.

    A trial only waits on its TorchTrainer; holding a whole CPU (Tune's default) starves the workers
    on small machines and the chain hangs. Where the cluster offers ``chain_driver`` (local runs,
    and the head node of cluster.yaml, which keeps drivers off spot nodes) a trial takes one of
    those; elsewhere it takes 0.01 CPU.
    """
    if cluster_resources.get(DRIVER_RESOURCE, 0) >= 1:
        return tune.with_resources(function, {"CPU": 0, DRIVER_RESOURCE: 1})
    return tune.with_resources(function, {"CPU": 0.01})
