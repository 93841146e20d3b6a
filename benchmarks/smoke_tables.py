"""Wall time of `python -m ray_ban.sweep tableN --preset smoke` for tables 1-6 on this machine.

Each sweep runs in a fresh process (Ray start-up included) into a temporary folder; the script
checks the results hold every row of the table and writes benchmarks/results/smoke_tables.json.

    .venv/bin/python benchmarks/smoke_tables.py [table1 table2 ...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import _common
from ray_ban import spaces

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    tables = sys.argv[1:] or ["table1", "table2", "table3", "table4", "table5", "table6"]
    rows = []
    for table in tables:
        plan = spaces.load(table, "smoke")
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", table, "--preset", "smoke", "--out", out],
                                    capture_output=True, text=True, cwd=ROOT)
            seconds = time.perf_counter() - started
            results = pq.read_table(Path(out) / plan.name / "results.parquet").to_pylist()
        rows_seen = {r["row"] for r in results} | {row for r in results for row in r["shared_by"]}
        rows.append({"table": table, "exit_code": result.returncode, "wall_s": round(seconds, 1),
                     "chains": len(plan.chains), "trainings": len(plan.trainings()), "result_rows": len(results),
                     "all_rows_present": set(plan.paper) <= rows_seen,
                     "all_ok": all(r["status"] == "ok" for r in results)})
        print(rows[-1], flush=True)
    _common.update_result("smoke_tables", "tables", rows, key="table")


if __name__ == "__main__":
    main()
