"""A local autoscaling Ray cluster that a test owns: Ray's fake_multinode provider behind a `ray start` head.

The head offers no CPU (only the ``chain_driver`` resource that chain drivers take), so every Train
worker needs a node the autoscaler launches; worker types scale from zero. The whole autoscaler
config is written here (the 2.60 wheel lacks fake_multi_node/example.yaml). The head runs in its own
process group under ``setsid`` and owns its raylets and the nodes its autoscaler launches: the test
ends exactly those, with SIGTERM to the group and SIGKILL after a grace period, never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def autoscaler_config(port: int, worker_types: dict, head_cpus: int = 0) -> dict:
    """The whole fake_multinode autoscaler config: a head with no CPU and ``worker_types``
    (name -> (resources, max_workers[, min_workers]); from zero unless min_workers says otherwise)."""
    types = {"ray.head.default": {"resources": {"CPU": head_cpus, "chain_driver": 100}, "node_config": {}, "max_workers": 0}}
    for name, (resources, max_workers, *min_workers) in worker_types.items():
        types[name] = {"resources": resources, "node_config": {}, "min_workers": min_workers[0] if min_workers else 0,
                       "max_workers": max_workers}
    return {
        "cluster_name": "ray-ban-test", "max_workers": sum(spec[1] for spec in worker_types.values()),
        "upscaling_speed": 10, "idle_timeout_minutes": 1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"},
        "auth": {}, "docker": {}, "available_node_types": types, "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@dataclass
class LocalCluster:
    address: str  # host:port of the GCS
    dashboard: Optional[str]  # http://127.0.0.1:D when started with a dashboard
    config_path: Path  # the autoscaler YAML (what --cluster-config takes)
    temp_dir: Path
    started_at: float
    env: dict  # the environment a sweep's driver gets: the token's path, not the auth mode
    tools: dict  # the environment Ray's own commands (ray job, probes) need: RAY_AUTH_MODE=token too

    def head_node_id(self) -> str:
        """The head's Ray node id (the node no Train worker may land on: it offers no CPU)."""
        code = (f"import ray; ray.init(address='{self.address}'); "
                "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and 'node:__internal_head__' in n['Resources']][0])")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=True, env=self.tools).stdout.split()[-1]

    def job(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``ray job ARGS`` against this head's dashboard."""
        return subprocess.run([RAY, "job", *args[:1], "--address", self.dashboard, *args[1:]], capture_output=True,
                              text=True, timeout=timeout, env=self.tools)


def _wait_for_head(address: str, env: dict, deadline: float, head: subprocess.Popen, log: Path) -> None:
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited {head.returncode}: {log.read_text()[-3000:]}")
        probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}'); ray.shutdown()"],
                               capture_output=True, text=True, env=env, timeout=60)
        if probe.returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"the head at {address} did not come up: {probe.stderr[-2000:]} {log.read_text()[-2000:]}")


@contextlib.contextmanager
def autoscaling_cluster(worker_types: dict, dashboard: bool = False, head_cpus: int = 0) -> Iterator[LocalCluster]:
    """Start the head (and its autoscaler) in a process group of its own; end exactly that group after.

    ``head_cpus`` > 0 with no worker types is a fixed one-node cluster (a job-submission target: fake
    nodes share the head's session folder, where each node's runtime-env agent unpacks a job's
    working_dir again under the processes already running in it)."""
    temp = Path(tempfile.mkdtemp(prefix="rb-as-", dir="/tmp"))  # short: Ray's socket paths stay under 108 bytes
    port = free_port()
    config_path = temp / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(autoscaler_config(port, worker_types, head_cpus)))
    # Token authentication on, with a token of the test's own (Ray 2.60 heads turn it on when a token exists):
    # drivers must find it by RAY_AUTH_TOKEN_PATH alone, as ray-ban's sweep does; Ray's own tools need the mode too
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}, "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    tools = {**env, "RAY_AUTH_MODE": "token"}
    command = [RAY, "start", "--head", "--block", "--port", str(port),
               "--num-cpus", str(head_cpus), "--resources", '{"chain_driver": 100}', "--autoscaling-config", str(config_path),
               "--temp-dir", str(temp / "ray")]
    dashboard_url = None
    if dashboard:
        dashboard_port = free_port()
        command += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port",
                    str(dashboard_port), "--dashboard-agent-listen-port", str(free_port())]
        dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    else:
        command += ["--include-dashboard", "false"]
    log = temp / "head.log"
    started = time.monotonic()
    with open(log, "w") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=tools, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        _wait_for_head(address, tools, time.monotonic() + 120, head, log)
        yield LocalCluster(address, dashboard_url, config_path, temp, started, env, tools)
    finally:
        _end_group(head)
        shutil.rmtree(temp, ignore_errors=True)


def _end_group(head: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGTERM the head's process group (its raylets and launched nodes), SIGKILL what is left after grace_s.

    The grace is short: nothing of the cluster is read after it ends (its folder is removed next), and
    ``ray start --block`` stops its processes one by one with timeouts of their own: an idle head had not
    exited 10 s after SIGTERM here, while the test's worker sat idle (``benchmarks/cluster_teardown.py``)."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        head.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=5)
