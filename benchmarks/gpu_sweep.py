"""Real sweeps through ``python -m ray_ban.sweep`` on one NVIDIA GPU, and what each precision costs (issue 19).

Sections, each written to ``gpu_sweep.json`` as soon as it is done (a budget guard skips what would
not fit in ``--budget-s``; the defaults fit in about 8 minutes on an H200):

1. one chain: a ``wrn-16-4`` teacher -> BAN-1 on CIFAR-10, ``--epochs`` each, ``--gpus-per-worker 1``:
   the devices and precisions results.parquet records, and the sweep's wall time against the sum
   of its models' training times (``wall_time_s``: Ray, start-up and data loading are the rest).
2. precision: the teacher trained in 1 (an untrained one if 1 failed) gives its test-set soft
   targets under fp32 (IEEE, TF32 off), tf32 (the fp32 forward the engine's teacher now runs under
   bf16/fp16/tf32) and bf16 autocast (what the engine ran before): the largest absolute probability
   difference from fp32; and one BAN epoch (a ``wrn-16-4`` student of that teacher) under the
   recipe's fp32, tf32 and bf16 (first epoch and second, after cudnn's autotuning).
3. four chains (seeds 0-3, each its own teacher -> BAN-1) with ``--gpus-per-worker 0.25``: the
   aggregate images/s through ray-ban against the one chain (by the sweep's wall time, and the
   summed training rates of the models that ran side by side).

    python benchmarks/gpu_sweep.py --out $OUT              # on a machine with an NVIDIA GPU
    python benchmarks/gpu_sweep.py --check                 # CPU dry run of every section (synthetic data, minutes)

The dataset is ``parquet:<--data>`` (default ``../shared/data/cifar10-jpeg`` beside the checkout). The
space files are written into a temporary folder at run time; the sweeps' run folders go there too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
from ray_ban import models  # noqa: E402
from ray_ban.data import DeviceLoader, load_dataset, synthetic  # noqa: E402
from ray_ban.core.engine import Generation  # noqa: E402
from ray_ban.core.precision import Precision  # noqa: E402
from ray_ban.config.recipe import Recipe  # noqa: E402
from ray_ban.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def space(args, name: str, seeds: list[int]) -> dict:
    """A sweep of one row: a teacher and one BAN-1 chain per seed, with the benchmark's recipe."""
    raw = {"name": name, "dataset": args.dataset, "seeds": seeds,
           "recipe": {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "schedule": "onecycle",
                      "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "precision": args.sweep_precision,
                      "eval_batch_size": 1000},
           "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
           "rows": [{"row": args.model, "teacher": args.model, "chains": {"ban": {"loss": "ban", "generations": 1}}}]}
    if args.train_subset:
        raw.update(train_subset=args.train_subset, test_subset=args.test_subset)
    return raw


