"""Faults and bad input with real processes: a Train worker SIGKILLed mid-generation, a whole sweep
SIGKILLed and resumed, and randomly broken search-space files (hypothesis)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_ban import sweep
from sweep_helpers import ROOT, run_sweep

CHAIN = {
    "name": "faults", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1", "BAN-2": "ban/2", "Ens*2": "ban/ens2"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}},
              "paper": {"Teacher": 10.0}}],
}


def model_dirs(run: Path) -> dict[int, Path]:
    """generation -> model folder, from the stored summaries' configs in results.parquet."""
    rows = pq.read_table(run / "results.parquet").to_pylist()
    return {r["generation"]: run / "models" / r["model_key"] for r in rows if r["role"] != "ensemble"}


def test_a_killed_worker_is_restarted_and_resumes_from_its_last_epoch(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(CHAIN))
    # rank 0 SIGKILLs itself once, right after the checkpoint of generation 1, epoch 1
    result = run_sweep(path, tmp_path / "runs", env={"RAY_BAN_FAULT": "1:1"})
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "faults"
    assert len(list((run / "faults").iterdir())) == 1  # the kill happened
    rows = pq.read_table(run / "results.parquet").to_pylist()
    assert sorted((r["role"], r["generation"]) for r in rows) == [
        ("ensemble", 2), ("student", 1), ("student", 2), ("teacher", 0)]  # the shape of an uninterrupted run
    assert all(r["status"] == "ok" for r in rows)
    gen1 = model_dirs(run)[1]
    history = json.loads((gen1 / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 came from the checkpoint, not trained twice
    board = EventAccumulator(str(run / "tensorboard" / "A" / "ban-s0" / "gen1"))
    board.Reload()
    assert [e.step for e in board.Scalars("test/error")] == [1, 2]


def test_a_sigkilled_sweep_resumes_without_retraining_or_duplicates(tmp_path):
    space = dict(CHAIN, name="crash", recipe={"epochs": 2, "batch_size": 64, "lr": 0.05},
                 rows=[{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 3}}}],
                 columns={"Teacher": "teacher", "BAN-3": "ban/3"})
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "runs"
    run = out / "crash"
    command = [sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(out)]
    sweep_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline:  # kill once the teacher and generation 1 are stored
        if len(list(run.glob("models/*/summary.json"))) >= 2:
            break
        time.sleep(0.2)
    else:
        sweep_process.kill()
        pytest.fail("the sweep never stored two models")
    os.killpg(sweep_process.pid, signal.SIGKILL)  # the driver, its Ray cluster, every worker: a lost machine
    sweep_process.wait()
    done_before = {p.parent.name: json.loads(p.read_text())["finished_at"] for p in run.glob("models/*/summary.json")}
    assert 2 <= len(done_before) < 4 and not (run / "results.parquet").exists()

    result = run_sweep(path, out)  # the same command again: it continues the same sweep
    assert result.returncode == 0, result.stdout + result.stderr
    after = {p.parent.name: json.loads(p.read_text()) for p in run.glob("models/*/summary.json")}
    assert len(after) == 4
    for key, finished_at in done_before.items():
        assert after[key]["finished_at"] == finished_at, f"{key} was trained again"
    for key in after:
        history = json.loads((run / "models" / key / "history.json").read_text())
        assert [h["epoch"] for h in history] == [1, 2], key
    rows = pq.read_table(run / "results.parquet").to_pylist()
    keys = [r["model_key"] for r in rows]
    assert len(keys) == len(set(keys)) and {r["status"] for r in rows} == {"ok"}  # no duplicate rows
    assert sorted(r["generation"] for r in rows if r["role"] != "ensemble") == [0, 1, 2, 3]
    for arrow in (run / "predictions").glob("*.arrow"):  # every stored prediction file opens whole
        with pa.memory_map(str(arrow)) as source:
            assert pa.ipc.open_file(source).read_all().num_rows == 200


def test_gpus_asked_of_a_machine_without_any_are_refused_before_writing(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(CHAIN))
    result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(tmp_path / "runs"),
                             "--gpus-per-worker", "0.25"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "RAY_ADDRESS": ""}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "has none" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_parquet_dataset_with_the_wrong_columns_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"pixels": [b"x"], "target": [1]}), data / f"{split}.parquet")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(dict(CHAIN, dataset=f"parquet:{data}")))
    result = subprocess.run([sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "column" in result.stderr and not (tmp_path / "runs").exists()


# -- fuzz: randomly broken search-space files --------------------------------------------------------------
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=12),
                 st.lists(st.integers(-2, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(value, prefix=()):
    """Every (path to a value) inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def broken_space_text(draw) -> str:
    space = json.loads(json.dumps(CHAIN))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(space) if p]
        if not paths:
            break
        target = draw(st.sampled_from(paths))
        parent = space
        for step in target[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[target[-1]] = draw(JUNK)
        elif action == "delete":
            del parent[target[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(target[-1])
    text = yaml.safe_dump(space)
    if draw(st.booleans()):  # break the YAML itself: cut it short or splice in junk characters
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ":", "\t", "[", "{x: ", "- - ", "'", "\x00", "&a *b"])) + text[cut:][:20]
    return text


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=broken_space_text())
def test_random_broken_spaces_get_exit_2_and_one_line(tmp_path, capsys, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        code = sweep.main([str(path), "--dry-run", "--out", str(tmp_path / "runs")])
    except SystemExit as exit_:  # argparse paths exit; anything else escaping main would be a traceback
        code = exit_.code
    captured = capsys.readouterr()
    assert code in (0, 2), (code, text, captured.err)
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ray-ban: error: "), (text, captured.err)
    assert not (tmp_path / "runs").exists()
