"""The cluster path on real processes: a local autoscaling cluster (Ray's fake_multinode provider behind
a `ray start` head that offers no worker CPU) and job submission to its dashboard.

Marked ``cluster``: CI runs them (the README's test command runs everything); `pytest -m "not cluster"`
skips them locally. What they cost is in BENCHMARKS.md.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cluster_helpers import autoscaling_cluster
from sweep_helpers import ROOT, run_sweep

pytestmark = pytest.mark.cluster

SPACE = {
    "name": "scaled", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}


@pytest.fixture(scope="module")
def cluster():
    with autoscaling_cluster({"cpu_worker": ({"CPU": 2}, 1)}) as running:
        yield running


@pytest.fixture(scope="module")
def job_head():
    """A `ray start` head with 2 CPUs and its dashboard (the job server) on loopback."""
    with autoscaling_cluster({}, dashboard=True, head_cpus=2) as running:
        yield running


def test_a_sweep_on_an_autoscaling_cluster_scales_a_node_up_and_finishes(cluster, tmp_path):
    path = tmp_path / "scaled.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    audit = tmp_path / "audit"
    result = run_sweep(path, tmp_path / "runs", "--address", cluster.address, "--cluster-config",
                       str(cluster.config_path), env={**cluster.env, "RAY_BAN_AUDIT_DIR": str(audit)})
    assert result.returncode == 0, result.stdout + result.stderr
    # sized from the node types the autoscaler can launch, not from the 0 CPUs up at the start
    assert "the cluster can scale to 2 such chains at once" in result.stdout  # two 1-CPU workers per 2-CPU node
    assert "auto: no GPU per worker" in result.stdout
    rows = pq.read_table(tmp_path / "runs" / "scaled" / "results.parquet").to_pylist()
    assert sorted((r["role"], r["status"]) for r in rows) == [("student", "ok"), ("teacher", "ok")]
    nodes = {json.loads(p.read_text())["node_id"] for p in (audit / "placement").iterdir()}
    assert nodes and cluster.head_node_id() not in nodes  # the workers ran on a node the autoscaler launched


def test_a_chain_larger_than_every_node_type_exits_2_before_training(cluster, tmp_path):
    path = tmp_path / "scaled.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    started = time.monotonic()
    result = run_sweep(path, tmp_path / "runs", "--address", cluster.address, "--cluster-config",
                       str(cluster.config_path), "--cpus-per-worker", "3", env=cluster.env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no node type can hold them" in lines[0] and "largest node: 2 CPUs" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "scaled" / "models").exists()  # nothing trained
    assert time.monotonic() - started < 60


def _copy_of_the_checkout(folder: Path) -> Path:
    """What `ray job submit --working-dir` uploads: the package and the space files, no venv or data."""
    shutil.copytree(ROOT / "ray_ban", folder / "ray_ban", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "search_spaces", folder / "search_spaces")
    (folder / "scaled.yaml").write_text(yaml.safe_dump({**SPACE, "recipe": {**SPACE["recipe"], "epochs": 3},
                                                        "rows": [{**SPACE["rows"][0], "chains": {"ban": {
                                                            "loss": "ban", "generations": 2}}}]}))
    return folder


def _wait_for_status(cluster, job_id: str, wanted: set, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        reply = cluster.job("status", job_id)
        status = reply.stdout + reply.stderr
        for state in wanted:  # `ray job status` says e.g. "Job 'x' was stopped" / "Job 'x' succeeded"
            if state.lower() in status.lower():
                return state
        time.sleep(2)
    raise AssertionError(f"job {job_id} not in {wanted} after {timeout_s} s: {status}")


def test_a_submitted_sweep_stopped_and_resubmitted_after_a_code_change_resumes(job_head, tmp_path):
    cluster = job_head
    work = _copy_of_the_checkout(tmp_path / "checkout")
    storage = tmp_path / "storage"
    command = ["--", sys.executable, "-m", "ray_ban.sweep", "scaled.yaml", "--address", "auto", "--storage", str(storage),
               "--cluster-config", str(cluster.config_path)]
    first = cluster.job("submit", "--working-dir", str(work), "--no-wait", "--submission-id", "scaled-1", *command)
    assert first.returncode == 0, first.stdout + first.stderr
    models = storage / "scaled" / "models"
    deadline = time.monotonic() + 400
    asked = 0.0
    while time.monotonic() < deadline and not list(models.glob("*/summary.json")):
        # the files are looked at often; the job's status (a `ray job` process each time, with Ray's imports,
        # about half a second of CPU) only every 10 s, to stop waiting for a job that failed
        if time.monotonic() - asked > 10:
            asked = time.monotonic()
            status = cluster.job("status", "scaled-1")
            if "failed" in (status.stdout + status.stderr).lower():
                break
        time.sleep(0.5)
    stored = {p.parent.name: p.read_text() for p in models.glob("*/summary.json")}
    assert stored, cluster.job("logs", "scaled-1").stdout[-3000:]
    stopped = cluster.job("stop", "scaled-1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _wait_for_status(cluster, "scaled-1", {"STOPPED", "SUCCEEDED", "FAILED"}, 120)
    stored = {p.parent.name: p.read_text() for p in models.glob("*/summary.json")}

    (work / "ray_ban" / "__init__.py").write_text((work / "ray_ban" / "__init__.py").read_text()
                                                  + "\n# a change to the code: a new upload folder\n")
    second = cluster.job("submit", "--working-dir", str(work), "--submission-id", "scaled-2", *command, timeout=600)
    logs = cluster.job("logs", "scaled-2").stdout
    assert second.returncode == 0 and "succeeded" in (second.stdout + second.stderr).lower(), logs[-4000:]
    rows = pq.read_table(storage / "scaled" / "results.parquet").to_pylist()
    assert sorted((r["role"], r["status"]) for r in rows if r["role"] != "ensemble") == [
        ("student", "ok"), ("student", "ok"), ("teacher", "ok")]
    for key, summary in stored.items():  # no finished model was trained again
        assert (models / key / "summary.json").read_text() == summary, key
    assert "--overwrite" not in logs