def run_sweep(args, folder: Path, name: str, seeds: list[int], gpus_per_worker: float, timeout: float) -> dict:
    """One fresh ``python -m ray_ban.sweep`` (Ray start-up included) and what its results hold."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space(args, name, seeds), sort_keys=False))
    out = folder / "runs"
    command = [sys.executable, "-m", "ray_ban.sweep", str(path), "--out", str(out), "--max-failures", "0",
               "--gpus-per-worker", str(gpus_per_worker), "--cpus-per-worker", str(args.cpus_per_worker)]
    print("  $ " + " ".join(command[1:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(10.0, timeout))
    except subprocess.TimeoutExpired:
        # Ctrl-C, as a user would: the sweep's ray.shutdown then ends the Ray processes it started, which
        # run in sessions of their own (a SIGKILL of the sweep's group alone would leave them running)
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        return {"error": f"timed out after {timeout:.0f} s", "output_tail": output[-3000:]}
    wall = time.perf_counter() - started
    result = {"command": " ".join(command[1:]), "exit_code": process.returncode, "sweep_wall_s": wall}
    results_file = out / name / "results.parquet"
    if process.returncode != 0 or not results_file.is_file():
        return {**result, "error": "the sweep failed", "output_tail": output[-3000:]}
    rows = pq.read_table(results_file).to_pylist()
    store = RunStore(out / name)
    trained = [r for r in rows if r["role"] != "ensemble"]
    images_per_epoch = (args.train_images // args.batch) * args.batch  # the loader drops the ragged batch
    per_model = []
    for row in trained:
        history = store.history(row["model_key"]) if row["status"] == "ok" else []
        steady = [h["images_per_s"] for h in history[1:]] or [h["images_per_s"] for h in history]
        per_model.append({"model_key": row["model_key"], "role": row["role"], "status": row["status"],
                          "wall_time_s": row["wall_time_s"], "epoch_seconds": [h["seconds"] for h in history],
                          "train_images_per_s": statistics.median(steady) if steady else None})
    images = images_per_epoch * sum(len(m["epoch_seconds"]) for m in per_model)
    model_seconds = sum(m["wall_time_s"] or 0.0 for m in per_model)
    side_by_side = {}  # the sweep trains every teacher at once, then every student
    for role in ("teacher", "student"):
        rates = [m["train_images_per_s"] for m in per_model if m["role"] == role and m["train_images_per_s"]]
        side_by_side[role] = sum(rates) if rates else None
    devices = sorted({str(r["device"]) for r in trained})
    result.update(
        all_ok=all(r["status"] == "ok" for r in rows), models=per_model,
        devices=devices, precisions=sorted({str(r["precision"]) for r in trained}),
        versions=sorted({(str(r["torch_version"]), str(r["ray_version"]), str(r["ray_ban_version"])) for r in trained}),
        records_gpu=bool(devices) and all(d not in ("cpu", "None") for d in devices),
        sum_model_wall_time_s=model_seconds, overhead_s=wall - model_seconds,
        model_time_fraction_of_wall=model_seconds / wall,
        images_trained=images, aggregate_images_per_s_by_wall=images / wall,
        summed_train_images_per_s_side_by_side=side_by_side,
        teacher_keys=[m["model_key"] for m in per_model if m["role"] == "teacher"],
        run_dir=str(out / name),
    )
    print(f"  {name}: exit {process.returncode}, {wall:.1f} s wall, models {model_seconds:.1f} s, devices {devices}, "
          f"precisions {result['precisions']}, {result['aggregate_images_per_s_by_wall']:,.0f} img/s by wall", flush=True)
    return result


def load_data(args):
    if args.check:
        return synthetic(10, args.train_subset, args.test_subset, seed=0)
    return load_dataset(args.dataset)


def section_one_chain(args, folder, budget) -> dict:
    return run_sweep(args, folder, "gpu-sweep-one", [0], args.gpus_one, timeout=min(args.sweep_timeout_s, budget.left() - 60))


def section_four_chains(args, folder, budget, one: dict) -> dict:
    four = run_sweep(args, folder, "gpu-sweep-four", [0, 1, 2, 3], args.gpus_four,
                     timeout=min(args.sweep_timeout_s, budget.left() - 10))
    if "error" not in four and "error" not in one:
        four["vs_one_chain"] = {
            "aggregate_images_per_s_by_wall": four["aggregate_images_per_s_by_wall"] / one["aggregate_images_per_s_by_wall"],
            **{f"summed_train_images_per_s_{role}": (four["summed_train_images_per_s_side_by_side"][role] /
                                                      one["summed_train_images_per_s_side_by_side"][role])
               for role in ("teacher", "student")
               if four["summed_train_images_per_s_side_by_side"][role] and one["summed_train_images_per_s_side_by_side"][role]},
        }
        print(f"  four chains vs one: {four['vs_one_chain']}", flush=True)
    return four


def section_precision(args, device: torch.device, data, one: dict) -> dict:
    """Soft targets of one trained teacher under fp32/tf32/bf16, and one BAN epoch's time under each recipe precision."""
    teacher = models.build(args.model, data.num_classes)
    source = "untrained (section one failed)"
    if "error" not in one and one.get("teacher_keys"):
        teacher.load_state_dict(RunStore(one["run_dir"]).load_state(one["teacher_keys"][0]))
        source = f"trained in section one: {one['teacher_keys'][0]}"
    teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.test_images, data.test_labels, 1000, device=device, train=False, mean=mean, std=std,
                          channels_last=True)

    def logits(name: str, autocast: bool) -> torch.Tensor:
        precision = Precision(name, device.type)
        context = precision.autocast() if autocast else torch.autocast(device.type, enabled=False)
        with torch.no_grad(), precision.math(), context:
            return torch.cat([teacher(images).float() for images, _ in loader])

    reference = logits("fp32", autocast=False)
    probs = torch.softmax(reference, dim=1)
    soft = {"teacher": source, "test_images": int(data.test_images.shape[0]),
            "max_abs_logit_fp32": reference.abs().max().item()}
    for label, name, autocast in (("tf32", "tf32", False), ("bf16_autocast", "bf16", True)):
        other = logits(name, autocast)
        diff = (torch.softmax(other, dim=1) - probs).abs()
        soft[f"{label}_vs_fp32"] = {"max_abs_prob_diff": diff.max().item(), "mean_abs_prob_diff": diff.mean().item(),
                                    "max_abs_logit_diff": (other - reference).abs().max().item(),
                                    "argmax_disagreements": int((other.argmax(1) != reference.argmax(1)).sum())}
    print(f"  soft targets vs fp32: tf32 max |dp| {soft['tf32_vs_fp32']['max_abs_prob_diff']:.2e}, "
          f"bf16 autocast max |dp| {soft['bf16_autocast_vs_fp32']['max_abs_prob_diff']:.2e}", flush=True)

    epochs = {}
    for name in ("fp32", "tf32", "bf16"):
        torch.manual_seed(1)
        student = models.build(args.model, data.num_classes)
        recipe = Recipe(epochs=2, batch_size=args.batch, lr=args.lr, schedule="onecycle", precision=name, eval_batch_size=1000)
        generation = Generation(student, data, recipe, loss="ban", teacher=teacher, device=device, seed=1)
        reports = list(generation.run())
        epochs[name] = {"ran_as": generation.precision.name, "epoch_seconds": [r.seconds for r in reports],
                        "train_images_per_s": [r.images_per_s for r in reports],
                        "test_error_after_2_epochs": reports[-1].test_error}
        print(f"  BAN epoch under {name} (ran as {generation.precision.name}): "
              f"{reports[-1].seconds:.2f} s, {reports[-1].images_per_s:,.0f} img/s", flush=True)
        del generation, student
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"soft_targets": soft, "ban_epoch": epochs}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the CIFAR-10 Parquet folder (train.parquet, test.parquet)")
    p.add_argument("--out", default=None, help="folder for gpu_sweep.json (default: benchmarks/results; --check: a temp folder)")
    p.add_argument("--budget-s", type=float, default=450)
    p.add_argument("--check", action="store_true", help="CPU dry run of every section: synthetic data, tiny model, no GPU")
    p.add_argument("--sections", default="one,precision,four")
    p.add_argument("--model", default="wrn-16-4")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--cpus-per-worker", type=float, default=2.0)
    p.add_argument("--sweep-timeout-s", type=float, default=240)
    args = p.parse_args()
    args.gpus_one, args.gpus_four, args.sweep_precision = 1.0, 0.25, "auto"
    args.train_subset = args.test_subset = None
    if args.check:
        args.model, args.epochs, args.batch, args.lr = "wrn-10-1", 1, 64, 0.05
        args.train_subset, args.test_subset, args.cpus_per_worker = 512, 200, 0.5
        args.gpus_one = args.gpus_four = 0.0
        args.budget_s, args.sweep_timeout_s = max(args.budget_s, 900), max(args.sweep_timeout_s, 400)
        args.dataset = "synthetic"
    else:
        args.dataset = f"parquet:{Path(args.data).resolve()}"
    return args


