"""Overhead of ray-ban's training step versus a bare PyTorch loop doing the same work, on CPU.

Three things are measured, with timing runs interleaved (engine / bare alternate within each
round, and the order flips every round) so that the load of a shared machine hits both alike:

1. engine vs bare, BAN loss: ``Generation(loss='ban', teacher=...)`` against a plain loop with the
   same student, teacher, batches, soft cross-entropy to the teacher's softmax and SGD
   (nesterov, momentum 0.9, wd 5e-4).
2. engine vs bare, label loss (no teacher).
3. teacher cost: distillation step time / label-only step time of the same student.

The engine is given a dataset whose train split is exactly ``steps * batch`` images and whose
test split is 100 images, so one ``train_epoch()`` is ``steps`` training steps plus a negligible
evaluation; its train-only throughput comes from the epoch report (``images_per_s`` is timed
before evaluation). The bare loop runs over a fixed list of batches precomputed from a
``DeviceLoader`` with the engine's settings, so the engine additionally pays for augmenting its
batches on the fly; the informational row "bare + live DeviceLoader" shows what that costs.

    .venv/bin/python benchmarks/step_overhead.py [--quick] [--model wrn-10-1] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

import _common
from ray_ban.data import DeviceLoader, synthetic
from ray_ban.core.engine import Generation
from ray_ban.models import build, parameter_count
from ray_ban.config.recipe import Recipe


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wrn-10-1")
    p.add_argument("--teacher-model", default=None, help="default: the same architecture as --model (BAN)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of engine/bare runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--bare-foreach", action="store_true",
                   help="give the bare loop's SGD foreach=True like the engine (default: PyTorch's default)")
    p.add_argument("--no-live", action="store_true", help="skip the informational bare + live DeviceLoader runs")
    p.add_argument("--quick", action="store_true", help="a smoke run: 8 steps, 1 round")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 8, 1
    args.teacher_model = args.teacher_model or args.model
    return args


def soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """BAN loss as a user would write it: cross-entropy to the teacher's softmax."""
    probs = torch.softmax(teacher_logits.float(), dim=1)
    return -(probs * torch.log_softmax(student_logits.float(), dim=1)).sum(dim=1).mean()


