"""Frees the Train placement group of a chain that Tune stopped or lost.

When Tune stops a trial (ASHA), it terminates the trial's actor and with it the Train controller that
owns the chain's placement group. A placement group outlives its creator actor until the whole job
ends (Ray issue #54305), so every early-stopped chain would keep its CPUs reserved and a search
stalls once they are all taken. Ray Train's own cleaner asks the State API, which needs the
dashboard, and local runs do not start one. Every chain reports its group's id with each epoch;
this Tune callback removes the group once the trial's actor is gone.
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, remove_placement_group

log = logging.getLogger(__name__)

GROUP_KEY = "placement_group"  # the metric that carries a chain's placement-group id (hex)


def current_group_id() -> str:
    """The id of the placement group this Train worker runs in ('' outside one)."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group is not None else ""


def release_when_gone(actor, group_id: str, wait_s: float = 120.0) -> None:
    """Wait (bounded) for ``actor`` to exit, then remove the placement group ``group_id``.

    Waiting first matters: a live controller whose workers vanish would start a fresh group. Best
    effort: it runs on a daemon thread, and Ray may already be shut down when it gets to act."""
    try:
        deadline = time.monotonic() + wait_s
        while actor is not None and time.monotonic() < deadline:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=2)
            except ray.exceptions.RayActorError:
                break  # the trial's actor, and so its controller, is gone
            except ray.exceptions.GetTimeoutError:
                continue
            time.sleep(0.5)
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))  # no-op if gone
    except Exception as error:  # noqa: BLE001 - a leaked group costs capacity, never correctness
        log.debug("could not release placement group %s: %s", group_id, error)


class ReleaseStoppedChains(Callback):
    """On a trial that ended without finishing its chain (stopped, or errored), free its group."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not (trial.last_result or {}).get("chain_complete"):
            self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    @staticmethod
    def _release(trial) -> None:
        group_id = (trial.last_result or {}).get(GROUP_KEY)
        if not group_id:
            return
        actor = trial.temporary_state.ray_actor  # still set: Tune calls back before it stops the actor
        threading.Thread(target=release_when_gone, args=(actor, group_id), daemon=True,
                         name=f"release-{trial.trial_id}").start()
