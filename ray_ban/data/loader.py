"""A device-resident loader in the style of airbench: the whole split lives on the training device as
one uint8 tensor; crop, flip and normalisation are batched tensor ops; shuffles come from a seed.

No DataLoader workers, no per-image Python and no host sync per step. Each data-parallel rank
takes a disjoint, equally sized shard of every epoch's permutation: rank r holds positions r, r+W,
r+2W, ... of it, and the crops and flips are drawn per position of the whole permutation, so the
ranks' k-th batches together are the single-process k-th batch, augmented identically.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F


class DeviceLoader:
    """Batches of (normalised float images, labels) drawn from uint8 images kept on ``device``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mean: Optional[torch.Tensor] = None,
        std: Optional[torch.Tensor] = None,
        crop_padding: int = 4,
        padding_mode: str = "reflect",
        flip: bool = True,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.train, self.seed, self.rank, self.world_size = train, seed, rank, world_size
        self.padding = crop_padding if train else 0
        self.flip = flip and train
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch = 0
        self.height, self.width = self.images.shape[2:]
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"padding_mode must be reflect or zeros, got '{padding_mode}'")
        if self.padding and padding_mode == "reflect" and self.padding >= min(self.height, self.width):
            raise ValueError(f"reflect padding of {self.padding} pixels needs images larger than that, got "
                             f"{self.height}x{self.width}: use a smaller crop_padding or crop_padding_mode zeros")
        self.padded = self.images
        if self.padding:  # padded on the host: reflection of uint8 images is a CPU kernel everywhere
            mode = "reflect" if padding_mode == "reflect" else "constant"
            self.padded = F.pad(images.cpu(), (self.padding,) * 4, mode=mode).to(self.device)
        mean = torch.zeros(3) if mean is None else mean
        std = torch.ones(3) if std is None else std
        self.mean = mean.to(self.device, torch.float32).view(1, 3, 1, 1)
        self.inv_std = (1.0 / std).to(self.device, torch.float32).view(1, 3, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle (and augmentation draw) of ``epoch``; resuming at an epoch repeats it exactly."""
        self.epoch = epoch

    def shard_indices(self) -> torch.Tensor:
        """This rank's image indices for the current epoch: disjoint across ranks, equal in count."""
        count = self.images.shape[0]
        if self.train:
            order = torch.randperm(count, generator=self._generator(0))
        else:
            order = torch.arange(count)
        return self._shard(order)

    def _shard(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's entries of a per-position tensor of the epoch (rank r: positions r, r+W, ...)."""
        count = self.images.shape[0]
        per_rank = count // self.world_size if self.train else -(-count // self.world_size)
        return values[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        shard = len(self.shard_indices()) if not self.train else self.images.shape[0] // self.world_size
        return shard // self.batch_size if self.train else -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.shard_indices()
        count = len(indices)
        if self.train:  # drop the ragged last batch so every rank takes the same number of steps
            count -= count % self.batch_size
        total = self.images.shape[0]  # draws per position of the whole permutation, then sharded like it
        shifts = self._shard(torch.randint(0, 2 * self.padding + 1, (total, 2), generator=self._generator(1)))
        flips = torch.rand(total, generator=self._generator(2)) < 0.5 if self.flip else torch.zeros(total, dtype=torch.bool)
        flips = self._shard(flips)
        indices, shifts, flips = (t[:count].to(self.device) for t in (indices, shifts, flips))
        for start in range(0, count, self.batch_size):
            stop = start + self.batch_size
            batch = indices[start:stop]
            yield self._augment(batch, shifts[start:stop], flips[start:stop]), self.labels[batch]

    def _generator(self, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, self.epoch, stream)) & 0x7FFF_FFFF)

    def _augment(self, batch: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop and flip as one ``take`` from the padded uint8 store (flip folded into the column
        index), then normalise in place: no copy of the padded batch, one pass over the pixels."""
        _, c, hp, wp = self.padded.shape
        rows = shifts[:, 0:1] + torch.arange(self.height, device=self.device)
        cols = torch.arange(self.width, device=self.device)
        cols = shifts[:, 1:2] + torch.where(flips[:, None], cols.flip(0), cols)
        channels = torch.arange(c, device=self.device)[None, :, None, None] * (hp * wp)
        index = (batch * (c * hp * wp))[:, None, None, None] + channels + (rows * wp)[:, None, :, None] + cols[:, None, None, :]
        images = self.padded.reshape(-1).take(index).to(torch.float32).sub_(self.mean).mul_(self.inv_std)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images.to(self.dtype)
