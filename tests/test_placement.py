"""Releasing a stopped chain's placement group never outlives the sweep's Ray session: a release thread
that called Ray after ``ray.shutdown`` auto-started a second local cluster, and the sweep's process then
hung 60 s at exit and aborted (seen in CI as the ASHA search test's exit code 1)."""

import tempfile
import threading
import time

import ray

from ray_ban.orchestration import placement


@ray.remote(num_cpus=0)
class Trial:
    """Stands for a trial's actor that is still alive when the sweep ends."""

    def ping(self) -> bool:
        return True


def test_release_threads_stop_before_shutdown_and_never_restart_ray(own_ray):
    with tempfile.TemporaryDirectory(prefix="rb-placement-") as folder:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=folder)
        try:
            actor = Trial.remote()
            ray.get(actor.ping.remote())
            group = ray.util.placement_group([{"CPU": 0.01}])
            ray.get(group.ready())
            thread = threading.Thread(target=placement.release_when_gone, args=(actor, group.id.hex()), daemon=True)
            placement._THREADS.append(thread)
            thread.start()
            time.sleep(1.0)  # the thread is polling the live actor
            started = time.monotonic()
            placement.stop_releasing()
            assert not thread.is_alive() and time.monotonic() - started < 10
        finally:
            ray.shutdown()
        time.sleep(3.0)  # long enough for a thread still polling to have called Ray again
        assert not ray.is_initialized(), "a release thread started a new Ray cluster after shutdown"
    # and the next sweep in this process releases again
    assert not placement._STOP.is_set() and placement._THREADS == []
