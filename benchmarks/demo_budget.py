"""`make demo`'s budget: the shipped demo space against the variants it replaced, each a real sweep.

Each variant is the shipped ``search_spaces/demo.yaml`` with a few keys changed, run as
``python -m ray_ban.sweep <variant> --out <tmp> --overwrite`` (Ray, Tune, Train, as `make demo` runs it)
and timed end to end; its cells and paired comparisons are read back from cells.parquet and
comparisons.parquet. Writes ``benchmarks/results/demo_budget.json``.

    python benchmarks/demo_budget.py                    # shipped, 10 epochs (the old demo), 30 epochs + independents
    python benchmarks/demo_budget.py --only shipped
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
    old = copy.deepcopy(shipped)  # the demo before: 10 epochs on 1,500 images, 3 seeds, two independent models
    old.update(seeds=3, train_subset=1500)
    old["recipe"]["epochs"] = 10
    old["columns"]["Independent x2"] = "ban/ind2"
    old["rows"][0]["chains"]["ban"]["independent"] = 2
    with_independent = copy.deepcopy(old)  # 30 epochs on 1,000 images, still with the fair ensemble
    with_independent["train_subset"] = 1000
    with_independent["recipe"]["epochs"] = 30
    return {"shipped": shipped, "10 epochs, 1500 images, 3 seeds, 2 independent": old,
            "30 epochs, 1000 images, 3 seeds, 2 independent": with_independent}


def run(name: str, space: dict, folder: Path) -> dict:
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(folder / "runs"), "--overwrite"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    print(done.stdout[-1500:], flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    run_dir = folder / "runs" / "demo"
    cells = pq.read_table(run_dir / "cells.parquet").to_pylist()
    comparisons = pq.read_table(run_dir / "comparisons.parquet").to_pylist()
    return {"variant": name, "wall_s": wall, "seeds": space["seeds"], "train_subset": space["train_subset"],
            "epochs": space["recipe"]["epochs"], "trainings": sum(1 for r in pq.read_table(run_dir / "results.parquet").to_pylist()
                                                              if r["role"] != "ensemble"),
            "cells": cells, "comparisons": comparisons}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run one variant (shipped, ...) instead of all")
    args = parser.parse_args()
    shipped = yaml.safe_load(DEMO.read_text())
    runs = []
    for name, space in variants(shipped).items():
        if args.only and not name.startswith(args.only):
            continue
        with tempfile.TemporaryDirectory(prefix="rb-demo-") as folder:
            runs.append(run(name, space, Path(folder)))
        print(f"{name}: {runs[-1]['wall_s']:.0f} s", flush=True)
    path = _common.update_result("demo_budget", "runs", runs, key="variant")
    for entry in runs:
        for c in entry["comparisons"]:
            if c["test"] == "paired_t":
                print(f"  {entry['variant']}: {c['a']} - {c['b']}: {c['mean_diff']:+.2f} "
                      f"({c['ci_low']:+.2f} to {c['ci_high']:+.2f}), p {c['p_value']:.3g}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
