"""Where the engine's training step spends its time compared with the bare loop (a diagnostic).

Profiles ``Generation.train_epoch`` (label or BAN loss) and the bare loop of
``step_overhead.py`` with ``torch.profiler`` over the same number of steps, and prints the ops
whose self CPU time differs the most, plus the per-step wall time of each. Also prints a
cProfile of the Python-side frames of one engine epoch (``--cprofile``).

    .venv/bin/python benchmarks/profile_step.py [--loss label|ban] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import _common
from ray_ban.data import DeviceLoader, synthetic
from ray_ban.core.engine import Generation
from ray_ban.models import build
from ray_ban.config.recipe import Recipe
from step_overhead import BareLoop


def op_totals(prof) -> dict[str, tuple[float, int]]:
    totals: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for evt in prof.key_averages():
        totals[evt.key][0] += evt.self_cpu_time_total / 1000.0  # ms
        totals[evt.key][1] += evt.count
    return {k: (v[0], v[1]) for k, v in totals.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn-10-1")
    p.add_argument("--loss", default="label", choices=("label", "ban"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--cprofile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = synthetic(10, train=args.steps * args.batch_size, test=100, seed=0)
    recipe = Recipe(epochs=1000, batch_size=args.batch_size, lr=0.05)
    torch.manual_seed(0)
    student0 = build(args.model, 10)
    torch.manual_seed(1)
    teacher = build(args.model, 10).eval().requires_grad_(False) if args.loss == "ban" else None
    gen = Generation(copy.deepcopy(student0), data, recipe, loss=args.loss, teacher=teacher)
    bare = BareLoop(copy.deepcopy(student0), teacher, recipe, foreach=True)
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.train_images, data.train_labels, args.batch_size, train=True, seed=0, mean=mean, std=std)
    batches = list(loader)

    gen.train_epoch(), bare.run(batches)  # warm-up
    walls = {"engine": [], "bare": []}
    for _ in range(2):
        walls["engine"].append(args.steps * args.batch_size / gen.train_epoch().images_per_s / args.steps * 1000)
        walls["bare"].append(bare.run(batches) / args.steps * 1000)
    print("ms/step (2 alternating runs):", {k: [round(x, 1) for x in v] for k, v in walls.items()})

    with profile(activities=[ProfilerActivity.CPU]) as p_engine:
        gen.train_epoch()
    with profile(activities=[ProfilerActivity.CPU]) as p_bare:
        bare.run(batches)
    e, b = op_totals(p_engine), op_totals(p_bare)
    rows = []
    for key in set(e) | set(b):
        te, ce = e.get(key, (0.0, 0))
        tb, cb = b.get(key, (0.0, 0))
        rows.append((key, te / args.steps, tb / args.steps, (te - tb) / args.steps, ce, cb))
    print(f"\nself CPU ms per step, engine ({args.loss}) vs bare, largest |difference| first")
    rows.sort(key=lambda r: -abs(r[3]))
    print(_common.table(["op", "engine ms/step", "bare ms/step", "diff", "engine calls", "bare calls"],
                        [(r[0][:60], f"{r[1]:.3f}", f"{r[2]:.3f}", f"{r[3]:+.3f}", r[4], r[5]) for r in rows[: args.top]]))
    print(f"\ntotal self CPU ms/step: engine {sum(v[0] for v in e.values()) / args.steps:.1f}, "
          f"bare {sum(v[0] for v in b.values()) / args.steps:.1f}")
    print("\nengine top ops by self CPU:")
    print(p_engine.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    if args.cprofile:
        prof = cProfile.Profile()
        started = time.perf_counter()
        prof.enable()
        gen.train_epoch()
        prof.disable()
        print(f"\ncProfile of one engine epoch ({time.perf_counter() - started:.2f} s):")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())


if __name__ == "__main__":
    main()
