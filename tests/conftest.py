"""Shared fixtures: the real CIFAR-10 JPEG Parquet beside the checkout, when it is there."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from sweep_helpers import SPACE, run_sweep

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def private_data_cache():
    """Decoded datasets go to a cache of this test session (inherited by sweeps and Ray workers it starts), not the node's."""
    folder = tempfile.mkdtemp(prefix="ray-ban-data-test-")
    before = os.environ.get("RAY_BAN_DATA_CACHE")
    os.environ["RAY_BAN_DATA_CACHE"] = folder
    yield Path(folder)
    if before is None:
        os.environ.pop("RAY_BAN_DATA_CACHE", None)
    else:
        os.environ["RAY_BAN_DATA_CACHE"] = before
    shutil.rmtree(folder, ignore_errors=True)


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
