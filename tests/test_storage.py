"""A sweep whose run folder is in S3-compatible object storage (a local moto server speaking the S3
protocol), read back with pyarrow's S3 filesystem. The sweep is SIGKILLed mid-chain (driver, Ray
and workers: a lost machine) and the same command run again: it resumes from what is in the bucket,
retrains nothing, and leaves no duplicate rows and no partial files. Its dataset is in the bucket too:
CIFAR-10-format files exported by `python -m ray_ban.data.export` and read by every Train worker."""

import json
import os
import re
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from ray_ban.data.export import main as export_main
from s3_server import CREDENTIALS, free_port
from processes import kill_tree
from sweep_helpers import ROOT, run_sweep
from test_data_sources import write_cifar_pickles


SPACE = {
    "name": "crash", "seeds": [0], "train_subset": 512, "test_subset": 100,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05}, "columns": {"Teacher": "teacher", "BAN-3": "ban/3"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 3}}}],
}
RUN = "ray-ban/runs/crash"


@pytest.fixture
def bucket(local_s3):
    return local_s3.fs, local_s3.uri("ray-ban/runs")


def summaries(fs) -> dict[str, dict]:
    """model key -> summary.json of every finished model in the bucket."""
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(f"{RUN}/models", recursive=True, allow_not_found=True)):
        if info.base_name == "summary.json":
            found[info.path.split("/")[-2]] = json.loads(fs.open_input_stream(info.path).read())
    return found


def epoch_one_checkpoints(fs) -> set[str]:
    """Model keys whose epoch-1 Train checkpoint of the chain Train has recorded (in its checkpoint
    manager's snapshot in the bucket, which is what a restarted run resumes from)."""
    try:
        snapshot = json.loads(fs.open_input_stream(f"{RUN}/ray/A.ban.seed0/checkpoint_manager_snapshot.json").read())
    except (OSError, FileNotFoundError, ValueError):  # not written yet, or caught mid-write
        return set()
    # recorded results only: an asynchronous upload still in flight is listed under pending_training_results
    names = [result["checkpoint_dir_name"] for result in snapshot.get("checkpoint_results", [])]
    return {match.group(1) for name in names if (match := re.fullmatch(r"checkpoint_(.+)_e0001", name))}


def test_a_sweep_in_object_storage_is_sigkilled_and_resumes_from_it(bucket, tmp_path):
    fs, uri = bucket
    write_cifar_pickles(tmp_path / "torchvision", "cifar10", per_batch=110)  # 550 train, 110 test images
    data_uri = uri.replace("s3://ray-ban/runs", "s3://ray-ban/data")
    assert export_main(["cifar10", "--data-root", str(tmp_path / "torchvision"), "--out", data_uri]) == 0
    space = tmp_path / "crash.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "dataset": f"parquet:{data_uri.replace('?', '/plain_text?')}"}))
    command = [sys.executable, "-m", "ray_ban.sweep", str(space), "--out", uri]
    sweep_process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True)
    deadline = time.time() + 400
    interrupted = None
    while time.time() < deadline:  # kill once the teacher and generation 1 are stored and generation 2 checkpointed
        done = summaries(fs)
        interrupted = next((c for c in epoch_one_checkpoints(fs) if c not in done), None) if len(done) >= 2 else None
        if interrupted:
            break
        time.sleep(0.25)
    else:
        sweep_process.kill()
        pytest.fail("the sweep never stored two models: " + sweep_process.stdout.read().decode()[-2000:])
    # the driver, its Ray cluster, every worker at once: a lost machine (Ray's raylet and workers run in sessions of
    # their own, so the group alone left a worker that went on storing models; seen here)
    kill_tree(sweep_process.pid)
    sweep_process.wait()
    done_before = {key: s["finished_at"] for key, s in summaries(fs).items()}
    time.sleep(3)
    assert sorted(summaries(fs)) == sorted(done_before), "a process of the killed sweep still wrote to the bucket"
    # read again now that nothing writes: the model left unfinished with a recorded epoch-1 checkpoint (a listing
    # taken while the sweep wrote could name one that was being stored)
    interrupted = next((c for c in epoch_one_checkpoints(fs) if c not in done_before), None)
    assert interrupted, (done_before, epoch_one_checkpoints(fs))
    assert 2 <= len(done_before) < 4
    assert fs.get_file_info(f"{RUN}/results.parquet").type == pafs.FileType.NotFound

    result = run_sweep(space, uri)  # the same command again: it continues the same sweep, from the bucket
    assert result.returncode == 0, result.stdout + result.stderr
    after = summaries(fs)
    assert len(after) == 4
    for key, finished_at in done_before.items():
        assert after[key]["finished_at"] == finished_at, f"{key} was trained again"
    resumed = json.loads(fs.open_input_stream(f"{RUN}/models/{interrupted}/history.json").read())
    # the interrupted generation continued from a recorded checkpoint, never from scratch: from epoch 1's (epoch 2
    # then says so), or from epoch 2's when the kill landed after that epoch but before the model was stored
    assert after[interrupted]["resumed_from"] in (1, 2), after[interrupted]
    assert [h.get("resumed_from") for h in resumed] == ([None, 1] if after[interrupted]["resumed_from"] == 1 else [None, None])
    rows = pq.read_table(f"{RUN}/results.parquet", filesystem=fs).to_pylist()
    keys = [r["model_key"] for r in rows]
    assert len(keys) == len(set(keys)) and {r["status"] for r in rows} == {"ok"}  # no duplicate rows
    assert sorted(r["generation"] for r in rows if r["role"] != "ensemble") == [0, 1, 2, 3]
    for r in rows:
        if r["role"] == "ensemble":
            continue
        # each model's files were written by its Train worker straight to the bucket, and open whole
        model = f"{RUN}/models/{r['model_key']}"
        history = json.loads(fs.open_input_stream(f"{model}/history.json").read())
        assert [h["epoch"] for h in history] == [1, 2]
        with fs.open_input_file(f"{RUN}/predictions/{r['model_key']}.arrow") as source:
            assert pa.ipc.open_file(source).read_all().num_rows == 100

    names = {info.path.removeprefix(RUN + "/") for info in fs.get_file_info(pafs.FileSelector(RUN, recursive=True))}
    assert {"sweep.json", "table.md", "report.md", "error_by_generation.png", "logs/ray.log"} <= names
    assert any(n.startswith("ray/sweep/experiment_state-") for n in names)  # Tune's experiment state
    assert any(n.startswith("ray/A.ban.seed0/checkpoint_") for n in names)  # Train's epoch checkpoints
    assert any(n.startswith("tensorboard/A/ban-s0/gen3/events.out.tfevents") for n in names)
    assert any(n.startswith("tensorboard/A/ban-s0/ens3/events.out.tfevents") for n in names)
    assert "s3://ray-ban/runs/crash/results.parquet" in result.stdout
    assert not (ROOT / "runs" / "crash").exists()  # nothing was written to a local folder instead


def test_an_unreachable_storage_uri_is_one_line_and_exit_2(tmp_path):
    space = tmp_path / "crash.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "dataset": "synthetic"}))
    env = {**CREDENTIALS, "AWS_MAX_ATTEMPTS": "1"}
    result = run_sweep(space, f"s3://nowhere/runs?endpoint_override=127.0.0.1:{free_port()}&scheme=http", env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot" in result.stderr and "Traceback" not in result.stderr