class BareLoop:
    """The plain-PyTorch reference: one student, its SGD, and optionally a frozen teacher."""

    def __init__(self, student, teacher, recipe: Recipe, foreach: bool):
        # the same memory layout as the engine (channels_last, 1.3x faster on this CPU)
        self.student = student.to(memory_format=torch.channels_last)
        self.teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
        kwargs = {"foreach": True} if foreach else {}
        self.opt = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                   nesterov=recipe.nesterov, weight_decay=recipe.weight_decay, **kwargs)

    def run(self, batches) -> float:
        """Train over ``batches``; returns the wall seconds."""
        self.student.train()
        started = time.perf_counter()
        for images, labels in batches:
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(images)
                loss = soft_ce(self.student(images), teacher_logits)
            else:
                loss = F.cross_entropy(self.student(images), labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        loss.item()
        return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    n_images = args.steps * args.batch_size
    data = synthetic(10, train=n_images, test=100, seed=0)
    recipe = Recipe(epochs=1000, batch_size=args.batch_size, lr=args.lr)

    torch.manual_seed(0)
    student0 = build(args.model, data.num_classes)
    torch.manual_seed(1)
    teacher = build(args.teacher_model, data.num_classes).eval().requires_grad_(False)

    engines = {
        "ban": Generation(copy.deepcopy(student0), data, recipe, loss="ban", teacher=teacher),
        "label": Generation(copy.deepcopy(student0), data, recipe, loss="label"),
    }
    bares = {
        "ban": BareLoop(copy.deepcopy(student0), teacher, recipe, args.bare_foreach),
        "label": BareLoop(copy.deepcopy(student0), None, recipe, args.bare_foreach),
    }
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.train_images, data.train_labels, args.batch_size, train=True, seed=0,
                          mean=mean, std=std, crop_padding=recipe.crop_padding, flip=recipe.flip, channels_last=True)
    loader.set_epoch(0)
    batches = list(loader)  # fixed, precomputed augmented batches for the bare loop
    assert len(batches) == args.steps and len(engines["ban"].train_loader) == args.steps
    live = None if args.no_live else {
        "ban": BareLoop(copy.deepcopy(student0), teacher, recipe, args.bare_foreach),
        "label": BareLoop(copy.deepcopy(student0), None, recipe, args.bare_foreach),
    }

    def run_engine(mode: str) -> float:
        report = engines[mode].train_epoch()
        return report.images_per_s

    def run_bare(mode: str) -> float:
        return n_images / bares[mode].run(batches)

    def run_live(mode: str) -> float:
        loader.set_epoch(loader.epoch + 1)
        return n_images / live[mode].run(loader)

    print(f"model {args.model} ({parameter_count(student0):,} params), teacher {args.teacher_model}, "
          f"batch {args.batch_size}, {args.steps} steps/run, {args.rounds} rounds, {torch.get_num_threads()} threads")
    # warm-up: one untimed run of everything (allocator, oneDNN kernel selection, first-call costs)
    for mode in ("ban", "label"):
        run_engine(mode)
        run_bare(mode)
        if live is not None:
            run_live(mode)

    runs: dict[str, list[float]] = {k: [] for k in (
        "engine_ban", "bare_ban", "engine_label", "bare_label", "bare_live_ban", "bare_live_label")}
    started = time.perf_counter()
    for r in range(args.rounds):
        for mode in ("ban", "label"):
            order = ("engine", "bare") if r % 2 == 0 else ("bare", "engine")
            for who in order:
                ips = run_engine(mode) if who == "engine" else run_bare(mode)
                runs[f"{who}_{mode}"].append(ips)
                print(f"  round {r + 1} {who:9s} {mode:5s} {ips:8.1f} img/s", flush=True)
            if live is not None:  # informational: the bare loop fed by a live DeviceLoader
                runs[f"bare_live_{mode}"].append(run_live(mode))
                print(f"  round {r + 1} bare+live {mode:5s} {runs[f'bare_live_{mode}'][-1]:8.1f} img/s", flush=True)
    timed_seconds = time.perf_counter() - started

    stats = {k: _common.summarise(v) for k, v in runs.items() if v}
    med = {k: v["median"] for k, v in stats.items()}
    # per-round ratios pair runs measured next to each other, which cancels slow drifts in machine load
    paired = {mode: [e / b for e, b in zip(runs[f"engine_{mode}"], runs[f"bare_{mode}"])] for mode in ("ban", "label")}
    ratios = {
        "engine_over_bare_ban": med["engine_ban"] / med["bare_ban"],
        "engine_over_bare_label": med["engine_label"] / med["bare_label"],
        "engine_over_bare_ban_paired_median": _common.summarise(paired["ban"])["median"],
        "engine_over_bare_label_paired_median": _common.summarise(paired["label"])["median"],
        # step time with the teacher / step time without it (>1: what distillation costs)
        "teacher_cost_engine": med["engine_label"] / med["engine_ban"],
        "teacher_cost_bare": med["bare_label"] / med["bare_ban"],
    }
    if "bare_live_ban" in med:
        for mode in ("ban", "label"):
            pairs = [lv / b for lv, b in zip(runs[f"bare_live_{mode}"], runs[f"bare_{mode}"])]
            ratios[f"bare_live_over_bare_{mode}_paired_median"] = _common.summarise(pairs)["median"]

    rows = [
        ["engine, BAN (teacher)", med["engine_ban"], stats["engine_ban"]["min"], stats["engine_ban"]["max"]],
        ["bare,   BAN (teacher)", med["bare_ban"], stats["bare_ban"]["min"], stats["bare_ban"]["max"]],
        ["engine, label only", med["engine_label"], stats["engine_label"]["min"], stats["engine_label"]["max"]],
        ["bare,   label only", med["bare_label"], stats["bare_label"]["min"], stats["bare_label"]["max"]],
    ]
    if "bare_live_ban" in med:
        for mode, what in (("ban", "BAN"), ("label", "label")):
            s = stats[f"bare_live_{mode}"]
            rows.append([f"bare + live DeviceLoader, {what} (info)", s["median"], s["min"], s["max"]])
    print()
    print(_common.table(["run", "img/s median", "min", "max"], rows))
    print()
    print(_common.table(["ratio", "value"], [
        ["engine/bare BAN (medians; target >= 0.95)", ratios["engine_over_bare_ban"]],
        ["engine/bare BAN (median of per-round pairs)", ratios["engine_over_bare_ban_paired_median"]],
        ["engine/bare label (medians; target >= 0.95)", ratios["engine_over_bare_label"]],
        ["engine/bare label (median of per-round pairs)", ratios["engine_over_bare_label_paired_median"]],
        ["teacher cost, engine: BAN step / label step", ratios["teacher_cost_engine"]],
        ["teacher cost, bare:   BAN step / label step", ratios["teacher_cost_bare"]],
        *([[f"bare live loader / bare precomputed ({m}, paired)", ratios[f"bare_live_over_bare_{m}_paired_median"]]
           for m in ("ban", "label")] if "bare_live_ban" in med else []),
    ]))
    path = _common.write_result("step_overhead", {
        "settings": {
            "model": args.model, "teacher_model": args.teacher_model, "params": parameter_count(student0),
            "batch_size": args.batch_size, "steps_per_run": args.steps, "rounds": args.rounds,
            "threads": args.threads, "dataset": f"synthetic, {n_images} train / 100 test images",
            "bare_sgd": "foreach=True" if args.bare_foreach else "PyTorch default (for-loop on CPU)",
            "engine_sgd": "foreach=True (engine's CPU setting)", "quick": args.quick,
            "timed_seconds": timed_seconds,
        },
        "images_per_s": stats,
        "ratios": ratios,
        "note": "2-core CPU machine shared with other work: absolute numbers are noisy; ratios are from interleaved runs.",
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
