"""Diagnostic: would the engine train faster on CPU in channels_last memory format?

``Generation`` uses channels_last only on CUDA (``memory_format = torch.channels_last if cuda else
torch.contiguous_format`` and ``DeviceLoader(channels_last=cuda)``). This script builds two
identical Generations per loss and, in one of them, switches the student, the teacher and the
train loader to channels_last after construction (attribute changes on the object; the engine's
source is not touched; parameters stay the same objects, so the optimiser is unaffected). Runs
are interleaved; it reports train images/s of both and the speed-up.

    .venv/bin/python benchmarks/cpu_channels_last.py [--quick] [--model wrn-10-1] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy

import torch

import _common
from ray_ban.data import synthetic
from ray_ban.core.engine import Generation
from ray_ban.models import build
from ray_ban.config.recipe import Recipe


def to_channels_last(gen: Generation) -> Generation:
    gen.student.to(memory_format=torch.channels_last)
    if gen.teacher is not None:
        gen.teacher.to(memory_format=torch.channels_last)
    gen.train_loader.channels_last = True
    gen.test_loader.channels_last = True
    return gen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn-10-1")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 5, 1
    torch.set_num_threads(args.threads)
    n = args.steps * args.batch_size
    data = synthetic(10, train=n, test=100, seed=0)
    recipe = Recipe(epochs=1000, batch_size=args.batch_size, lr=0.05)
    torch.manual_seed(0)
    student0 = build(args.model, 10)
    torch.manual_seed(1)
    teacher0 = build(args.model, 10)

    gens = {}
    for loss in ("label", "ban"):
        for fmt in ("contiguous", "channels_last"):
            teacher = copy.deepcopy(teacher0) if loss == "ban" else None
            gen = Generation(copy.deepcopy(student0), data, recipe, loss=loss, teacher=teacher)
            gens[(loss, fmt)] = to_channels_last(gen) if fmt == "channels_last" else gen
    for gen in gens.values():  # warm-up
        gen.train_epoch()
    runs = {k: [] for k in gens}
    for r in range(args.rounds):
        for loss in ("label", "ban"):
            fmts = ("contiguous", "channels_last") if r % 2 == 0 else ("channels_last", "contiguous")
            for fmt in fmts:
                ips = gens[(loss, fmt)].train_epoch().images_per_s
                runs[(loss, fmt)].append(ips)
                print(f"  round {r + 1} {loss:5s} {fmt:13s} {ips:7.0f} img/s", flush=True)
    stats = {f"{loss}_{fmt}": _common.summarise(v) for (loss, fmt), v in runs.items()}
    speedup = {loss: stats[f"{loss}_channels_last"]["median"] / stats[f"{loss}_contiguous"]["median"]
               for loss in ("label", "ban")}
    print()
    print(_common.table(["loss", "contiguous img/s", "channels_last img/s", "speed-up"], [
        [loss, stats[f"{loss}_contiguous"]["median"], stats[f"{loss}_channels_last"]["median"], speedup[loss]]
        for loss in ("label", "ban")]))
    path = _common.write_result("cpu_channels_last", {
        "settings": {"model": args.model, "batch_size": args.batch_size, "steps_per_run": args.steps,
                     "rounds": args.rounds, "threads": args.threads, "quick": args.quick},
        "images_per_s": stats,
        "speedup_channels_last": speedup,
        "note": "2-core CPU machine shared with other work; runs interleaved.",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
