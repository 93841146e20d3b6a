"""Concise terminal progress for a sweep: one line per chain event instead of Ray's raw output."""

from __future__ import annotations

import math
from typing import TextIO

from ray.tune import Callback

from .spaces import SweepPlan


class ChainProgress(Callback):
    """Prints 'chain gen k/K epoch e/E test error x%' per epoch, and one line per finish or failure."""

    def __init__(self, plan: SweepPlan, stream: TextIO):
        self.plan, self.stream = plan, stream
        self.epochs = plan.recipe.epochs

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment state; an open terminal stream is not data
        return {**self.__dict__, "stream": None}

    def _say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or result.get("done"):
            return
        config = trial.config["chain"]
        last_generation = config["trainings"][-1]["generation"]
        label = "gen0" if last_generation == 0 else f"gen {int(result['generation'])}/{last_generation}"
        extra = ""
        if not math.isnan(result.get("agreement", math.nan)):
            extra = f", agreement {result['agreement']:.1f}%"
        self._say(f"[{config['chain_id']}] {label} epoch {int(result['epoch'])}/{self.epochs}: "
                  f"loss {result['train_loss']:.3f}, test error {result['test_error']:.2f}%{extra}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(f"[{trial.config['chain']['chain_id']}] finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"[{trial.config['chain']['chain_id']}] FAILED (see the summary at the end)")