def main() -> None:
    args = parse_args()
    device = torch.device("cpu" if args.check else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_sweep.py: no CUDA device here; run it on a machine with an NVIDIA GPU, or --check for a CPU dry run")
    if not args.check and not (Path(args.data) / "train.parquet").is_file():
        sys.exit(f"gpu_sweep.py: no {Path(args.data) / 'train.parquet'}; pass --data <CIFAR-10 Parquet folder>")
    budget = Budget(args.budget_s)
    if args.out:
        out_dir = Path(args.out)
    else:  # a dry run leaves the committed results alone
        out_dir = Path(tempfile.mkdtemp(prefix="gpu-sweep-check-")) if args.check else _common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "check": args.check,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "args": {k: v for k, v in vars(args).items()}}
    result: dict = {"benchmark": "gpu_sweep", "info": info, "machine": _common.machine_info()}
    print(f"device: {info['device']}, torch {info['torch']}, CUDA {info['cuda']}", flush=True)

    t0 = time.perf_counter()
    data = load_data(args)
    args.train_images = int(data.train_images.shape[0])
    info["data_load_s"] = time.perf_counter() - t0

    minimum = {"one": 90, "precision": 45, "four": 120}
    one: dict = {"error": "not run"}
    with tempfile.TemporaryDirectory(prefix="gpu-sweep-") as folder:
        for name in args.sections.split(","):
            if budget.left() < (0 if args.check else minimum[name]):
                result[name] = {"skipped": f"budget: {budget.left():.0f} s left"}
                print(f"[{name}] skipped: {budget.left():.0f} s of budget left", flush=True)
                continue
            print(f"[{name}] ({budget.left():.0f} s of budget left)", flush=True)
            started = time.perf_counter()
            try:
                if name == "one":
                    result[name] = one = section_one_chain(args, Path(folder), budget)
                elif name == "precision":
                    result[name] = section_precision(args, device, data, one)
                else:
                    result[name] = section_four_chains(args, Path(folder), budget, one)
            except Exception as error:  # one section's failure must not lose the others' numbers
                result[name] = {"error": f"{type(error).__name__}: {error}"}
                print(f"[{name}] failed: {type(error).__name__}: {error}", flush=True)
            result[name + "_seconds"] = time.perf_counter() - started
            (out_dir / "gpu_sweep.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out_dir / 'gpu_sweep.json'}")


if __name__ == "__main__":
    main()
