"""Where a smoke sweep's wall time goes, and what running chains side by side buys (issue 8, 4-5).

1. Overhead vs generations: one chain (``wrn-10-1`` teacher -> BAN-1..G, 1 epoch each, 1024
   synthetic images) for G = 1, 2, 4. Each sweep's wall time is split into training (the models'
   own ``wall_time_s`` from results.parquet: epochs and evaluation) and the rest (process and Ray
   start-up, Tune and Train scheduling, worker start-up, checkpoints, results). The rest should not
   grow with G: a chain pays its Train start-up once, not per generation.
2. Concurrency: rows R0..R(N-1) with the same teacher (trained once) and one BAN generation each,
   N = 1, 2, 4 chains at once (0.5 CPU per worker), against N one-chain sweeps run one after
   another (N x the one-chain wall time).

    .venv/bin/python benchmarks/orchestration.py
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


def space(generations: int, chains: int) -> dict:
    rows = [{"row": f"R{i}", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": generations}}}
            for i in range(chains)]
    return {"name": "orch", "dataset": "synthetic", "seeds": [0], "train_subset": 1024, "test_subset": 500,
            "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05}, "columns": {"Teacher": "teacher"}, "rows": rows,
            "presets": {}}


def run(generations: int, chains: int, cpus_per_worker: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "orch.yaml"
        path.write_text(yaml.safe_dump(space(generations, chains)))
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", f"{folder}/runs",
                                 "--cpus-per-worker", str(cpus_per_worker)],
                                capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
        rows = pq.read_table(Path(folder) / "runs" / "orch" / "results.parquet").to_pylist()
        training = sum(r["wall_time_s"] or 0 for r in rows if r["role"] != "ensemble")
        models = sum(r["role"] != "ensemble" for r in rows)
        return {"generations": generations, "chains": chains, "wall_s": wall, "training_s": training,
                "models": models, "rest_s": wall - training}


def main() -> None:
    by_generations = []
    for g in (1, 2, 4):
        r = run(g, 1, 1.0)
        by_generations.append(r)
        print(f"  1 chain, {g} generation(s): wall {r['wall_s']:.1f} s, training {r['training_s']:.1f} s, "
              f"rest {r['rest_s']:.1f} s", flush=True)
    concurrency = []
    for n in (1, 2, 4):
        r = run(1, n, 0.5)
        concurrency.append(r)
        print(f"  {n} chain(s) at once: wall {r['wall_s']:.1f} s ({r['models']} models)", flush=True)
    one = concurrency[0]["wall_s"]
    for r in concurrency:
        r["serial_estimate_s"] = one * r["chains"]
        r["speedup_vs_serial"] = r["serial_estimate_s"] / r["wall_s"]
    growth = (by_generations[-1]["rest_s"] - by_generations[0]["rest_s"]) / 3
    print(_common.table(["generations", "wall s", "training s", "rest s"],
                        [[r["generations"], r["wall_s"], r["training_s"], r["rest_s"]] for r in by_generations]))
    print(f"rest grows by {growth:.1f} s per extra generation")
    print(_common.table(["chains", "wall s", "N x one-chain wall s", "speed-up"],
                        [[r["chains"], r["wall_s"], r["serial_estimate_s"], r["speedup_vs_serial"]] for r in concurrency]))
    _common.write_result("orchestration", {"by_generations": by_generations, "rest_growth_per_generation_s": growth,
                                           "concurrency": concurrency})


if __name__ == "__main__":
    main()
