"""The report relay on a real Ray runtime: what a chain's controller puts, its trial takes, in order."""

import os
import signal
import tempfile
import time

import pytest
import ray

from ray_ban.orchestration.chain import fit_reporting
from ray_ban.orchestration.relay import ReportToTrial, mailbox, start_relay
from processes import own_processes_titled, wait_until_gone


@pytest.fixture(scope="module")
def local_ray(shared_ray):
    """A Ray session of this module's own (it kills the relay for good): the shared one is stopped first."""
    shared_ray.stop()
    with tempfile.TemporaryDirectory(prefix="rb-relay-") as folder:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=folder)
        try:
            yield
        finally:
            ray.shutdown()


@ray.remote(num_cpus=0)
def report_from_another_process(callback: ReportToTrial, epochs: list[int]) -> None:
    for epoch in epochs:  # as Train's controller does after each report of the workers
        callback.after_report(None, [{"epoch": epoch}, {"epoch": -1}], None)


def test_a_trial_takes_its_own_reports_in_order_and_a_take_wakes_when_they_arrive(local_ray):
    relay = start_relay()
    found, key = mailbox("trial_a")
    assert found._actor_id == relay._actor_id  # trials find the sweep's relay by name
    _, other_key = mailbox("trial_b")
    assert mailbox("trial_a")[1] != key  # each attempt of a trial has its own mailbox

    started = time.monotonic()
    assert ray.get(relay.take.remote(key, 0.5)) == []  # nothing yet: waits the timeout, then empty
    assert time.monotonic() - started >= 0.45

    started = time.monotonic()
    waiting = relay.take.remote(key, 120.0)
    ray.get(report_from_another_process.remote(ReportToTrial(relay, key), [1, 2, 3]))
    first = ray.get(waiting)
    assert time.monotonic() - started < 60  # woken by the put, not by the 120 s timeout
    rest = ray.get(relay.take.remote(key, 0.1))
    assert [m["epoch"] for m in first + rest] == [1, 2, 3]  # rank 0's metrics only, none lost or repeated
    assert ray.get(relay.take.remote(key, 0.1)) == []
    assert ray.get(relay.take.remote(other_key, 0.1)) == []


class RunThatReports:
    """The part of a Train run that ``fit_reporting`` uses: ``fit()``, whose reports reach the relay from
    another process (as the controller's do) before it returns, or raises."""

    def __init__(self, relay, key: str, epochs: list[int], error: Exception | None = None):
        self.relay, self.key, self.epochs, self.error = relay, key, epochs, error

    def fit(self) -> None:
        ray.get(report_from_another_process.remote(ReportToTrial(self.relay, self.key), self.epochs))
        if self.error is not None:
            raise self.error


def test_a_trial_hands_on_every_report_and_ends_as_soon_as_its_run_does(local_ray):
    relay = start_relay()
    _, key = mailbox("trial_c")
    reported = []
    started = time.monotonic()
    fit_reporting(RunThatReports(relay, key, [1, 2, 3]), relay, key, poll_s=20.0, report=reported.append)
    assert [m["epoch"] for m in reported] == [1, 2, 3]
    # woken by the run's end: polling alone would wait out a 20 s take after the last report, then another
    assert time.monotonic() - started < 10
    assert ray.get(relay.take.remote(key, 0.1)) == []  # nothing left behind, the end mark included

    _, key = mailbox("trial_d")
    reported.clear()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="worker group failed"):
        fit_reporting(RunThatReports(relay, key, [1], RuntimeError("worker group failed")), relay, key, poll_s=20.0,
                      report=reported.append)
    assert [m["epoch"] for m in reported] == [1] and time.monotonic() - started < 10


def relay_process() -> int:
    """The pid of this session's one relay (its worker retitles itself ``ray::ReportRelay``)."""
    found = own_processes_titled("ray::ReportRelay")
    assert len(found) == 1, found
    return found[0]


def test_the_relay_survives_its_own_death_and_bounded_calls_never_hang(local_ray):
    from ray_ban.orchestration.relay import take

    relay = start_relay()
    callback = ReportToTrial(relay, "trial_c/1")
    callback.after_report(None, [{"epoch": 1}], None)
    # its process dies (as on a lost node), and is gone before the next report: ray.kill only asks the GCS to kill
    # it, so a report and a take sent right after could still reach the old relay (seen in CI: [1, 2] taken)
    doomed = relay_process()
    os.kill(doomed, signal.SIGKILL)
    wait_until_gone(doomed, 30)
    callback.after_report(None, [{"epoch": 2}], None)  # waits (bounded) for the restarted relay, never raises
    deadline, early = time.monotonic() + 180, None
    while early is None and time.monotonic() < deadline:  # the restarted relay answers (a call in flight at the
        try:  # moment of the restart may fail once)
            early = ray.get(relay.take.remote("trial_c/1", 0.1), timeout=30)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            time.sleep(0.5)
    assert early is not None, "the relay did not come back"
    assert [m["epoch"] for m in early] in ([2], [])  # mail held before the death is lost; epoch 2 unless dropped
    assert relay_process() != doomed  # Ray restarted it in a new process
    callback.after_report(None, [{"epoch": 3}], None)
    assert [m["epoch"] for m in take(relay, "trial_c/1", 0.5)] == [3]
    found, _ = mailbox("trial_c")
    assert found == relay  # the sweep's name still finds it

    last = relay_process()
    ray.kill(relay, no_restart=True)  # gone for good: puts and takes give up in bounded time
    wait_until_gone(last, 30)
    started = time.monotonic()
    callback.after_report(None, [{"epoch": 4}], None)
    assert take(relay, "trial_c/1", 0.1) == []
    assert time.monotonic() - started < 70


def test_the_relay_outlives_the_handles_of_the_sweep_that_started_it(local_ray):
    """A sweep drops its handle when it ends, and the next sweep in the same process (``ray_ban.run`` twice,
    the tests' shared session) starts at once. A named actor no handle holds is destroyed by Ray (out of
    scope), so ``get_if_exists`` could hand the next sweep a dying relay whose puts and takes then all
    failed ("Actor is permanently dead"; seen as this file's restart test failing). The driver holds it."""
    import gc

    from ray_ban.orchestration.relay import RELAY_NAME

    relay = start_relay()
    ray.get(report_from_another_process.remote(ReportToTrial(relay, "trial_d/1"), [1]), timeout=60)  # a borrower too
    del relay
    gc.collect()
    time.sleep(3.0)  # Ray's out-of-scope clean-up has landed by now
    survivor = ray.get_actor(RELAY_NAME)  # raised ValueError: the name was freed with the actor
    assert [m["epoch"] for m in ray.get(survivor.take.remote("trial_d/1", 0.1), timeout=30)] == [1]
    assert start_relay() == survivor  # the next sweep gets that same, live relay
