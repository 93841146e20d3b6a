"""The same smoke chain on one Ray node vs split over two nodes of a local cluster (issue 5).

Both layouts offer 2 CPUs in total: one node with 2 CPUs, or two nodes (``ray.cluster_utils``,
separate raylets on loopback) with 1 CPU each. The chain (``wrn-10-1`` teacher -> BAN-1, 2 epochs,
1024 synthetic images) runs with ``--workers 2 --cpus-per-worker 1``, so on two nodes its two
data-parallel workers sit on different nodes and talk over gloo through TCP; on one node they
share it. Reports the sweep's wall time in each layout and the ratio (two nodes / one node).

    .venv/bin/python benchmarks/multinode.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml
from ray.cluster_utils import Cluster

import _common

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "name": "nodes", "dataset": "synthetic", "seeds": [0], "train_subset": 1024, "test_subset": 500,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}


def timed_sweep(layout: str, folder: Path) -> float:
    """Start the layout's cluster, run the chain against it, return the sweep's wall seconds."""
    head_cpus = 2 if layout == "one node" else 1
    # Cluster writes its address under RAY_TMPDIR (default /tmp) whatever its temp_dir: keep it in this run's folder
    # while the nodes start (as tests/test_multinode.py does), not in the sweep's environment
    (folder / "ray").mkdir(parents=True, exist_ok=True)
    with mock.patch.dict(os.environ, {"RAY_TMPDIR": str(folder)}):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": head_cpus, "resources": {"chain_driver": 100}, "temp_dir": str(folder / "ray"),
            "include_dashboard": False})
        if layout == "two nodes":
            cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        space = folder / "nodes.yaml"
        space.write_text(yaml.safe_dump(SPACE))
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(space), "--out", str(folder / "runs"),
                                 "--address", cluster.address, "--workers", "2", "--cpus-per-worker", "1"],
                                capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
        return seconds
    finally:
        cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    runs: dict[str, list[float]] = {"one node": [], "two nodes": []}
    for r in range(args.rounds):
        for layout in (("one node", "two nodes") if r % 2 == 0 else ("two nodes", "one node")):
            with tempfile.TemporaryDirectory() as folder:
                runs[layout].append(timed_sweep(layout, Path(folder)))
            print(f"  round {r + 1} {layout:9s} {runs[layout][-1]:6.1f} s", flush=True)
    stats = {k: _common.summarise(v) for k, v in runs.items()}
    ratio = stats["two nodes"]["median"] / stats["one node"]["median"]
    print(_common.table(["layout", "wall s (median)", "min", "max"],
                        [[k, s["median"], s["min"], s["max"]] for k, s in stats.items()]))
    print(f"two nodes / one node: {ratio:.2f}")
    _common.write_result("multinode", {"settings": {"space": SPACE, "workers": 2, "cpus_per_worker": 1,
                                                    "rounds": args.rounds},
                                       "wall_s": stats, "ratio_two_over_one": ratio})


if __name__ == "__main__":
    main()
