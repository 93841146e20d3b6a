"""The engine against the bare anchor script, side by side on the shared CIFAR-10, same budget.

Runs ``/work/shared/anchors/bare_ban_cifar10.py DATA EPOCHS`` (bare PyTorch: 0.12M ResNet, reflect-pad
crops and flips, SGD Nesterov, torch's OneCycleLR, batch 256, 2 threads) as a subprocess and reads
its per-epoch lines, stopping it after ``--generations`` generations; then trains the same chain with
``ray_ban.engine.Generation`` (``resnet9-16``, ``schedule: onecycle-cosine``, ``crop_padding_mode:
reflect``) on the same data and threads. Throughput is measured the anchor's way for both: train
images over the wall time of training plus the per-epoch test evaluation (the engine's train-only
rate is reported too). Writes benchmarks/results/bare_vs_engine.json.

    python benchmarks/bare_vs_engine.py                 # teacher only: about 12 minutes on 2 cores
    python benchmarks/bare_vs_engine.py --generations 2 # teacher and BAN-1
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's ray_ban, not an installed one
import _common  # noqa: E402
from ray_ban.data import load_dataset  # noqa: E402
from ray_ban.core.engine import Generation  # noqa: E402
from ray_ban.models import build, parameter_count  # noqa: E402
from ray_ban.config.recipe import Recipe  # noqa: E402

ANCHOR = Path("/work/shared/anchors/bare_ban_cifar10.py")
EPOCH_LINE = re.compile(r"seed (\d+) epoch (\d+)/(\d+) test error ([0-9.]+) \((\d+) img/s\)")
GEN_LINE = re.compile(r"gen (\d+) \((.+)\): error ([0-9.]+), (\d+)s")
TARGET_POINTS, TARGET_SPEED = 0.7, 0.95


def run_anchor(data_dir: Path, epochs: int, generations: int, log: Path | None = None) -> dict:
    """The anchor's per-epoch and per-generation lines (errors in %), stopped after ``generations``.

    With ``log``, the lines are read from a saved run of the anchor (its stdout) instead of a new run."""
    started = time.perf_counter()
    proc = None
    if log is None:
        proc = subprocess.Popen([sys.executable, str(ANCHOR), str(data_dir), str(epochs)],
                                stdout=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stdout is not None
        lines = proc.stdout
    else:
        lines = log.read_text().splitlines()
    gens: list[dict] = []
    epochs_seen: list[dict] = []
    for line in lines:
        print("  anchor |", line.rstrip(), flush=True)
        if m := EPOCH_LINE.search(line):
            epochs_seen.append({"seed": int(m[1]), "epoch": int(m[2]), "test_error": 100 * float(m[4]),
                                "images_per_s_cumulative": float(m[5])})
        elif m := GEN_LINE.search(line):
            last = epochs_seen[-1]
            gens.append({"generation": int(m[1]), "role": m[2], "test_error": 100 * float(m[3]),
                         "seconds": float(m[4]), "images_per_s": last["images_per_s_cumulative"],
                         "epochs": [e for e in epochs_seen if e["seed"] == int(m[1])]})
            if len(gens) == generations:
                break
    if proc is not None:
        proc.terminate()
        proc.wait()
    wall = None if log else time.perf_counter() - started
    return {"generations": gens, "wall_seconds_including_load": wall, "from_log": str(log) if log else None}


def run_engine(spec: str, epochs: int, generations: int, threads: int) -> dict:
    """The same chain through ``Generation``: teacher (label loss, seed 0), then BAN-k (teacher only, seed k)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = load_dataset(spec)
    load_seconds = time.perf_counter() - started
    recipe = Recipe(epochs=epochs, batch_size=256, lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    schedule="onecycle-cosine", crop_padding=4, crop_padding_mode="reflect", flip=True,
                    normalize=True, precision="fp32")
    gens, teacher = [], None
    for k in range(generations):
        torch.manual_seed(k)
        model = build("resnet9-16", data.num_classes)
        gen = Generation(model, data, recipe, loss="label" if teacher is None else "ban", teacher=teacher, seed=k)
        t0 = time.perf_counter()
        reports = []
        for report in gen.run():
            reports.append(report)
            print(f"  engine | gen {k} epoch {report.epoch}/{epochs} test error {report.test_error:.2f}% "
                  f"({report.images_per_s:.0f} img/s train only, {report.seconds:.1f} s)", flush=True)
        seconds = time.perf_counter() - t0
        images = epochs * len(gen.train_loader) * recipe.batch_size
        train_only = sum(len(gen.train_loader) * recipe.batch_size / r.images_per_s for r in reports)
        gens.append({"generation": k, "role": "teacher" if k == 0 else f"BAN-{k}", "test_error": reports[-1].test_error,
                     "seconds": seconds, "images_per_s": images / sum(r.seconds for r in reports),
                     "train_only_images_per_s": images / train_only, "epochs": [r.to_dict() for r in reports]})
        teacher = gen.student.eval()
    return {"model": "resnet9-16", "params": parameter_count(teacher), "recipe": recipe.to_dict(),
            "dataset_load_seconds": load_seconds, "generations": gens}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=_common.CIFAR_DIR)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--generations", type=int, default=1, choices=(1, 2, 3))
    p.add_argument("--threads", type=int, default=2, help="the anchor fixes 2")
    p.add_argument("--anchor-log", type=Path, help="read the anchor's lines from this saved stdout instead of running it")
    p.add_argument("--reanalyse", action="store_true",
                   help="recompute the comparison from benchmarks/results/bare_vs_engine.json without training")
    args = p.parse_args()
    if args.reanalyse:
        old = json.loads((_common.RESULTS / "bare_vs_engine.json").read_text())
        report(args, old["anchor"], old["engine"])
        return
    anchor = run_anchor(args.data_dir, args.epochs, args.generations, args.anchor_log)
    engine = run_engine(f"parquet:{args.data_dir}", args.epochs, args.generations, args.threads)
    report(args, anchor, engine)


