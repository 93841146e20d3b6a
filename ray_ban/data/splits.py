"""Image splits held as uint8 tensors: what every dataset source returns and the loader consumes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from ray_ban.errors import DataError  # noqa: F401  (the data layer's error, declared torch-free for the CLI)


@dataclass(frozen=True)
class ImageSplits:
    """Train/test (and optional validation) images as (N, 3, H, W) uint8 with int64 labels."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] = ()
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        for split in ("train", "test", "val"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images is None:
                continue
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
                raise DataError(f"{self.name}: {split} images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
            if labels.shape != (images.shape[0],):
                raise DataError(f"{self.name}: {split} has {images.shape[0]} images but {labels.numel()} labels")

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the train images on the 0-255 scale, for normalisation."""
        pixels = self.train_images.permute(1, 0, 2, 3).reshape(3, -1).float()
        return pixels.mean(dim=1), pixels.std(dim=1)

    def with_validation(self, count: int, seed: int = 0) -> "ImageSplits":
        """Hold out ``count`` train images as a validation split (for selection; never select on test)."""
        if count <= 0:
            return self
        if count >= self.train_images.shape[0]:
            raise DataError(f"{self.name}: validation size {count} must be smaller than the {self.train_images.shape[0]} train images")
        order = torch.randperm(self.train_images.shape[0], generator=torch.Generator().manual_seed(seed))
        held, kept = order[:count], order[count:]
        return replace(
            self,
            train_images=self.train_images[kept],
            train_labels=self.train_labels[kept],
            val_images=self.train_images[held],
            val_labels=self.train_labels[held],
        )

    def subset(self, train: Optional[int] = None, test: Optional[int] = None) -> "ImageSplits":
        """The first ``train``/``test`` images (sources are shuffled, so prefixes stay class-balanced)."""
        return replace(
            self,
            train_images=self.train_images[:train],
            train_labels=self.train_labels[:train],
            test_images=self.test_images[:test],
            test_labels=self.test_labels[:test],
        )
