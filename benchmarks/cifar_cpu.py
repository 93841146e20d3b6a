"""Train a small network on real CIFAR-10 on the CPU with the engine, within a time budget.

Uses ``Generation`` (label loss, no teacher) on ``parquet:/work/shared/data/cifar10-jpeg`` and
reports the final test error, epochs, training images/s and wall time. The schedule is fixed in
advance by ``--epochs`` (one-cycle needs to know its length); ``--budget-minutes`` is a guard: if
the next epoch would not finish within it (judged by the last epoch's time), training stops early
and the result says so (``stopped_by_budget``) -- choose ``--epochs`` so that this does not happen.

Reference to match: a bare PyTorch 0.12M-parameter ResNet (widths 16/32/64, batched crop/flip,
SGD nesterov, one-cycle, batch 256) reached 19.8% test error after 6 epochs in 5 minutes at
~1000 img/s on the 2-core CPU machine.

    .venv/bin/python benchmarks/cifar_cpu.py              # the full run (about 6-10 minutes)
    .venv/bin/python benchmarks/cifar_cpu.py --quick      # smoke test: 1 epoch on 5000 images
"""

from __future__ import annotations

import argparse
import time

import torch

import _common
from ray_ban.data import load_dataset
from ray_ban.core.engine import Generation
from ray_ban.models import build, parameter_count
from ray_ban.config.recipe import Recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=f"parquet:{_common.CIFAR_DIR}")
    p.add_argument("--model", default="wrn-10-1",
                   help="registered name: wrn-{d}-{k} ((d-4)%%6==0), preresnet-{d}, densenet-{L}-{k}, ...")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--schedule", default="onecycle", choices=Recipe.SCHEDULES)
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--train-subset", type=int, default=None, help="use the first N train images")
    p.add_argument("--test-subset", type=int, default=None, help="use the first N test images")
    p.add_argument("--budget-minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 5000 train / 2000 test images")
    args = p.parse_args()
    if args.quick:
        args.epochs = 1
        args.train_subset = args.train_subset or 5000
        args.test_subset = args.test_subset or 2000
    torch.set_num_threads(args.threads)

    wall_started = time.perf_counter()
    data = load_dataset(args.dataset)
    if args.train_subset or args.test_subset:
        data = data.subset(train=args.train_subset, test=args.test_subset)
    load_seconds = time.perf_counter() - wall_started
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                    weight_decay=args.weight_decay, momentum=0.9, nesterov=True)
    torch.manual_seed(args.seed)
    model = build(args.model, data.num_classes)
    gen = Generation(model, data, recipe, loss="label", seed=args.seed)
    print(f"{args.dataset}: {data.train_images.shape[0]} train / {data.test_images.shape[0]} test images "
          f"(loaded in {load_seconds:.1f} s); {args.model} ({parameter_count(model):,} params), "
          f"{args.epochs} epochs x {len(gen.train_loader)} steps of {args.batch_size}, {args.schedule} lr {args.lr}, "
          f"{torch.get_num_threads()} threads, budget {args.budget_minutes:g} min")

    budget = args.budget_minutes * 60
    train_started = time.perf_counter()
    reports = []
    stopped_by_budget = False
    while gen.epoch < recipe.epochs:
        report = gen.train_epoch()
        reports.append(report)
        elapsed = time.perf_counter() - train_started
        print(f"  epoch {report.epoch:2d}  loss {report.train_loss:.3f}  test error {report.test_error:5.2f}%  "
              f"{report.images_per_s:6.0f} img/s  {report.seconds:5.1f} s  (elapsed {elapsed:5.0f} s)", flush=True)
        if gen.epoch < recipe.epochs and elapsed + report.seconds > budget:
            stopped_by_budget = True
            print(f"  stopping: the next epoch would end past the {args.budget_minutes:g}-minute budget")
            break
    train_wall = time.perf_counter() - train_started
    total_wall = time.perf_counter() - wall_started

    last = reports[-1]
    train_images = len(reports) * len(gen.train_loader) * args.batch_size
    train_only_seconds = sum(len(gen.train_loader) * args.batch_size / r.images_per_s for r in reports)
    summary = {
        "final_test_error": last.test_error,
        "best_test_error": last.best_test_error,
        "epochs_done": len(reports),
        "epochs_planned": args.epochs,
        "stopped_by_budget": stopped_by_budget,
        "train_images_per_s": train_images / train_only_seconds,
        "train_seconds_excluding_eval": train_only_seconds,
        "train_and_eval_wall_seconds": train_wall,
        "total_wall_seconds_including_data_load": total_wall,
    }
    print()
    print(_common.table(["metric", "value"], [
        ["final test error (%)", last.test_error],
        ["epochs", f"{len(reports)}/{args.epochs}" + (" (budget stop)" if stopped_by_budget else "")],
        ["train img/s (excl. eval)", summary["train_images_per_s"]],
        ["train+eval wall (s)", train_wall],
        ["total wall incl. data load (s)", total_wall],
        ["reference: bare PyTorch 0.12M ResNet", "19.8% after 6 epochs, 5 min, ~1000 img/s"],
    ]))
    path = _common.write_result("cifar_cpu", {
        "settings": {
            "dataset": args.dataset, "train_images": int(data.train_images.shape[0]),
            "test_images": int(data.test_images.shape[0]), "model": args.model, "params": parameter_count(model),
            "recipe": recipe.to_dict(), "threads": args.threads, "seed": args.seed,
            "budget_minutes": args.budget_minutes, "quick": args.quick, "dataset_load_seconds": load_seconds,
        },
        "summary": summary,
        "epochs": [r.to_dict() for r in reports],
        "reference": {"bare_pytorch_resnet_0.12M": {"test_error": 19.8, "epochs": 6, "minutes": 5, "images_per_s": 1000}},
        "note": "2-core CPU machine shared with other work: throughput and wall time depend on its load.",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
