"""A real two-node Ray cluster on this machine: one chain's two data-parallel workers land on
different nodes (read from Ray's runtime context on each worker) and write to storage outside
Ray's own folders, and the results read back."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ray.cluster_utils import Cluster

from sweep_helpers import run_sweep

SPACE = {
    "name": "twonodes", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}


@pytest.fixture
def two_nodes(monkeypatch):
    """Two nodes without token authentication (as Ray's own Cluster starts them)."""
    # Ray's own folders, apart from the results' storage; short, as Ray's socket paths must stay under 108 bytes
    temp = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    # Cluster writes its address to <RAY_TMPDIR or /tmp>/ray/ray_current_cluster whatever its temp_dir: in the
    # machine's /tmp/ray it failed where that folder did not exist yet (a fresh machine), and elsewhere pointed
    # the user's own `ray.init()` at this test's cluster. RAY_AUTH_MODE: a local ray.init earlier in this
    # process turned token mode on in its environment (Ray 2.60 does for new local clusters)
    with monkeypatch.context() as scoped:
        scoped.setenv("RAY_TMPDIR", str(temp))
        scoped.setenv("RAY_AUTH_MODE", "disabled")
        (temp / "ray").mkdir()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "resources": {"chain_driver": 100}, "temp_dir": str(temp), "include_dashboard": False})
        worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, {cluster.head_node.node_id, worker.node_id}, temp
    cluster.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_a_chains_two_workers_run_on_two_nodes(two_nodes, tmp_path, monkeypatch):
    cluster, node_ids, ray_temp = two_nodes
    storage = tmp_path / "shared-storage"
    audit = tmp_path / "audit"
    path = tmp_path / "twonodes.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    # a token at hand (every local ray.init writes ~/.ray/auth_token) says nothing about this cluster, which has no
    # authentication: a driver that sent it anyway was never called back by the GCS, and every trial was cancelled
    token = tmp_path / "auth_token"
    token.write_text("0" * 64)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    result = run_sweep(path, storage, "--address", cluster.address, "--workers", "2", "--cpus-per-worker", "1",
                       env={"RAY_BAN_AUDIT_DIR": str(audit), "RAY_AUTH_TOKEN_PATH": str(token)})
    assert result.returncode == 0, result.stdout + result.stderr
    placements = [json.loads(p.read_text()) for p in (audit / "placement").iterdir()]
    chains = {}
    for placement in placements:  # one file per worker process
        chains.setdefault(placement["chain"], {})[placement["rank"]] = placement["node_id"]
    assert len(chains) == 2  # the teacher's trial and the BAN-1 chain, each on two ranks
    for ranks in chains.values():
        assert sorted(ranks) == [0, 1] and set(ranks.values()) == node_ids  # rank 0 and rank 1 on different nodes
    run = storage / "twonodes"
    assert not str(run).startswith(str(ray_temp)) and os.path.commonpath([run, ray_temp]) != str(run)
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert sorted((r["role"], r["status"]) for r in rows) == [("student", "ok"), ("teacher", "ok")]
    assert all((run / "predictions" / f"{r['model_key']}.arrow").is_file() for r in rows)
