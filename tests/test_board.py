"""TensorBoard runs: written by the engine's chain loop, read back with TensorBoard's own reader and
served by a real TensorBoard server over HTTP (scalars and the HParams plugin)."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_ban.results.board import main as board_main
from ray_ban.results.tensorboard_runs import SCALAR_TAGS, GenerationLog
from sweep_helpers import ROOT

EPOCH_TAGS = {"train/loss", "train/learning_rate", "test/error", "test/loss", "test/calibration_error"}
TEACHER_TAGS = {"test/agreement_with_teacher", "test/kl_student_teacher"}


def report(epoch: int, error: float) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "lr": 0.1, "test_error": error, "test_loss": 2.0,
            "agreement": None, "kl": float("nan"), "ece": 3.0, "val_error": None, "val_loss": None}


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_resumed_generation_shows_one_curve(tmp_path):
    first = GenerationLog(tmp_path, "A/ban/gen1", {"row": "A", "generation": 1})
    for epoch, error in ((1, 50.0), (2, 40.0), (3, 35.0)):
        first.epoch(report(epoch, error))
    first.writer.close()  # crashed after epoch 3; the checkpoint was taken after epoch 1
    time.sleep(1.1)  # a new event file needs a later timestamp in its name
    again = GenerationLog(tmp_path, "A/ban/gen1", {"row": "A", "generation": 1}, start_epoch=1)
    for epoch, error in ((2, 41.0), (3, 36.0)):
        again.epoch(report(epoch, error))
    again.finish({"final_test_error": 36.0, "best_test_error": 36.0, "parameters": 123, "epochs": 3})
    run = tmp_path / "A" / "ban" / "gen1"
    assert scalars(run, "test/error") == [(1, 50.0), (2, 41.0), (3, 36.0)]
    assert scalars(run, "final/parameters") == [(3, 123.0)]
    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    assert "test/agreement_with_teacher" not in tags and "test/kl_student_teacher" not in tags  # None and NaN skipped


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_tensorboard_serves_every_run_scalar_and_hparams_session(finished_sweep):
    folder, *_ = finished_sweep
    sweep_dir = folder / "runs" / "shared"
    expected_runs = {"A/teacher-s0/gen0", "A/ban-s0/gen1", "A/ban-s0/gen2", "A/banl-s0/gen1", "B/ban-s0/gen1",
                     "B/base-s0/gen0", "A/ban-s0/ens2"}
    board = subprocess.Popen([sys.executable, "-m", "ray_ban.board", str(sweep_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = board.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + board.stderr.read()
        url = line.split(" at ")[1].split()[0].rstrip("/")
        deadline = time.time() + 90
        while time.time() < deadline:  # TensorBoard loads event files in the background
            tags = _get(f"{url}/data/plugin/scalars/tags")
            if expected_runs <= set(tags) and all("final/test_error" in tags[r] for r in expected_runs):
                break
            time.sleep(1)
        assert expected_runs <= set(_get(f"{url}/data/runs")), _get(f"{url}/data/runs")
        for run in expected_runs - {"A/ban-s0/ens2"}:
            assert EPOCH_TAGS <= set(tags[run]), (run, tags[run])
        for run in ("A/ban-s0/gen1", "A/ban-s0/gen2", "A/banl-s0/gen1", "B/ban-s0/gen1"):  # students: teacher metrics too
            assert TEACHER_TAGS <= set(tags[run]), (run, tags[run])
        assert {"test/error", "final/test_error"} <= set(tags["A/ban-s0/ens2"])
        language_only = {"test/perplexity", "val/perplexity"}
        assert set(SCALAR_TAGS.values()) - {"val/error", "val/loss"} - language_only <= set().union(*tags.values())

        experiment = _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        hparam_names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"row", "role", "architecture", "loss", "generation", "seed", "dataset", "preset", "lr"} <= hparam_names
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"final/test_error", "final/best_test_error", "final/parameters"} <= metric_tags
        groups = _get(f"{url}/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 100})
        sessions = {s["name"]: s for g in groups["sessionGroups"] for s in g["sessions"]}
        assert expected_runs <= set(sessions), sorted(sessions)
        gen2 = sessions["A/ban-s0/gen2"]
        assert gen2["status"] == "STATUS_SUCCESS"
        final = {m["name"]["tag"]: m["value"] for m in gen2["metricValues"]}
        results = {r["model_key"]: r for r in __import__("pyarrow.parquet").parquet.read_table(sweep_dir / "results.parquet").to_pylist()}
        student = next(r for r in results.values() if r["row"] == "A" and r["chain"] == "ban" and r["generation"] == 2)
        assert abs(final["final/test_error"] - student["final_test_error"]) < 1e-3
    finally:
        board.terminate()
        board.wait(timeout=30)


def test_board_refuses_a_folder_without_runs(tmp_path, capsys):
    assert board_main([str(tmp_path)]) == 2  # the CLI's main in this process (`python -m ray_ban.board` exits with it)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "Traceback" not in err
