"""`make demo`'s budget: the shipped demo space against the variants it replaced, each a real sweep.

Each variant is the shipped ``search_spaces/demo.yaml`` with a few keys changed, run as
``python -m ray_ban.sweep <variant> --out <tmp> --overwrite`` (Ray, Tune, Train, as `make demo` runs it)
and timed end to end; its cells and paired comparisons are read back from cells.parquet and
comparisons.parquet. Writes ``benchmarks/results/demo_budget.json``.

    python benchmarks/demo_budget.py                    # shipped, 10 epochs (the old demo), 30 epochs + independents
    python benchmarks/demo_budget.py --only shipped "30 epochs, 750"          # some of them
    python benchmarks/demo_budget.py --only "30 epochs, 1000 images, 5" --cpus-per-worker 1 0.5

``--cpus-per-worker`` values are run in turn (default 1, what `make demo` runs with).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "search_spaces" / "demo.yaml"


def variants(shipped: dict) -> dict[str, dict]:
    """The shipped space and the ones measured against it (what was changed, and why it was tried)."""
    def changed(seeds=None, train_subset=None, test_subset=None, epochs=None, independent=0) -> dict:
        space = copy.deepcopy(shipped)
        space.update({k: v for k, v in (("seeds", seeds), ("train_subset", train_subset), ("test_subset", test_subset))
                      if v is not None})
        space["recipe"]["epochs"] = epochs or space["recipe"]["epochs"]
        if independent:  # the fair ensemble: k independently trained models beside Teacher+BAN-1
            space["columns"][f"Independent x{independent}"] = f"ban/ind{independent}"
            space["rows"][0]["chains"]["ban"]["independent"] = independent
        return space

    return {
        "shipped": shipped,
        # the demo until 2026-12-02: 10 epochs, under-trained, the student trailing its teacher
        "10 epochs, 1500 images, 3 seeds, 2 independent": changed(3, 1500, epochs=10, independent=2),
        "30 epochs, 1000 images, 3 seeds, 2 independent": changed(3, 1000, independent=2),
        # the demo from 2026-12-02 to 2026-12-06: 150 s on an AMD EPYC machine, 223 s on an Intel Xeon one
        "30 epochs, 1000 images, 5 seeds": changed(5, 1000),
        # what was tried to bring it under 3 minutes on the slower machine
        "30 epochs, 750 images, 5 seeds": changed(5, 750),
        "20 epochs, 1000 images, 5 seeds": changed(5, 1000, epochs=20),
        "30 epochs, 500 images, 5 seeds": changed(5, 500),
        "30 epochs, 750 images, 500 test images, 5 seeds": changed(5, 750, test_subset=500),
    }


def run(name: str, space: dict, folder: Path, cpus_per_worker: float) -> dict:
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(folder / "runs"), "--overwrite",
                           "--cpus-per-worker", str(cpus_per_worker)], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    print(done.stdout[-1500:], flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    run_dir = folder / "runs" / "demo"
    cells = pq.read_table(run_dir / "cells.parquet").to_pylist()
    comparisons = pq.read_table(run_dir / "comparisons.parquet").to_pylist()
    return {"variant": f"{name}, {cpus_per_worker:g} CPU per worker", "cpus_per_worker": cpus_per_worker,
            "wall_s": wall, "seeds": space["seeds"], "train_subset": space["train_subset"],
            "epochs": space["recipe"]["epochs"], "trainings": sum(1 for r in pq.read_table(run_dir / "results.parquet").to_pylist()
                                                              if r["role"] != "ensemble"),
            "cells": cells, "comparisons": comparisons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run the variants whose names start with these (shipped, ...)")
    parser.add_argument("--cpus-per-worker", type=float, nargs="+", default=[1.0],
                        help="run each variant at these settings in turn (make demo runs at the default, 1)")
    args = parser.parse_args()
    shipped = yaml.safe_load(DEMO.read_text())
    runs = []
    for name, space in variants(shipped).items():
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        for cpus in args.cpus_per_worker:
            with tempfile.TemporaryDirectory(prefix="rb-demo-") as folder:
                runs.append(run(name, space, Path(folder), cpus))
            print(f"{runs[-1]['variant']}: {runs[-1]['wall_s']:.0f} s", flush=True)
    path = _common.update_result("demo_budget", "runs", runs, key="variant")
    for entry in runs:
        for c in entry["comparisons"]:
            if c["test"] == "paired_t":
                print(f"  {entry['variant']}: {c['a']} - {c['b']}: {c['mean_diff']:+.2f} "
                      f"({c['ci_low']:+.2f} to {c['ci_high']:+.2f}), p {c['p_value']:.3g}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
