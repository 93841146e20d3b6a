"""The small real sweep that several test files share, and how tests start sweeps."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPACE = {
    "name": "shared", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1", "BAN-2": "ban/2", "Ens*2": "ban/ens2",
                "BAN+L": "banl/1", "Baseline": "base/0"},
    "rows": [
        {"row": "A", "teacher": "densenet-10-4",
         "chains": {"ban": {"loss": "ban", "generations": 2}, "banl": {"loss": "ban+l", "loss_params": {"label_weight": 0.5}}},
         "paper": {"Teacher": 10.0, "BAN-1": 9.0}},
        {"row": "B", "teacher": "densenet-10-4",
         "chains": {"ban": {"loss": "ban", "generations": 1}, "base": {"baseline": True, "student": "wrn-10-1"}},
         "paper": {"Teacher": 10.0, "Baseline": 11.5}},
    ],
}


def run_sweep(space_path, out, *args, env=None):
    command = [sys.executable, "-m", "ray_ban.sweep", str(space_path), "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": "", **(env or {})})


class SharedRay:
    """One local Ray session, started as a sweep starts its own (``ray_ban.init_ray``), for the test sweeps
    that do not test Ray's start-up, shutdown or a process of their own: each then saves a Python start-up,
    the torch and Ray imports, and Ray's start and stop. Tests that start Ray themselves stop it first."""

    def __init__(self, temp_dir: str):
        self.temp_dir = temp_dir

    def ensure(self) -> None:
        import ray

        import ray_ban

        if not ray.is_initialized():
            ray_ban.init_ray(num_cpus=2, _temp_dir=self.temp_dir)

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def cli_in_process(*args, cwd=None, env=None) -> tuple:
    """``python -m ray_ban.sweep ARGS`` run by the CLI's ``main`` in this process, in ``cwd`` (the checkout)
    with ``env`` laid over the environment: exit code, stdout, stderr. In-process saves a Python start-up
    and the torch and Ray imports per call."""
    import contextlib
    import io

    from ray_ban.cli.sweep import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env, here = dict(os.environ), os.getcwd()
    os.environ.update(env or {})
    os.chdir(cwd or ROOT)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:  # argparse's --help, and bad options through OneLineParser
                code = exit_.code
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved_env)
    return code, stdout.getvalue(), stderr.getvalue()


def sweep_in_session(shared: SharedRay, space_path, out, *args, env=None) -> subprocess.CompletedProcess:
    """``python -m ray_ban.sweep SPACE --out OUT ARGS`` run by the CLI in this process, in ``shared``'s Ray
    session (joined, left running): exit code, stdout and stderr, as ``run_sweep`` gives them."""
    shared.ensure()
    command = [str(space_path), "--out", str(out), *map(str, args)]
    code, stdout, stderr = cli_in_process(*command, env={"RAY_ADDRESS": "", **(env or {})})
    return subprocess.CompletedProcess(command, code, stdout, stderr)
