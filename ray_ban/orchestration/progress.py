"""Concise terminal progress for a sweep: one line per chain event instead of Ray's raw output."""

from __future__ import annotations

import math

from ray.tune import Callback

from ray_ban import log
from ray_ban.config.spaces import SweepPlan


class ChainProgress(Callback):
    """Logs 'chain gen k/K epoch e/E test error x%' per epoch, and one line per finish or failure, as
    records of the ``ray_ban.progress`` logger (the run shows them on its terminal stream)."""

    def __init__(self, plan: SweepPlan):
        self.plan = plan
        self.epochs = plan.recipe.epochs

    def _say(self, text: str) -> None:
        log.get("progress").info(text)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or result.get("done"):
            return
        last_generation = int(result.get("generations", 0))
        label = "gen0" if last_generation == 0 else f"gen {int(result['generation'])}/{last_generation}"
        epochs = int(result.get("epochs_total", self.epochs))  # rows and search trials may differ
        extra = ""
        if not math.isnan(result.get("agreement", math.nan)):
            extra = f", agreement {result['agreement']:.1f}%"
        if not math.isnan(result.get("val_error", math.nan)):
            extra += f", val error {result['val_error']:.2f}%"
        if not math.isnan(result.get("test_perplexity", math.nan)):  # language models
            extra = f", test perplexity {result['test_perplexity']:.2f}" + extra
        self._say(f"[{result.get('chain_id', trial)}] {label} epoch {int(result['epoch'])}/{epochs}: "
                  f"loss {result['train_loss']:.3f}, test error {result['test_error']:.2f}%{extra}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if "chain" not in trial.config and not result.get("chain_complete"):
            self._say(f"[{_name(trial)}] stopped by the scheduler after {result.get('training_iteration')} reports")
            return
        if result.get("reused_from"):  # a generation-0 model the teacher bank already held
            self._say(f"[{_name(trial)}] reused from the teacher bank: {result['reused_from']} (not trained)")
            return
        self._say(f"[{_name(trial)}] finished" + _stopped(result))

    def on_trial_error(self, iteration, trials, trial, **info):
        log.get("progress").warning(f"[{_name(trial)}] FAILED (see the summary at the end)")


def _stopped(result: dict) -> str:
    """A chain that stopped by itself: after which generation, and why."""
    if result.get("stop_reason") != "no_improvement":
        return ""
    return (f": stopped after generation {int(result['generations_run'])} of {int(result['generations'])}, "
            f"{result.get('stop_metric')} did not improve")


def _name(trial) -> str:
    """A sweep trial's chain id, or a search trial's name with its values."""
    if "chain" in trial.config:
        return trial.config["chain"]["chain_id"]
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
    return f"{trial} {values}"
