"""Carries every chain's per-epoch reports from Train's controller to its Tune trial through one actor.

Tune's own ``TuneReportCallback`` starts a queue actor for every trial: one more Python process per
chain (Table 2's smoke sweep on two cores: 280-305 s with it, 241-254 s without; BENCHMARKS.md).
A sweep starts one ``ReportRelay`` instead;
each chain's controller puts its reports there under the trial's key, and the trial hands them to
Tune (``chain.chain_trial``) so schedulers act on them exactly as before.

The relay is no single point of failure: Ray restarts it if it dies (its process, or its node),
every put and take is bounded in time, and a failed one is dropped with a warning. Reports are
progress for schedulers and the terminal; results are read from the run store, so a lost report
costs a progress line, never a model.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import Any

import ray
from ray.train import UserCallback
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

RELAY_NAME = "ray_ban_report_relay"
PUT_TIMEOUT_S = 30.0  # a put (from Train's controller) waits at most this long for the relay
TAKE_GRACE_S = 30.0  # a take may run this much past its own wait before the trial gives up on it
FIT_ENDED = "ray_ban_fit_ended"  # the mark a trial puts after its run's last report (``chain.fit_reporting``)

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ReportRelay:
    """Per-key mailboxes of report dicts; ``take`` waits (bounded) for the next ones to arrive."""

    def __init__(self) -> None:
        self._mail: dict[str, list[dict]] = defaultdict(list)
        self._waiting: dict[str, asyncio.Event] = {}

    async def put(self, key: str, metrics: dict) -> None:
        self._mail[key].append(metrics)
        if key in self._waiting:
            self._waiting[key].set()

    async def take(self, key: str, timeout_s: float) -> list[dict]:
        """Everything reported under ``key`` since the last take, waiting up to ``timeout_s`` for some."""
        if not self._mail.get(key):
            arrived = self._waiting[key] = asyncio.Event()
            try:
                await asyncio.wait_for(arrived.wait(), timeout_s)
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(key, None)
        return self._mail.pop(key, [])


# The driver's handle to its relay, per Ray job (one ray.init), held for as long as that session lasts.
# Ray destroys a named actor once the handle that created it is gone (handles found by name, as
# get_if_exists returns for an existing actor, do not keep it alive). A sweep's own handle alone let the
# relay die between two sweeps of one process, and the next sweep's get_if_exists could be handed the
# dying relay ("Actor is permanently dead"); the creating handle is therefore kept here, never replaced
# by a found one.
_HELD: dict[str, Any] = {}


def start_relay():
    """The sweep's relay, created by the driver on the driver's node and held by it for the driver's Ray
    session (every sweep of that session shares it); restarted by Ray whenever it dies."""
    here = ray.get_runtime_context()
    relay = ReportRelay.options(name=RELAY_NAME, get_if_exists=True,
                                scheduling_strategy=NodeAffinitySchedulingStrategy(here.get_node_id(), soft=True)).remote()
    held = _HELD.get(here.get_job_id())
    if held is None or held._actor_id != relay._actor_id:  # new here, or a new relay (the last one died for good)
        _HELD.clear()  # a handle of an earlier session (before a ray.shutdown) is of no use
        _HELD[here.get_job_id()] = held = relay
    return held


def take(relay, key: str, wait_s: float) -> list[dict]:
    """The reports waiting under ``key`` (waiting up to ``wait_s``), or none if the relay cannot answer in time."""
    try:
        return ray.get(relay.take.remote(key, wait_s), timeout=wait_s + TAKE_GRACE_S)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError) as error:
        log.warning("report relay did not answer a take (%s); progress reports may be missing", type(error).__name__)
        return []


def mailbox(trial_id: str) -> tuple[Any, str]:
    """(relay, key) for one attempt of a trial: the sweep's relay, or a private one outside a sweep."""
    try:
        relay = ray.get_actor(RELAY_NAME)
    except ValueError:  # chain_trial used in someone else's Tuner: a relay of its own, like Tune's queue
        relay = ReportRelay.remote()
    return relay, f"{trial_id}/{uuid.uuid4().hex}"  # a retried trial never reads its last attempt's mail


def put(relay, key: str, metrics: dict) -> None:
    """Leave ``metrics`` under ``key``, waiting at most PUT_TIMEOUT_S; dropped with a warning if the relay cannot take it."""
    try:
        ray.get(relay.put.remote(key, metrics), timeout=PUT_TIMEOUT_S)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError) as error:
        log.warning("report relay did not take a report (%s); dropped", type(error).__name__)


class ReportToTrial(UserCallback):
    """Runs in Train's controller: each report of rank 0 goes to the trial's mailbox (the put is
    awaited, so every report is there before ``fit()`` returns)."""

    def __init__(self, relay, key: str) -> None:
        self._relay, self._key = relay, key

    def after_report(self, run_context, metrics: list[dict], checkpoint: Any | None) -> None:
        put(self._relay, self._key, dict(metrics[0]))
