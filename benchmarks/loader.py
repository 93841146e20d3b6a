"""Throughput of ray-ban's DeviceLoader versus torchvision's DataLoader with PIL transforms, on CPU.

Both produce the same thing from the same uint8 images: shuffled batches of 256 randomly cropped
(padding 4), randomly flipped, normalised float images with their labels. At equal CPU: one torch
thread and ``num_workers=0``. A ``num_workers=2`` DataLoader row is shown for information (it uses
two more processes, so it is not an equal-CPU comparison; its workers are persistent and warmed).
Passes are interleaved over rounds so that the load of a shared machine hits all rows alike.

Images: the first ``--images`` train images of the real CIFAR-10 in
``parquet:/work/shared/data/cifar10-jpeg`` when that folder exists, else the synthetic set.

    .venv/bin/python benchmarks/loader.py [--quick] [--images 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import _common
from ray_ban.data import DeviceLoader, load_dataset


class PILDataset(Dataset):
    """The uint8 (N, 3, H, W) tensor as PIL images, the way torchvision's CIFAR10 serves them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.hwc = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.hwc[i])), self.labels[i]


def count_epoch(loader, epochs: int = 1) -> tuple[int, float]:
    """Iterate ``epochs`` epochs, touching every batch; (images, seconds)."""
    started = time.perf_counter()
    seen = 0
    for e in range(epochs):
        if isinstance(loader, DeviceLoader):
            loader.set_epoch(loader.epoch + 1)
        for images, labels in loader:
            seen += images.shape[0]
    return seen, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dataset", default=None, help="default: CIFAR-10 Parquet if present, else synthetic")
    p.add_argument("--no-workers-row", action="store_true", help="skip the num_workers=2 row")
    p.add_argument("--device-epochs", type=int, default=4,
                   help="epochs per timed DeviceLoader run (one epoch takes well under a second)")
    p.add_argument("--quick", action="store_true", help="5000 images, 1 round")
    args = p.parse_args()
    if args.quick:
        args.images, args.rounds = 5000, 1
    torch.set_num_threads(1)

    spec = args.dataset or _common.cifar_spec_or_synthetic()
    started = time.perf_counter()
    data = load_dataset(spec)
    images, labels = data.train_images[: args.images].clone(), data.train_labels[: args.images].clone()
    load_seconds = time.perf_counter() - started
    mean, std = data.channel_stats()
    print(f"{spec}: {images.shape[0]} images {tuple(images.shape[1:])} (loaded in {load_seconds:.1f} s), "
          f"batch {args.batch_size}, {args.rounds} rounds, torch threads {torch.get_num_threads()}")

    device_loader = DeviceLoader(images, labels, args.batch_size, train=True, seed=0, mean=mean, std=std,
                                 crop_padding=4, flip=True)
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((mean / 255).tolist(), (std / 255).tolist()),
    ])
    dataset = PILDataset(images, labels, transform)
    device_names = ("DeviceLoader",)
    loaders = {
        "DeviceLoader": device_loader,
        "DataLoader PIL, num_workers=0": DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                                    num_workers=0),
    }
    if not args.no_workers_row:
        loaders["DataLoader PIL, num_workers=2 (info)"] = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2, persistent_workers=True)

    # same output? (shape, dtype and normalisation scale)
    x_dev, _ = next(iter(device_loader))
    x_pil, _ = next(iter(loaders["DataLoader PIL, num_workers=0"]))
    assert x_dev.shape == x_pil.shape and x_dev.dtype == x_pil.dtype, (x_dev.shape, x_pil.shape)
    check = {"device_mean_std": [x_dev.mean().item(), x_dev.std().item()],
             "pil_mean_std": [x_pil.mean().item(), x_pil.std().item()]}

    for loader in loaders.values():  # warm-up pass (starts the persistent workers)
        count_epoch(loader)

    runs: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(args.rounds):
        names = list(loaders) if r % 2 == 0 else list(reversed(loaders))
        for name in names:
            seen, seconds = count_epoch(loaders[name], args.device_epochs if name in device_names else 1)
            runs[name].append(seen / seconds)
            print(f"  round {r + 1} {name:45s} {seen / seconds:10,.0f} img/s", flush=True)

    stats = {name: _common.summarise(v) for name, v in runs.items()}
    base = stats["DataLoader PIL, num_workers=0"]["median"]
    rows = [[name, s["median"], s["min"], s["max"], s["median"] / base] for name, s in stats.items()]
    print()
    print(_common.table(["loader", "img/s median", "min", "max", "x DataLoader(0 workers)"], rows))
    paired = [d / p0 for d, p0 in zip(runs["DeviceLoader"], runs["DataLoader PIL, num_workers=0"])]
    ratio = stats["DeviceLoader"]["median"] / base
    print(f"\nDeviceLoader / DataLoader at equal CPU (1 thread, 0 workers): {ratio:.1f}x "
          f"(median of per-round pairs {_common.summarise(paired)['median']:.1f}x; target >= 10x)")
    path = _common.write_result("loader", {
        "settings": {
            "dataset": spec, "images": int(images.shape[0]), "batch_size": args.batch_size, "rounds": args.rounds,
            "torch_threads": 1, "device_epochs_per_run": args.device_epochs, "augmentation": "random crop 32 with padding 4 (zeros), horizontal flip, normalise",
            "pil_transforms": "RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)",
            "device": "cpu", "quick": args.quick, "dataset_load_seconds": load_seconds,
        },
        "images_per_s": stats,
        "ratios": {
            "device_over_dataloader_w0": ratio,
            "device_over_dataloader_w0_paired_median": _common.summarise(paired)["median"],
            **({"device_over_dataloader_w2": stats["DeviceLoader"]["median"] / stats["DataLoader PIL, num_workers=2 (info)"]["median"]}
               if "DataLoader PIL, num_workers=2 (info)" in stats else {}),
        },
        "output_check": check,
        "note": "2-core CPU machine shared with other work; num_workers=2 uses two extra processes (not equal CPU).",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
