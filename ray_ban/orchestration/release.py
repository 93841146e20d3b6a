"""One scheduling pass over a sweep: each chain's trial is released as soon as its own teacher is stored.

A sweep used to train every generation-0 model (teachers and label-only baselines) in one Tune run
and the chains in a second, so Table 5's slowest baseline held back every student while GPUs idled.
``TeacherFirst`` is a Tune ``Searcher`` over the sweep's trial configs, generation-0 models first:
``suggest`` hands out the first config whose teacher has settled (trained in this sweep, or already
in the store) and answers "not yet" while only blocked chains are left. A shared teacher is one
generation-0 trial, so it is still trained once; a chain whose teacher failed is released too, and
its trial reports the teacher's failure without training.
"""

from __future__ import annotations

from typing import Optional

from ray.tune.search import Searcher


def needs(config: dict) -> Optional[str]:
    """The model key a trial config must wait for: its chain's teacher (None for generation 0)."""
    teachers = config.get("teachers") or []
    return teachers[0]["key"] if teachers else None


class TeacherFirst(Searcher):
    """Suggests the sweep's trial configs in order, each once the model it distils from has settled."""

    def __init__(self, configs: list[dict], settled: set[str]):
        super().__init__()
        self._pending = list(configs)
        self._settled = set(settled)  # keys trained (or failed) in this sweep, or found in the store
        self._live: dict[str, dict] = {}

    def suggest(self, trial_id: str) -> Optional[dict]:
        if not self._pending:
            return Searcher.FINISHED
        for index, config in enumerate(self._pending):
            wanted = needs(config)
            if wanted is None or wanted in self._settled:
                self._live[trial_id] = self._pending.pop(index)
                return {"chain": self._live[trial_id]}
        return None  # only chains whose teachers are still training: Tune asks again later

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        config = self._live.pop(trial_id, None)
        if config is not None:
            self._settled.update(t["key"] for t in config["trainings"])

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the configs are fixed; Tune's metric and mode do not steer this searcher

    def save(self, checkpoint_path: str) -> None:  # a restored sweep recomputes what is settled from the store
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass
