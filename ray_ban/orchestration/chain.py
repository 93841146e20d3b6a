"""One generation chain as one Ray Train run whose workers train every generation.

``chain_trial`` is the Ray Tune trainable (one trial = one chain). It starts a single Train run for
all unfinished generations of its chain, so Ray's start-up is paid once per chain. Workers
checkpoint every epoch; a restarted worker group resumes from the last epoch checkpoint, and a run
re-created with the same (storage, name) after a driver crash finds it again.

This module is what the trial's actor and Train's controller import: it stays free of torch (the
workers' code is ``chain_worker``).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import ray
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from ray_ban.audit import audit
from ray_ban.orchestration.relay import FIT_ENDED, ReportToTrial, mailbox, put, take
from ray_ban.store import RunStore


class ChainFailed(RuntimeError):
    """A chain could not finish (non-finite loss, or its workers failed past --max-failures)."""


def chain_worker(config: dict) -> None:
    """The Train workers' entry point; the training code, and torch with it, is imported on the workers only."""
    from ray_ban.orchestration.chain_worker import train_chain

    train_chain(config)


class ChainTrainer(DataParallelTrainer):
    """Ray Train's data-parallel trainer, lean for a chain.

    No framework backend: each worker starts its own torch.distributed group (``chain_worker.
    process_group``), so the trial's actor and Train's controller never import torch, where a
    TorchTrainer's config imports it in both (about 2.4 s of CPU each, per chain, on two cores).
    Without the DatasetManager actor every Train run starts (a chain uses no Ray Datasets) and,
    where no dashboard answers the State API (local runs), without the PlacementGroupCleaner that
    needs it; ``placement.ReleaseStoppedChains`` frees a stopped chain's group instead. Each actor is
    a Python process of about 2 s of CPU per chain. Measured on two cores, Table 2's smoke sweep:
    430 s as a TorchTrainer, 337 s without the two actors, 280-305 s without torch too, and 241-254 s
    with reports relayed by one actor per sweep instead of a queue actor per chain (BENCHMARKS.md)."""

    def __init__(self, *args, keep_group_cleaner: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_group_cleaner = keep_group_cleaner

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        unused = (DatasetsCallback,) if self._keep_group_cleaner else (DatasetsCallback, PlacementGroupCleanerCallback)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]


def chain_trial(trial_config: dict) -> dict:
    """The Tune trainable of one chain: fit one Train run for everything unfinished, then summarise."""
    config = trial_config["chain"]
    audit(f"trials/{config['chain_id']}-{os.getpid()}.json",  # test hook: the process this trial ran in
          lambda: {"chain": config["chain_id"], "pid": os.getpid(), "run_dir": config["run_dir"]})
    store = RunStore(config["run_dir"])
    keys = [t["key"] for t in config["trainings"]]
    unfinished = [t for t in config["teachers"] if not store.is_done(t["key"])]
    if unfinished:  # released because its teacher settled: it failed, so there is nothing to distil from
        raise ChainFailed(f"chain {config['chain_id']}: teacher {unfinished[0]['key']} failed")
    for key in keys:
        store.clear_failure(key)  # a rerun gets a fresh try at a failed model
    if any(not store.is_settled(key) for key in keys):  # settled: finished, or skipped by a chain that stopped
        resources = config["resources"]
        relay, mail_key = mailbox(tune.get_context().get_trial_id())
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
                # errors in the training code are retried max_failures times (-1: always); a preempted
                # node (a spot reclaim, seen by Train's preemption watcher) is retried without limit
                failure_config=FailureConfig(max_failures=config.get("max_failures", 3), max_preemption_failures=-1),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                callbacks=[ReportToTrial(relay, mail_key)],
            ),
        )
        try:
            fit_reporting(trainer, relay, mail_key)
        except Exception as error:  # TrainingFailedError and friends: name the chain, keep it to one line
            line = f"workers failed: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
            failed = next((key for key in keys if not store.is_done(key)), keys[-1])
            store.save_failure(failed, line, details=str(error))  # the whole worker traceback, for results and report
            raise ChainFailed(f"chain {config['chain_id']}: {line}") from None
    failures = [store.failure(key) for key in keys if store.failure(key)]
    if failures:
        raise ChainFailed(f"chain {config['chain_id']}: {failures[0]}")
    done = [t for t in config["trainings"] if store.is_done(t["key"])]
    last = done[-1] if done else config["teachers"][0]  # a chain stopped before its first generation: none
    return {**final_metrics(store.summary(last["key"]), last["generation"], last["key"], config["metric"]),
            **stop_metrics(config, len(done), any(store.skipped(t["key"]) for t in config["trainings"]))}


