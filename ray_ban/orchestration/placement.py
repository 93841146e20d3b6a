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


# Set while the sweep shuts Ray down (``stop_releasing``): a release thread then stops before its next Ray
# call, which on a shut-down driver would auto-start a new local Ray cluster (seen: the sweep's process then
# hung 60 s at exit and aborted, "Failed to connect to GCS").
_STOP = threading.Event()
_THREADS: list[threading.Thread] = []


def release_when_gone(actor, group_id: str, wait_s: float = 120.0) -> None:
    """Wait (bounded) for ``actor`` to exit, then remove the placement group ``group_id``.

    Waiting first matters: a live controller whose workers vanish would start a fresh group. Best
    effort, on a daemon thread; once ``stop_releasing`` is called it returns without calling Ray again
    (the groups end with the cluster)."""
    try:
        deadline = time.monotonic() + wait_s
        while actor is not None and time.monotonic() < deadline and not _STOP.is_set():
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=2)
            except ray.exceptions.RayActorError:
                break  # the trial's actor, and so its controller, is gone
            except ray.exceptions.GetTimeoutError:
                continue
            _STOP.wait(0.5)
        if not _STOP.is_set():
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))  # no-op if gone
    except Exception as error:  # noqa: BLE001 - a leaked group costs capacity, never correctness
        log.debug("could not release placement group %s: %s", group_id, error)


def stop_releasing(timeout_s: float = 10.0) -> None:
    """Before ``ray.shutdown``: end every release thread (each is within one bounded Ray call of its check),
    so none touches Ray afterwards; then let a later sweep in this process release again."""
    _STOP.set()
    deadline = time.monotonic() + timeout_s
    while _THREADS:
        _THREADS.pop().join(timeout=max(0.0, deadline - time.monotonic()))
    _STOP.clear()


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
        thread = threading.Thread(target=release_when_gone, args=(actor, group_id), daemon=True,
                                  name=f"release-{trial.trial_id}")
        _THREADS.append(thread)
        thread.start()
