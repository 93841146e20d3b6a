"""Shared fixtures: the real CIFAR-10 JPEG Parquet beside the checkout, when it is there."""

from pathlib import Path

import pytest
import torch

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    if not (SHARED_CIFAR / "train.parquet").is_file():
        pytest.skip(f"real CIFAR-10 Parquet not found at {SHARED_CIFAR} (only present beside the project's own checkout)")
    return SHARED_CIFAR
