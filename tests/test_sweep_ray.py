"""Real sweeps on a real local Ray runtime: shared teachers trained once, results read back with
pyarrow, ensembles from stored predictions, resume without retraining. (Data-parallel chains and
non-finite losses are in test_reliability.py's fault test.)"""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep_helpers import sweep_in_session



def test_results_hold_every_model_and_ensemble(finished_sweep):
    folder, _, result, _ = finished_sweep
    table = pq.read_table(folder / "runs" / "shared" / "results.parquet")
    rows = table.to_pylist()
    roles = sorted((r["row"], r["chain"] or "", r["role"], r["generation"]) for r in rows)
    assert roles == sorted([
        ("A", "", "teacher", 0), ("A", "ban", "student", 1), ("A", "ban", "student", 2), ("A", "ban/ens2", "ensemble", 2),
        ("A", "banl", "student", 1), ("B", "ban", "student", 1), ("B", "base", "baseline", 0)])
    assert all(r["status"] == "ok" for r in rows)
    assert all(0 <= r["final_test_error"] <= 100 and r["best_test_error"] <= r["final_test_error"] for r in rows)
    students = [r for r in rows if r["role"] == "student"]
    assert all(r["agreement"] is not None and r["epochs"] == 2 and r["teacher_key"] for r in students)
    assert {"sweep", "row", "role", "generation", "architecture", "parameters", "loss", "seed", "dataset", "preset",
            "epochs", "final_test_error", "best_test_error", "test_loss", "agreement", "wall_time_s", "config"} <= set(table.column_names)
    teacher = next(r for r in rows if r["role"] == "teacher")
    assert teacher["shared_by"] == ["A", "B"] and json.loads(teacher["config"])["training"]["architecture"] == "densenet-10-4"
    table_md = (folder / "runs" / "shared" / "table.md").read_text()
    assert "| A |" in table_md and "(9.0)" in table_md and "(11.5)" in table_md
    assert "[A.ban.seed0] gen 2/2 epoch 2/2" in result.stdout  # concise progress, one line per event


def test_the_shared_teacher_was_trained_once(finished_sweep):
    folder, *_ = finished_sweep
    run = folder / "runs" / "shared"
    teacher_dirs = [p for p in (run / "models").iterdir() if "-label-" in p.name and p.name.startswith("densenet")]
    assert len(teacher_dirs) == 1
    history = json.loads((teacher_dirs[0] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # two epochs, trained once, never repeated
    trials = sorted(p.name for p in (run / "ray" / "sweep").iterdir() if p.is_dir() and p.name.startswith("gen0."))
    assert trials == sorted(["gen0." + teacher_dirs[0].name, *[f"gen0.{p.name}" for p in (run / "models").iterdir() if p.name.startswith("wrn")]])


def test_ensembles_are_computed_from_stored_fp16_predictions(finished_sweep):
    folder, *_ = finished_sweep
    run = folder / "runs" / "shared"
    rows = pq.read_table(run / "results.parquet").to_pylist()
    members = [r for r in rows if r["row"] == "A" and r["chain"] == "ban"]
    assert len(members) == 2
    import torch

    from ray_ban.core import metrics
    from ray_ban.store import RunStore

    store = RunStore(run)
    logits = [store.load_predictions(r["model_key"]) for r in sorted(members, key=lambda r: r["generation"])]
    with pa.memory_map(str(store.prediction_path(members[0]["model_key"]))) as source:
        assert pa.ipc.open_file(source).schema.field("logits").type.value_type == pa.float16()
    ensemble = next(r for r in rows if r["role"] == "ensemble")
    expected = metrics.error_rate(metrics.ensemble_logits([l for l, _ in logits]), logits[0][1])
    assert ensemble["final_test_error"] == pytest.approx(expected)
    assert ensemble["members"] == [1, 2]
    for member in members:
        stored_error = store.summary(member["model_key"])["final_test_error"]
        assert metrics.error_rate(*store.load_predictions(member["model_key"])) == pytest.approx(stored_error, abs=0.51)
        assert torch.isfinite(logits[0][0]).all()


def test_rerunning_with_resume_trains_nothing_again(finished_sweep, shared_ray):
    folder, space, _, first_duration = finished_sweep
    run = folder / "runs" / "shared"
    finished = {p.name: json.loads((p / "summary.json").read_text())["finished_at"] for p in (run / "models").iterdir()}
    result = sweep_in_session(shared_ray, space, folder / "runs", "--resume")
    assert result.returncode == 0, result.stderr
    after = {p.name: json.loads((p / "summary.json").read_text())["finished_at"] for p in (run / "models").iterdir()}
    assert after == finished
    assert "epoch" not in result.stdout  # no training events at all
    assert pq.read_table(run / "results.parquet").num_rows == 7  # no duplicate rows


NO_BARRIER = {
    "name": "nobarrier", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1", "Slow": "slow/0"},
    "rows": [
        {"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}}},
        # an unrelated, much slower label-only baseline: no chain's teacher
        {"row": "B", "recipe": {"epochs": 40}, "chains": {"slow": {"baseline": True, "student": "wrn-10-1"}}},
    ],
}


def test_a_chain_trains_while_an_unrelated_slower_baseline_is_still_training(tmp_path, shared_ray):
    import yaml

    path = tmp_path / "nobarrier.yaml"
    path.write_text(yaml.safe_dump(NO_BARRIER))
    result = sweep_in_session(shared_ray, path, tmp_path / "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = pq.read_table(tmp_path / "runs" / "nobarrier" / "results.parquet").to_pylist()
    models = tmp_path / "runs" / "nobarrier" / "models"
    summary = {r["role"] + str(r["generation"]): json.loads((models / r["model_key"] / "summary.json").read_text())
               for r in rows if r["role"] != "ensemble"}
    slow = summary["baseline0"]
    for student in ("student1", "student2"):
        started = summary[student]["finished_at"] - summary[student]["wall_time_s"]  # training began no later
        assert started < slow["finished_at"], (student, summary[student], slow)  # a barrier would forbid this
    assert summary["teacher0"]["finished_at"] < summary["student1"]["finished_at"] - summary["student1"]["wall_time_s"]
