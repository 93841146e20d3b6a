"""The Ray Tune run of a hyperparameter search: trials of one chain, a searcher, a scheduler.

The shared teacher is trained first (the sweep's generation-0 phase); then every trial rebuilds
the chain's students with its sampled values and trains them in one Ray Train run, reporting every
epoch, so ASHA can stop a chain between any two epochs of any generation. Afterwards the outcome
of every trial goes to ``search.json`` (read by ``ray_ban.results``), and the best one, chosen on the
validation metric, to ``best.yaml``, a search-space file that reruns it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import yaml

from ray_ban import log
from ray_ban.config import search as searching
from ray_ban.orchestration import tuning
from ray_ban.config.spaces import SweepPlan, read_yaml
from ray_ban.results.search_file import SEARCH_FILE, read_outcome
from ray_ban.store import RunStore

BEST_FILE = "best.yaml"


def trial_name(trial) -> str:
    """``trial00003``: Tune's trial ids end in a per-experiment counter, so names sort in launch order."""
    return f"trial{trial.trial_id.rsplit('_', 1)[-1]}"


def run_search(plan: SweepPlan, base: dict, store: RunStore, max_concurrent: int, progress) -> dict:
    """Run every trial; write search.json; returns {trial chain_id: error or None}."""
    import ray
    from ray import tune

    from ray_ban.orchestration.chain import search_trial, trainable
    from ray_ban.orchestration.placement import ReleaseStoppedChains

    search = searching.Search(**plan.search)
    chain = searching.chain_to_search(plan)
    if not store.is_done(chain.root.key):
        return {chain.chain_id: f"teacher {chain.root.key} failed: the search has nothing to distil from"}
    function = tune.with_parameters(search_trial, plan=plan, chain=chain, base=base)
    tuner = tune.Tuner(
        trainable(ray.cluster_resources(), function),
        param_space=tuning.tune_space(search),
        tune_config=tune.TuneConfig(
            metric=search.metric, mode="min", num_samples=search.num_samples,
            search_alg=tuning.searcher(search, max_concurrent),
            scheduler=tuning.scheduler(search, searching.max_iterations(search, chain, plan.recipe_for(chain))),
            max_concurrent_trials=max_concurrent, trial_name_creator=trial_name, trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(name="search", storage_path=store.path("ray"), storage_filesystem=store.fs,
                                  verbose=0, callbacks=[progress, ReleaseStoppedChains()]),
    )
    trials = [_outcome(result, plan, chain, store, search.metric) for result in tuner.fit()]
    trials.sort(key=lambda t: t["trial"])
    best = select_best(trials)
    store.write_json(SEARCH_FILE, {"metric": search.metric, "mode": "min", "search": search.to_dict(),
                                                 "best": best and best["trial"], "trials": trials})
    return {f"{chain.chain_id}.{t['trial']}": t["error"] for t in trials}


def _outcome(result, plan: SweepPlan, chain, store: RunStore, metric: str) -> dict:
    """One trial as plain data: its values, its chain, whether the scheduler stopped it, and where."""
    from dataclasses import asdict, replace

    hparams = searching.plain_values(dict(result.config or {}))  # none: the trial's actor never ran (it failed)
    searched, recipe = searching.apply_hparams(plan, chain, hparams)
    last = result.metrics or {}
    if result.error is not None:
        status = "failed"
    elif last.get("chain_complete"):
        status = "complete"
    else:
        status = "stopped"  # the scheduler ended it early: its last report says where
    value = last.get(metric)
    final = searched.generations[-1]
    name = Path(result.path).name
    return {
        "trial": name, "hparams": hparams, "status": status,
        "error": None if result.error is None else str(result.error).strip().splitlines()[-1][:500],
        "iterations": last.get("training_iteration"), "generation": last.get("generation"), "epoch": last.get("epoch"),
        "metric_value": value if searching.is_finite(value) else None,
        "test_error": store.summary(final.key)["final_test_error"] if store.is_done(final.key) else None,
        "chain": asdict(replace(searched, chain_id=f"{chain.chain_id}.{name}")), "recipe": recipe.to_dict(),
    }


def select_best(trials: list[dict]) -> Optional[dict]:
    """The complete trial with the lowest validation metric (stopped and failed trials never win)."""
    complete = [t for t in trials if t["status"] == "complete" and t["metric_value"] is not None]
    return min(complete, key=lambda t: t["metric_value"]) if complete else None


def write_best(plan: SweepPlan, store: RunStore) -> Optional[str]:
    """Log the chosen values and write best.yaml, a search-space file that reruns them without the search."""
    outcome = read_outcome(store)
    if outcome is None:
        return None
    best = next((t for t in outcome["trials"] if t["trial"] == outcome["best"]), None)
    stopped = sum(t["status"] == "stopped" for t in outcome["trials"])
    say = log.get("search")
    say.info(f"ray-ban: search: {len(outcome['trials'])} trials, {stopped} stopped early by the scheduler")
    if best is None:
        say.info("ray-ban: search: no trial completed, so none is selected")
        return None
    chain = searching.chain_to_search(plan)
    values = ", ".join(f"{k}={_short(v)}" for k, v in best["hparams"].items())
    test = "-" if best["test_error"] is None else f"{best['test_error']:.2f}%"
    say.info(f"ray-ban: best {best['trial']}: {values}; {outcome['metric']} {best['metric_value']:.4g} "
             f"(selected on validation); its test error {test} (reported, not used to select)")
    space = searching.best_space(read_yaml(Path(plan.source)), plan.preset, chain, best["hparams"], f"{plan.name}-best")
    header = (f"# Chosen by the search '{plan.name}' ({plan.preset} preset): {best['trial']}, {values}\n"
              f"# {outcome['metric']} {best['metric_value']:.4g} on the validation split; test error {test} "
              f"(reported, not used to select)\n# rerun: python -m ray_ban.sweep {store.uri(BEST_FILE)} --preset {plan.preset}\n")
    path = store.uri(BEST_FILE)
    store.write_bytes(BEST_FILE, (header + yaml.safe_dump(space, sort_keys=False)).encode())
    say.info(f"ray-ban: search: best configuration written to {path}")
    return path


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
