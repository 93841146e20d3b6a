"""The multi-seed CPU proof: BAN and BAN+L chains of the fast family on real CIFAR-10, through the real sweep.

Runs ``python -m ray_ban.sweep search_spaces/cifar10-resnet9.yaml --out OUT --overwrite`` (3 seeds of a
``resnet9-16`` teacher -> BAN-1 -> BAN-2 and BAN+L-1 -> BAN+L-2, two independent models per seed for
the fair ensemble), or reads a finished run with ``--from-run``; then writes the run's cells.parquet,
comparisons.parquet and per-model rows to benchmarks/results/cpu_proof.json, its report (``python -m
ray_ban.report``) and the README figure docs/figures/cifar10-resnet9-error_by_generation.png.

    python benchmarks/cpu_proof.py                                  # about 45-60 minutes on 2 shared cores
    python benchmarks/cpu_proof.py --from-run runs/cifar10-resnet9  # a run made by the command above
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's ray_ban for the report
import _common  # noqa: E402

SPACE = "search_spaces/cifar10-resnet9.yaml"
FIGURE = ROOT / "docs" / "figures" / "cifar10-resnet9-error_by_generation.png"
MODEL_COLUMNS = ["row", "chain", "role", "generation", "seed", "loss", "final_test_error", "agreement", "ece",
                 "wall_time_s", "members", "status", "device", "precision"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs")
    p.add_argument("--from-run", type=Path, help="a finished run folder (<out>/cifar10-resnet9): read, do not train")
    args = p.parse_args()
    command = [sys.executable, "-m", "ray_ban.sweep", SPACE, "--out", str(args.out), "--overwrite"]
    run = args.from_run
    timed = None
    if run is None:
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        timed = time.perf_counter() - started
        run = args.out / "cifar10-resnet9"
    # sweep.json is written when the sweep starts, results.parquet when it ends
    written = (run / "results.parquet").stat().st_mtime - (run / "sweep.json").stat().st_mtime
    subprocess.run([sys.executable, "-m", "ray_ban.report", str(run)], cwd=ROOT, check=True)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "error_by_generation.png", FIGURE)
    results = pq.read_table(run / "results.parquet")
    meta = results.schema.metadata or {}
    models = results.select([c for c in MODEL_COLUMNS if c in results.column_names]).to_pylist()
    path = _common.write_result("cpu_proof", {
        "settings": {"space": SPACE, "command": " ".join(command[1:]), "run": str(run)},
        "wall_seconds": timed, "sweep_json_to_results_seconds": written,
        "provenance": {k.decode(): v.decode() for k, v in meta.items() if k in (b"command", b"space_sha256", b"versions")},
        "table_md": (run / "table.md").read_text(),
        "cells": pq.read_table(run / "cells.parquet").to_pylist(),
        "comparisons": pq.read_table(run / "comparisons.parquet").to_pylist(),
        "models": models,
        "note": "2-core CPU machine shared with other agents' jobs (load average 6-15 during the run).",
    })
    print((run / "table.md").read_text())
    print(f"wrote {path} and {FIGURE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
