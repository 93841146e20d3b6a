"""The cluster path on a local autoscaling cluster: time from submission to the first worker node, and
the sweep's wall time against the same sweep on a fixed cluster of the same size.

Both clusters are Ray's fake_multinode provider behind a `ray start` head that offers no worker CPU
(tests/cluster_helpers.py): "autoscaling" has worker nodes of 1 CPU from zero up to 2, "fixed" the
same two nodes started before the sweep (min_workers = max_workers). The sweep is four trials (two
teachers, two BAN-1 chains, 1 epoch each on generated data), submitted as `python -m ray_ban.sweep
--address ...` from this process, which polls `ray.nodes()` every 0.25 s for the first worker node.

    python benchmarks/autoscaling.py [--repeats 2]   # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine_info, summarise, table, write_result  # noqa: E402
from cluster_helpers import autoscaling_cluster  # noqa: E402

SPACE = {
    "name": "scaling", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}},
             {"row": "B", "teacher": "densenet-10-4", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}


def first_worker_node(cluster, started: float, stop: threading.Event, found: list) -> None:
    """Poll the cluster's nodes from a subprocess driver; record seconds to the first alive worker node."""
    code = (f"import ray, time, sys; ray.init(address='{cluster.address}', logging_level='ERROR'); t0={started!r}\n"
            "while True:\n"
            "    if any(n['Alive'] and 'node:__internal_head__' not in n['Resources'] for n in ray.nodes()):\n"
            "        print(time.time() - t0); sys.stdout.flush(); break\n"
            "    time.sleep(0.25)\n")
    probe = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=cluster.tools)
    while probe.poll() is None and not stop.is_set():
        time.sleep(0.25)
    if probe.poll() is None:
        probe.kill()
    output = probe.stdout.read().strip()
    if output:
        found.append(float(output.splitlines()[-1]))


def one_sweep(kind: str, folder: Path) -> dict:
    worker_types = {"cpu_worker": ({"CPU": 1}, 2, 2 if kind == "fixed" else 0)}
    with autoscaling_cluster(worker_types) as cluster:
        if kind == "fixed":  # wait until both nodes are up, as a fixed cluster would be
            deadline = time.monotonic() + 120
            code = (f"import ray; ray.init(address='{cluster.address}', logging_level='ERROR'); "
                    "print('CPUS', ray.cluster_resources().get('CPU', 0))")
            while time.monotonic() < deadline:
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cluster.tools)
                found = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("CPUS ")]
                if found and float(found[-1]) >= 2:
                    break
                time.sleep(1)
        folder.mkdir(parents=True, exist_ok=True)
        space = folder / f"{kind}.yaml"
        space.write_text(yaml.safe_dump(SPACE))
        stop, found = threading.Event(), []
        started = time.time()
        watcher = threading.Thread(target=first_worker_node, args=(cluster, started, stop, found))
        watcher.start()
        result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(space), "--out", str(folder / kind),
                                 "--address", cluster.address, "--cluster-config", str(cluster.config_path)],
                                capture_output=True, text=True, cwd=ROOT, env=cluster.env, timeout=900)
        wall = time.time() - started
        stop.set()
        watcher.join()
        if result.returncode != 0:
            raise SystemExit(f"{kind} sweep failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
    return {"kind": kind, "wall_s": wall, "first_worker_node_s": found[0] if found else None,
            "start_line": next((l for l in result.stdout.splitlines() if "at once" in l), "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kinds", default="autoscaling,fixed", help="which clusters to run, comma-separated")
    parser.add_argument("--add-to", help="a previous results JSON whose runs this run extends")
    args = parser.parse_args()
    runs = json.loads(Path(args.add_to).read_text())["runs"] if args.add_to else []
    with tempfile.TemporaryDirectory(prefix="rb-scaling-") as folder:
        for repeat in range(args.repeats):
            for kind in args.kinds.split(","):
                run = one_sweep(kind, Path(folder) / f"r{repeat}")
                print(run, flush=True)
                runs.append({**run, "repeat": repeat})
    summary = {kind: {"wall_s": summarise([r["wall_s"] for r in runs if r["kind"] == kind]),
                      "first_worker_node_s": summarise([r["first_worker_node_s"] for r in runs
                                                         if r["kind"] == kind and r["first_worker_node_s"] is not None])}
               for kind in sorted({r["kind"] for r in runs})}
    path = write_result("autoscaling", {"machine": machine_info(), "space": SPACE, "runs": runs, "summary": summary})
    print(table(["cluster", "wall s (median)", "first worker node s (median)"],
                [[k, v["wall_s"]["median"], v["first_worker_node_s"].get("median")] for k, v in summary.items()]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
