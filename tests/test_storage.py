"""A sweep whose run folder is in S3-compatible object storage (a local moto server speaking the S3
protocol), read back with pyarrow's S3 filesystem: workers write models there, Ray Train and Tune
keep their checkpoints and state there, and the report and TensorBoard runs go there too."""

import json
import socket

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from sweep_helpers import run_sweep

moto_server = pytest.importorskip("moto.server", reason="moto (a dev dependency) serves S3 locally for this test")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
SPACE = {
    "name": "bucketed", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05}, "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}}}],
}


@pytest.fixture
def bucket(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing", allow_bucket_creation=True)
    fs.create_dir("ray-ban")
    yield fs, f"s3://ray-ban/runs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    server.stop()


def test_a_sweep_writes_its_whole_run_folder_to_object_storage(bucket, tmp_path):
    fs, uri = bucket
    space = tmp_path / "bucketed.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    result = run_sweep(space, uri, env=CREDENTIALS)
    assert result.returncode == 0, result.stdout + result.stderr
    run = "ray-ban/runs/bucketed"
    table = pq.read_table(f"{run}/results.parquet", filesystem=fs)
    rows = table.to_pylist()
    assert sorted((r["role"], r["generation"]) for r in rows) == [
        ("ensemble", 2), ("student", 1), ("student", 2), ("teacher", 0)]
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        if r["role"] != "ensemble":  # every model's files were written by its Train worker straight to the bucket
            files = {info.base_name for info in fs.get_file_info(pafs.FileSelector(f"{run}/models/{r['model_key']}"))}
            assert files == {"model.pt", "history.json", "summary.json"}
            assert fs.get_file_info(f"{run}/predictions/{r['model_key']}.arrow").size > 0
    names = {info.path.removeprefix(run + "/") for info in fs.get_file_info(pafs.FileSelector(run, recursive=True))}
    assert {"sweep.json", "table.md", "report.md", "error_by_generation.png", "logs/ray.log"} <= names
    assert any(n.startswith("ray/chains/experiment_state-") for n in names)  # Tune's experiment state
    assert any(n.startswith("ray/A.ban.seed0/checkpoint_") for n in names)  # Train's epoch checkpoints
    assert any(n.startswith("tensorboard/A/ban-s0/gen2/events.out.tfevents") for n in names)
    assert any(n.startswith("tensorboard/A/ban-s0/ens2/events.out.tfevents") for n in names)
    manifest = json.loads(fs.open_input_stream(f"{run}/sweep.json").read())
    assert manifest["identity"]["name"] == "bucketed"
    assert not (tmp_path / "runs").exists() and "s3://ray-ban/runs/bucketed/results.parquet" in result.stdout

    again = run_sweep(space, uri, env=CREDENTIALS)  # the same command again: every model is found finished
    assert again.returncode == 0, again.stdout + again.stderr
    assert "epoch" not in again.stdout
    assert pq.read_table(f"{run}/results.parquet", filesystem=fs).num_rows == len(rows)


def test_an_unreachable_storage_uri_is_one_line_and_exit_2(tmp_path):
    space = tmp_path / "bucketed.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    env = {**CREDENTIALS, "AWS_MAX_ATTEMPTS": "1"}
    result = run_sweep(space, f"s3://nowhere/runs?endpoint_override=127.0.0.1:{port}&scheme=http", env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot" in result.stderr and "Traceback" not in result.stderr
