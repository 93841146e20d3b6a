"""Wall time of `python -m ray_ban.sweep tableN --preset smoke` for tables 1-6 on this machine.

Each sweep runs in a fresh process (Ray start-up included) into a temporary folder; the script
checks the results hold every row of the table and writes benchmarks/results/smoke_tables.json.
With ``--rounds N`` each table runs N times and its wall time is the median (this small shared
machine varies by 10-15% from run to run).

    .venv/bin/python benchmarks/smoke_tables.py [--rounds N] [table1 table2 ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import _common
from ray_ban.config import spaces

ROOT = Path(__file__).resolve().parents[1]


def run_once(table: str, plan) -> dict:
    """One fresh smoke sweep of ``table``: its wall time and what its results hold."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", table, "--preset", "smoke", "--out", out],
                                check=False, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        results = pq.read_table(Path(out) / plan.name / "results.parquet").to_pylist()
    rows_seen = {r["row"] for r in results} | {row for r in results for row in r["shared_by"]}
    return {"exit_code": result.returncode, "wall_s": round(seconds, 1), "result_rows": len(results),
            "all_rows_present": set(plan.paper) <= rows_seen, "all_ok": all(r["status"] == "ok" for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", default=["table1", "table2", "table3", "table4", "table5", "table6"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for table in args.tables:
        plan = spaces.load(table, "smoke")
        runs = [run_once(table, plan) for _ in range(args.rounds)]
        for run in runs:
            print(table, run, flush=True)
        rows.append({"table": table, "exit_code": max(r["exit_code"] for r in runs),
                     "wall_s": round(statistics.median(r["wall_s"] for r in runs), 1),
                     "wall_s_runs": [r["wall_s"] for r in runs],
                     "chains": len(plan.chains), "trainings": len(plan.trainings()),
                     "result_rows": runs[-1]["result_rows"],
                     "all_rows_present": all(r["all_rows_present"] for r in runs),
                     "all_ok": all(r["all_ok"] for r in runs)})
    _common.update_result("smoke_tables", "tables", rows, key="table")


if __name__ == "__main__":
    main()
