"""The Python API on a real Ray session the caller owns: two sweeps in one process, results read back,
and nothing of the caller's process touched (its Ray session, file descriptors, loggers, matplotlib,
Tune's settings in its environment)."""

import io
import logging
import os
from pathlib import Path

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
            "ray_handlers": list(logging.getLogger("ray").handlers), "ray_propagate": logging.getLogger("ray").propagate,
            "root_handlers": list(logging.getLogger().handlers), "root_level": logging.getLogger().level,
            "ray_ban_handlers": list(logging.getLogger("ray_ban").handlers),
            "ray_ban_level": logging.getLogger("ray_ban").level,
            # Tune's settings a sweep needs: a caller's own Tune runs after it keep Tune's defaults
            "tune_env": {name: os.environ.get(name)
                         for name in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_AIR_NEW_OUTPUT")}}


class Collected(logging.Handler):
    """The caller's own handler on the ray_ban logger: what a notebook's logging set-up would receive."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append((record.name, record.levelno, record.getMessage()))


def test_two_sweeps_in_one_callers_ray_session(tmp_path, ray_session):
    """The caller's session is the test session's shared one, started with ``ray_ban.init_ray``."""
    space = tmp_path / "api.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    session = ray.get_runtime_context().get_node_id()
    caller = Collected()
    tune_records = Collected()  # what Ray Tune's loggers say during both runs (Ray's handler prints it to stderr)
    logging.getLogger("ray.tune").addHandler(tune_records)
    try:
        before = _process_state()
        progress = io.StringIO()
        first = ray_ban.run(space, out=tmp_path / "a", stream=progress)
        assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == session  # joined, left running
        assert _process_state() == before
        shown = progress.getvalue()
        logging.getLogger("ray_ban").addHandler(caller)  # the caller routes ray-ban's records itself
        second = ray_ban.run(space, out=tmp_path / "b", seeds=[1], stream=False)
        logging.getLogger("ray_ban").removeHandler(caller)
        assert _process_state() == before and ray.is_initialized()
    finally:
        logging.getLogger("ray_ban").removeHandler(caller)
        logging.getLogger("ray.tune").removeHandler(tune_records)
    # no warning a sweep's own set-up causes: Tune's end-of-run analysis looks for the per-trial result files
    # that a sweep has it not write, and warned once per run with a FileNotFoundError for each trial (Tune's
    # other warnings, a slow step on a busy machine say, may come and are not the sweep's doing)
    missing_files = [m for _, _, m in tune_records.messages if "result.json" in m or "Failed to fetch" in m]
    assert not missing_files, missing_files
    for results, seed in ((first, 0), (second, 1)):
        assert results.ok and results.location == str(tmp_path / ("a" if seed == 0 else "b") / "api")
        rows = results.table.to_pylist()
        assert sorted((r["role"], r["status"], r["seed"] // 1_000_003) for r in rows) == [
            ("student", "ok", seed), ("teacher", "ok", seed)]
        assert ray_ban.read_results(results.location).equals(pq.read_table(f"{results.location}/results.parquet"))
        assert len(results.to_pandas()) == 2
    assert "epoch 1/1" in shown and "results in" in shown  # the first run's lines went to the caller's stream
    assert progress.getvalue() == shown  # stream=False: the second run showed nothing there...
    names = {name for name, _, _ in caller.messages}  # ...its lines went to the caller's handler, as records
    assert {"ray_ban.progress", "ray_ban.sweep"} <= names
    assert any("epoch 1/1" in m for _, _, m in caller.messages)
    assert any(m.startswith("ray-ban: results in") and str(tmp_path / "b") in m for _, _, m in caller.messages)
    log_text = (tmp_path / "b" / "api" / "logs" / "ray.log").read_text()  # and, timestamped, to the run's ray.log
    assert "ray_ban.progress INFO" in log_text and "ray_ban.sweep INFO ray-ban: results in" in log_text


def test_bad_options_and_spaces_raise_instead_of_exiting(tmp_path):
    with pytest.raises(TypeError, match="unknown option 'gpus'"):
        ray_ban.run("table1", preset="smoke", gpus=1)
    with pytest.raises(ValueError, match="--workers must be positive"):  # SpaceError, DataError, UsageError
        ray_ban.run("table1", preset="smoke", workers=0, out=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written
    assert ray_ban.__version__ and ray_ban.load_space("table5", "smoke").name == "table5"


def test_the_command_line_and_run_build_the_same_options():
    """argparse -> SweepOptions and run()'s keywords -> SweepOptions: one set of options, one set of defaults."""
    from ray_ban.api import options
    from ray_ban.cli.sweep import parse_args
    from ray_ban.config.options import SweepOptions

    assert SweepOptions.from_values(parse_args(["table1"])) == SweepOptions(table="table1")
    cli = SweepOptions.from_values(parse_args(["table1", "--preset", "smoke", "--seeds", "0-2", "--gpus-per-worker",
                                               "0.25", "--cpus-per-worker", "0.5", "--search", "lr=grid:0.1,0.2",
                                               "--out", "/tmp/x"]))
    api = options("table1", "smoke", seeds=range(3), gpus_per_worker="0.25", cpus_per_worker=0.5,
                  search="lr=grid:0.1,0.2", out=Path("/tmp/x"))
    assert api == SweepOptions(**{**vars(cli), "seeds": "0,1,2"})  # a range of seeds is written out, the same seeds
    with pytest.raises(TypeError, match="unknown option 'teacher_bank'"):  # resolved by a run, not set by a caller
        options("table1", teacher_bank="/tmp/bank")
