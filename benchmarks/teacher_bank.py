"""What the teacher bank saves: Table 5's smoke sweep after Table 4's filled the bank, against the same sweep
with an empty bank (so it trains its own DenseNet teacher).

Both files keep one row of their table (as tests/test_bank_sweeps.py does), so three sweeps fit in a few
minutes on two cores. Writes the three wall times, the teacher's own training time and what each sweep
trained to ``benchmarks/results/teacher_bank.json``.

    python benchmarks/teacher_bank.py
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
from ray_ban.config import spaces  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one_row(folder: Path, table: str, row: str) -> Path:
    raw = yaml.safe_load((spaces.SPACES_DIR / f"{table}.yaml").read_text())
    raw["presets"]["smoke"]["rows"] = [row]
    path = folder / f"{table}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sweep(space: Path, out: Path, bank: Path) -> dict:
    """One smoke sweep with ``bank``: its wall time and, per model, whether it was trained or reused."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(space), "--preset", "smoke", "--out", str(out),
                             "--teachers", str(bank)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
    rows = pq.read_table(out / space.stem / "results.parquet").to_pylist()
    models = [{"role": r["role"], "row": r["row"], "chain": r["chain"], "model_key": r["model_key"],
               "wall_time_s": r["wall_time_s"], "reused_from": r["reused_from"]} for r in rows if r["role"] != "ensemble"]
    return {"sweep_wall_s": round(seconds, 1), "models": models}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        table4, table5 = one_row(folder, "table4", "2xDepth"), one_row(folder, "table5", "BAN-Pre-ResNet-14-0.5")
        filled = sweep(table4, folder / "runs-a", folder / "bank")
        reused = sweep(table5, folder / "runs-a", folder / "bank")
        alone = sweep(table5, folder / "runs-b", folder / "empty-bank")
    teacher = next(m for m in reused["models"] if m["role"] == "teacher")
    payload = {
        "what": "table5 smoke (one row) after table4 smoke filled the teacher bank, against the same sweep with an "
                "empty bank",
        "table4_fills_bank": filled, "table5_with_bank": reused, "table5_empty_bank": alone,
        "teacher_reused": teacher["reused_from"] is not None,
        "teacher_training_s": teacher["wall_time_s"],
        "saved_s": round(alone["sweep_wall_s"] - reused["sweep_wall_s"], 1),
        "machine": _common.machine_info(),
    }
    print(f"table5 with the bank {reused['sweep_wall_s']} s, with an empty bank {alone['sweep_wall_s']} s; "
          f"the teacher's own training {teacher['wall_time_s']:.1f} s, reused: {payload['teacher_reused']}")
    _common.write_result("teacher_bank", payload)


if __name__ == "__main__":
    main()
