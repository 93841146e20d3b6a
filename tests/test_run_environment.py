"""Every trained model records where and how it ran: device, precision, workers, torch/Ray/ray-ban versions."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

from ray_ban.config import spaces
from ray_ban.core.generations import prepare_data, run_chain
from ray_ban.results.tables import write_results
from ray_ban.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_chain_records_its_environment_in_summaries_and_results(tmp_path):
    raw = {"name": "env", "dataset": "synthetic", "train_subset": 128, "test_subset": 40,
           "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05, "eval_batch_size": 40},
           "columns": {"Teacher": "teacher", "BAN-1": "ban/1", "Ens": "ban/ens2"},
           "rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}}}]}
    plan = spaces.expand(raw, "env.yaml")
    chain = plan.chains[0]
    store = RunStore(tmp_path / "run")
    data = prepare_data(plan.data_config())
    assert run_chain(list(chain.trainings), {}, plan.recipe_for(chain), data, store, device=torch.device("cpu")) is None

    expected = {"device": "cpu", "precision": "fp32", "workers": 1, "torch_version": torch.__version__,
                "ray_version": importlib.metadata.version("ray"), "ray_ban_version": importlib.metadata.version("ray-ban")}
    for training in chain.trainings:
        summary = json.loads(Path(store.path(store.model_file(training.key, "summary.json"))).read_text())
        assert {k: summary[k] for k in expected} == expected

    write_results(plan, store)
    rows = pq.read_table(store.path("results.parquet")).to_pylist()
    assert {r["role"] for r in rows} == {"teacher", "student", "ensemble"}
    for row in rows:  # the models and the ensemble of two (whose members agree)
        assert {k: row[k] for k in expected} == expected, row["role"]


def test_the_environment_is_read_without_importing_ray():
    code = ("import sys, torch; from ray_ban.core.generations import environment; "
            "e = environment(torch.device('cpu'), 'fp32', 1); "
            "assert 'ray' not in sys.modules, 'imported ray'; print(e['ray_version'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == importlib.metadata.version("ray")
