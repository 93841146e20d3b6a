"""The Python API on a real Ray session the caller owns: two sweeps in one process, results read back,
and nothing of the caller's process touched (its Ray session, file descriptors, loggers, matplotlib)."""

import io
import logging
import os
import tempfile

import matplotlib
import pyarrow.parquet as pq
import pytest
import ray
import yaml

import ray_ban

SPACE = {
    "name": "api", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}


def _process_state():
    return {"stdout": os.fstat(1).st_ino, "stderr": os.fstat(2).st_ino, "backend": matplotlib.get_backend(),
            "ray_handlers": list(logging.getLogger("ray").handlers), "ray_propagate": logging.getLogger("ray").propagate}


def test_two_sweeps_in_one_callers_ray_session(tmp_path):
    space = tmp_path / "api.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    with tempfile.TemporaryDirectory(prefix="rb-api-", dir="/tmp") as ray_temp:
        ray.init(address="local", num_cpus=2, resources={"chain_driver": 100}, include_dashboard=False,
                 log_to_driver=False, _temp_dir=ray_temp)
        try:
            before = _process_state()
            progress = io.StringIO()
            first = ray_ban.run(space, out=tmp_path / "a", stream=progress)
            assert ray.is_initialized()  # the caller's session is left running
            second = ray_ban.run(space, out=tmp_path / "b", seeds=[1], stream=progress)
            assert _process_state() == before
        finally:
            ray.shutdown()
    for results, seed in ((first, 0), (second, 1)):
        assert results.ok and results.location == str(tmp_path / ("a" if seed == 0 else "b") / "api")
        rows = results.table.to_pylist()
        assert sorted((r["role"], r["status"], r["seed"] // 1_000_003) for r in rows) == [
            ("student", "ok", seed), ("teacher", "ok", seed)]
        assert ray_ban.read_results(results.location).equals(pq.read_table(f"{results.location}/results.parquet"))
        assert len(results.to_pandas()) == 2
    assert "epoch 1/1" in progress.getvalue()  # the progress lines went to the caller's stream


def test_bad_options_and_spaces_raise_instead_of_exiting(tmp_path):
    with pytest.raises(TypeError, match="unknown option 'gpus'"):
        ray_ban.run("table1", preset="smoke", gpus=1)
    with pytest.raises(ValueError, match="--workers must be positive"):  # SpaceError, DataError, UsageError
        ray_ban.run("table1", preset="smoke", workers=0, out=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written
    assert ray_ban.__version__ and ray_ban.load_space("table5", "smoke").name == "table5"
