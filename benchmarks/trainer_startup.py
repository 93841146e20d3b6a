"""Start-up cost of a trivial Ray Train fit on this machine, as the sweep pays it once per chain.

Run twice to compare Train's controller poll interval (the sweep sets 0.25 s):
    .venv/bin/python benchmarks/trainer_startup.py
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.25 .venv/bin/python benchmarks/trainer_startup.py
"""

import logging
import tempfile
import time

import ray
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer


def report_once(config):
    ray.train.report({"x": 1})


def main() -> None:
    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    print(f"ray.init {time.perf_counter() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as storage:
        for attempt in range(2):
            started = time.perf_counter()
            TorchTrainer(report_once, scaling_config=ScalingConfig(num_workers=1),
                         run_config=RunConfig(name=f"fit{attempt}", storage_path=storage)).fit()
            print(f"fit {attempt + 1}: {time.perf_counter() - started:.1f} s", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
