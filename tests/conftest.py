"""Shared fixtures: the real CIFAR-10 JPEG Parquet beside the checkout, when it is there."""

import time
from pathlib import Path

import pytest
import torch
import yaml

from sweep_helpers import SPACE, run_sweep

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    if not (SHARED_CIFAR / "train.parquet").is_file():
        pytest.skip(f"real CIFAR-10 Parquet not found at {SHARED_CIFAR} (only present beside the project's own checkout)")
    return SHARED_CIFAR


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    space = folder / "shared.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    started = time.time()
    result = run_sweep(space, folder / "runs")
    assert result.returncode == 0, result.stdout + result.stderr
    return folder, space, result, time.time() - started
