"""Through Ray: Table 4's smoke sweep fills the teacher bank, then Table 5's smoke sweep trains no teacher.

Both smoke presets train the same teacher (``densenet-16-12`` on the same data and recipe; checked for the
whole presets in test_bank.py); each file here keeps one row of its table (``presets.smoke.rows``) so the
two sweeps fit in a few minutes on two cores."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import yaml

from ray_ban.config import spaces
from sweep_helpers import sweep_in_session


def one_row(tmp_path, table: str, row: str):
    raw = yaml.safe_load((spaces.SPACES_DIR / f"{table}.yaml").read_text())
    raw["presets"]["smoke"]["rows"] = [row]
    path = tmp_path / f"{table}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def rows_of(run) -> dict:
    return {(r["role"], r["row"] if r["role"] != "teacher" else None, r["chain"]): r
            for r in pq.read_table(run / "results.parquet").to_pylist()}


def test_table5_reuses_the_teacher_table4_put_in_the_bank(tmp_path, shared_ray):
    bank = tmp_path / "bank"
    first = sweep_in_session(shared_ray, one_row(tmp_path, "table4", "2xDepth"), tmp_path / "runs", "--preset", "smoke",
                      "--teachers", str(bank))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "reused from the teacher bank" not in first.stdout
    teacher = rows_of(tmp_path / "runs" / "table4")[("teacher", None, None)]
    assert teacher["status"] == "ok" and teacher["reused_from"] is None
    entries = [p.parent for p in bank.glob("*/complete.json")]
    assert [e.name for e in entries] == [f"{teacher['model_key']}.fp32"]  # the teacher only: students are not banked

    second = sweep_in_session(shared_ray, one_row(tmp_path, "table5", "BAN-Pre-ResNet-14-0.5"), tmp_path / "runs", "--preset", "smoke",
                       "--teachers", str(bank))
    assert second.returncode == 0, second.stdout + second.stderr
    reused_lines = [line for line in second.stdout.splitlines() if "reused from the teacher bank" in line]
    assert reused_lines == [f"[gen0.{teacher['model_key']}] reused from the teacher bank: {entries[0]} (not trained)"]
    assert f"[gen0.{teacher['model_key']}] gen0 epoch" not in second.stdout  # no epoch of it was trained
    rows = rows_of(tmp_path / "runs" / "table5")
    again = rows[("teacher", None, None)]
    assert again["model_key"] == teacher["model_key"] and again["reused_from"] == str(entries[0])
    assert again["final_test_error"] == teacher["final_test_error"] and again["wall_time_s"] == teacher["wall_time_s"]
    baseline = rows[("baseline", "BAN-Pre-ResNet-14-0.5", "baseline")]
    assert baseline["status"] == "ok" and baseline["reused_from"] is None  # trained here, then banked
    assert rows[("student", "BAN-Pre-ResNet-14-0.5", "ban")]["status"] == "ok"
    assert len(list(bank.glob("*/complete.json"))) == 2
    model = "models/{}/model.pt".format(teacher["model_key"])
    assert os.stat(tmp_path / "runs" / "table5" / model).st_ino == os.stat(tmp_path / "runs" / "table4" / model).st_ino