def epoch_seconds_of_anchor(gen: dict, images_per_epoch: int) -> list[float]:
    """Per-epoch wall seconds (train + eval) from the anchor's cumulative images/s lines."""
    ends = [e["epoch"] * images_per_epoch / e["images_per_s_cumulative"] for e in gen["epochs"]]
    return [b - a for a, b in zip([0.0, *ends], ends)]


def compare(a: dict, e: dict) -> dict:
    """Error gap and three speed ratios: whole run, median epoch, fastest epoch (a shared box's load hits single epochs)."""
    engine_s = [x["seconds"] for x in e["epochs"]]
    images = round(e["images_per_s"] * sum(engine_s) / len(engine_s))  # per epoch; the anchor's batches are the same
    anchor_s = epoch_seconds_of_anchor(a, images)
    gap = e["test_error"] - a["test_error"]
    ratios = {"whole_run": e["images_per_s"] / a["images_per_s"], "median_epoch": statistics.median(anchor_s) / statistics.median(engine_s),
              "fastest_epoch": min(anchor_s) / min(engine_s)}
    return {"role": a["role"], "anchor_error": a["test_error"], "engine_error": e["test_error"], "error_gap_points": gap,
            "anchor_epoch_seconds": anchor_s, "engine_epoch_seconds": engine_s, "images_per_epoch": images,
            "speed_ratio": ratios, "error_within_target": gap <= TARGET_POINTS,
            "speed_within_target": {k: r >= TARGET_SPEED for k, r in ratios.items()}}


def report(args: argparse.Namespace, anchor: dict, engine: dict) -> None:
    """Print the side-by-side table and write benchmarks/results/bare_vs_engine.json."""
    verdicts = [compare(a, e) for a, e in zip(anchor["generations"], engine["generations"])]
    rows = [[v["role"], v["anchor_error"], v["engine_error"], v["error_gap_points"], v["speed_ratio"]["whole_run"],
             v["speed_ratio"]["median_epoch"], v["speed_ratio"]["fastest_epoch"]] for v in verdicts]
    print()
    print(_common.table(["generation", "anchor err %", "engine err %", "gap (pts)", "speed: whole run",
                         "speed: median epoch", "speed: fastest epoch"], rows))
    path = _common.write_result("bare_vs_engine", {
        "settings": {"data_dir": str(args.data_dir), "epochs": args.epochs, "generations": args.generations,
                     "threads": args.threads, "anchor": str(ANCHOR),
                     "target": f"engine error <= anchor + {TARGET_POINTS} points at >= {TARGET_SPEED}x its images/s"},
        "anchor": anchor, "engine": engine, "comparison": verdicts,
        "note": "images/s = train images / (train + per-epoch test evaluation) wall time, the anchor's definition; "
                "speed ratios are engine / anchor (whole run, median epoch, fastest epoch); 2-core CPU shared with "
                "other work, run one after the other (anchor first).",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
