"""What a chain's Train worker spends before and around its first epoch, in a fresh process each round.

A worker process imports ``ray_ban.orchestration.chain_worker`` (Ray Train, torch, the engine), then
trains: its first ``torch.optim`` optimizer imports ``torch._dynamo`` (torch wraps every optimizer's
methods in a lazily imported ``_disable_dynamo``), whether or not anything is compiled. This times,
in a fresh interpreter per round: the worker module's import, the first optimizer (with and without
``torch._dynamo`` already imported, to isolate that import), and one tiny generation of the smallest
real chain (``wrn-10-1``, 256 generated images, one epoch). CPU seconds of this process. Writes
``benchmarks/results/worker_startup.json``.

    python benchmarks/worker_startup.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ROUND = r'''
import json, sys, tempfile, time
cpu = time.process_time
started = cpu()
import ray_ban.orchestration.chain_worker
imported = cpu()
import torch
dynamo_loaded_by_import = "torch._dynamo" in sys.modules
before = cpu()
torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
first_optimizer = cpu() - before
dynamo_loaded_by_optimizer = "torch._dynamo" in sys.modules
before = cpu()
torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
second_optimizer = cpu() - before

from ray_ban.config import spaces
from ray_ban.core.generations import prepare_data, run_chain
from ray_ban.store import RunStore
import yaml
folder = tempfile.mkdtemp()
space = {"name": "w", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
         "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05}, "columns": {"Teacher": "teacher"},
         "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}]}
open(folder + "/s.yaml", "w").write(yaml.safe_dump(space))
plan = spaces.load(folder + "/s.yaml")
root = plan.roots()[0]
before = cpu()
run_chain([root], {}, plan.recipe_of(root.key), prepare_data(plan.data_config()), RunStore(folder + "/run"),
          device=torch.device("cpu"))
generation = cpu() - before
print("RESULT " + json.dumps({"import_chain_worker_s": imported - started, "dynamo_loaded_by_import": dynamo_loaded_by_import,
                              "first_optimizer_s": first_optimizer, "dynamo_loaded_by_optimizer": dynamo_loaded_by_optimizer,
                              "second_optimizer_s": second_optimizer, "one_tiny_generation_s": generation}))
'''


def one_round() -> dict:
    done = subprocess.run([sys.executable, "-c", ROUND], capture_output=True, text=True, cwd=ROOT, timeout=600)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    measures = ["import_chain_worker_s", "first_optimizer_s", "second_optimizer_s", "one_tiny_generation_s"]
    summary = {m: _common.summarise([r[m] for r in rounds]) for m in measures}
    flags = {f: sorted({r[f] for r in rounds}) for f in ("dynamo_loaded_by_import", "dynamo_loaded_by_optimizer")}
    path = _common.write_result("worker_startup", {"rounds": rounds, "summary": summary, **flags})
    print(_common.table(["CPU seconds", "median", "min", "max"],
                        [[m, round(summary[m]["median"], 2), round(summary[m]["min"], 2), round(summary[m]["max"], 2)]
                         for m in measures]))
    print(flags)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