def fit_reporting(trainer: DataParallelTrainer, relay, key: str, poll_s: float = 1.0,
                  report: Callable[[dict], None] = tune.report) -> None:
    """``trainer.fit()`` on a helper thread while this (the trial's) thread hands each report that
    reaches ``key`` to Tune (``report``); raises what ``fit`` raised.

    The controller's puts are awaited, so every report is in the mailbox before ``fit`` returns; the
    helper thread then puts ``FIT_ENDED`` after them, which wakes the waiting take at once: the trial
    ends as soon as its run does, not up to two polls later. Should that mark be lost (a relay that
    died and restarted), the trial still ends once the thread is gone, after one last take."""
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # noqa: BLE001 - re-raised on the trial's thread below
            failure.append(error)
        finally:
            put(relay, key, {FIT_ENDED: True})

    thread = threading.Thread(target=fit, daemon=True, name="chain-fit")
    thread.start()
    while True:
        running = thread.is_alive()
        reports = take(relay, key, poll_s if running else 0.0)
        for metrics in reports:
            if not metrics.get(FIT_ENDED):
                report(metrics)
        if not running or any(metrics.get(FIT_ENDED) for metrics in reports):
            break
    thread.join()
    if failure:
        raise failure[0]


def final_metrics(summary: dict, generation: int, key: str, metric: str) -> dict[str, Any]:
    """The dict a finished trial returns to Tune; it must carry the Tune metric."""
    values = {"done": True, "chain_complete": True, "generation": generation, "model_key": key,
              "test_error": summary["final_test_error"], "val_error": summary.get("val_error")}
    values = {k: (float("nan") if v is None else v) for k, v in values.items()}
    values.setdefault(metric, float("nan"))
    return values


def stop_metrics(config: dict, generations_run: int, stopped: bool) -> dict[str, Any]:
    """How many generations a chain trained and why it ended (for the terminal's line)."""
    planned = [t for t in config["trainings"] if t["generation"] > 0]
    stopping = config.get("stopping") or {}
    return {"generations_run": generations_run, "generations": len(planned),
            "stop_reason": "no_improvement" if stopped else "max_generations",
            "stop_metric": stopping.get("metric", "")}


def search_trial(hparams: dict, plan, chain, base: dict) -> dict:
    """The Tune trainable of one search trial: the template chain rebuilt with the sampled values,
    then trained exactly like a sweep's chain (one Train run, per-epoch reports for the scheduler)."""
    from ray_ban.config.search import apply_hparams
    from ray_ban.results.tensorboard_runs import search_runs

    trial = tune.get_context().get_trial_name()
    searched, recipe = apply_hparams(plan, chain, hparams)
    config = {**base, "chain_id": f"{chain.chain_id}.{trial}", "trainings": [t.__dict__ for t in searched.generations],
              "recipe": recipe.to_dict(),
              "board": {**base["board"], "runs": search_runs(plan, searched, recipe, trial, hparams)}}
    return chain_trial({"chain": config})


DRIVER_RESOURCE = "chain_driver"  # a custom resource for chain drivers: they need no CPU of their own


def trainable(cluster_resources: dict, function=chain_trial):
    """``chain_trial`` with a request that never takes CPU from its own Train workers.

    A trial only waits on its Train run; holding a whole CPU (Tune's default) starves the workers
    on small machines and the chain hangs. Where the cluster offers ``chain_driver`` (local runs,
    and the head node of cluster.yaml, which keeps drivers off spot nodes) a trial takes one of
    those; elsewhere it takes 0.01 CPU.
    """
    if cluster_resources.get(DRIVER_RESOURCE, 0) >= 1:
        return tune.with_resources(function, {"CPU": 0, DRIVER_RESOURCE: 1})
    return tune.with_resources(function, {"CPU": 0.01})
