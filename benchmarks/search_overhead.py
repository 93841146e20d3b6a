"""Scheduling overhead of a hyperparameter search of 16 tiny chains on this machine (issue 6).

One shared ``wrn-10-1`` teacher, then 16 trials (random search over lr and label weight, FIFO,
4 chains at once at 0.5 CPU per worker), each a BAN+L chain of 2 generations x 1 epoch on 1,024
synthetic images with 256 held out for validation. Reported: the search's wall time against the
sum of the chains' own training time (epochs and evaluation, the models' ``wall_time_s`` in
results.parquet), and the same with ASHA stopping chains early.

    .venv/bin/python benchmarks/search_overhead.py [fifo] [asha]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

import _common

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "name": "bench-search", "dataset": "synthetic", "seeds": [0], "train_subset": 1024, "test_subset": 400,
    "validation_size": 256, "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "rows": [{"row": "W", "teacher": "wrn-10-1", "chains": {"banl": {"loss": "ban+l", "generations": 2}}}],
    "search": {"space": {"lr": "loguniform:0.005:0.3", "label_weight": "uniform:0:1"}, "num_samples": 16},
}


def run(scheduler: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "space.yaml"
        path.write_text(yaml.safe_dump({**SPACE, "search": {**SPACE["search"], "scheduler": scheduler}}))
        started = time.perf_counter()
        log = Path(tempfile.gettempdir()) / f"search_overhead_{scheduler}.log"  # progress lines, to watch a long run
        with log.open("w") as out:
            result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", f"{folder}/runs",
                                     "--cpus-per-worker", "0.5"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, "RAY_ADDRESS": ""})
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(log.read_text()[-4000:])
        rows = pq.read_table(Path(folder) / "runs" / "bench-search" / "results.parquet").to_pylist()
    models = [r for r in rows if r["role"] != "ensemble" and r["status"] == "ok"]
    teacher = sum(r["wall_time_s"] for r in models if r["role"] == "teacher")
    chains = sum(r["wall_time_s"] for r in models if r["role"] == "student")
    trials = {r["trial"] for r in rows if r["trial"]}
    stopped = {r["trial"] for r in rows if r["trial"] and r["stopped"]}
    return {"scheduler": scheduler, "trials": len(trials), "stopped": len(stopped), "wall_s": wall,
            "teacher_training_s": teacher, "chain_training_s": chains, "models_trained": len(models),
            "wall_over_training": wall / (teacher + chains), "overhead_per_trial_s": (wall - teacher - chains) / len(trials)}


def main() -> None:
    results = []
    for scheduler in sys.argv[1:] or ("fifo", "asha"):
        r = run(scheduler)
        results.append(r)
        print(f"  {scheduler}: {r['trials']} trials ({r['stopped']} stopped), wall {r['wall_s']:.0f} s, training "
              f"{r['teacher_training_s'] + r['chain_training_s']:.0f} s", flush=True)
    print(_common.table(["scheduler", "trials", "stopped", "wall s", "sum of training s", "wall / training",
                         "overhead per trial s"],
                        [[r["scheduler"], r["trials"], r["stopped"], r["wall_s"],
                          r["teacher_training_s"] + r["chain_training_s"], r["wall_over_training"],
                          r["overhead_per_trial_s"]] for r in results]))
    _common.update_result("search_overhead", "runs", results, key="scheduler")


if __name__ == "__main__":
    main()
