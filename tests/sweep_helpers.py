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
