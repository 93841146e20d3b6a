"""The GPU path, measured in one run of a few minutes on one CUDA card (issue 8, benchmark 6).

Sections, each written to the result file as soon as it is done (a budget guard skips what would
not fit in ``--budget-s``):

1. throughput: images/s of a BAN step (student + same-size frozen teacher) and of a label-only
   step for ``wrn-28-10`` and ``densenet-90-60``: a bare PyTorch loop in plain fp32 (TF32 off, as
   on a V100: the anchor is ~750 img/s for WRN-28-10), the bare loop with the fast settings (bf16
   autocast, channels_last, cudnn.benchmark, fused SGD), ray-ban's engine (``Generation``, fast path
   by default), the engine with ``torch.compile``, and DenseNet with gradient checkpointing
   (``memory_efficient=True``); peak GPU memory for each.
2. step overhead: engine / bare fast loop (same model, teacher, loss, batches from the same
   ``DeviceLoader``), interleaved rounds, for a small (``wrn-16-4``) and a large (``wrn-28-10``) model.
3. loader: ``DeviceLoader`` on the GPU vs torchvision's DataLoader + PIL transforms with workers and
   pinned memory, copying to the GPU, on real CIFAR-10 train images.
4. packing: N processes each training a small chain's student (``wrn-16-4``, BAN step) on the one
   GPU at the same time (what fractional ``--gpus-per-worker`` does), N = 1, 2, 4; and N models
   trained in lockstep in one process. Aggregate images/s.
5. chain: a real CIFAR-10 generation chain (teacher, BAN-1, BAN-2, plus a second label-only seed as
   the fair ensemble baseline) of ``wrn-16-4`` on the fast path: errors, ensembles, wall time.

    python benchmarks/gpu.py --data .gpudata/cifar10-jpeg --out $OUT      # on the GPU machine
    python benchmarks/gpu.py --smoke                                      # tiny CPU dry run of every section
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
from ray_ban.core import metrics  # noqa: E402
from ray_ban.data import DeviceLoader, load_dataset, synthetic  # noqa: E402
from ray_ban.core.engine import Generation  # noqa: E402
from ray_ban.models import build, parameter_count  # noqa: E402
from ray_ban.config.recipe import Recipe  # noqa: E402


def soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """BAN loss as a user would write it: cross-entropy to the teacher's softmax."""
    probs = torch.softmax(teacher_logits.float(), dim=1)
    return -(probs * torch.log_softmax(student_logits.float(), dim=1)).sum(dim=1).mean()


class BareLoop:
    """A plain PyTorch training loop with the fast-path settings as switches."""

    def __init__(self, student, teacher, device, *, bf16: bool, channels_last: bool, fused: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.student = student.to(device, memory_format=fmt)
        self.teacher = teacher.to(device, memory_format=fmt).eval().requires_grad_(False) if teacher is not None else None
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")
        self.fmt = fmt
        extra = {"fused": True} if fused and device.type == "cuda" else {}
        self.opt = torch.optim.SGD(self.student.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4, **extra)

    def run(self, batches) -> int:
        """Train over ``batches`` (any iterable of (images, labels)); returns images seen."""
        self.student.train()
        seen = 0
        for images, labels in batches:
            images = images.contiguous(memory_format=self.fmt)
            with torch.autocast(**self.autocast):
                if self.teacher is not None:
                    with torch.inference_mode():
                        teacher_logits = self.teacher(images)
                    loss = soft_ce(self.student(images), teacher_logits.clone())
                else:
                    loss = F.cross_entropy(self.student(images), labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            seen += labels.shape[0]
        return seen


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, float]:
    """(result, seconds) of fn() with the device synchronised on both sides."""
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - started


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def set_strict_fp32(on: bool) -> None:
    """fp32 as on a V100: no TF32 in convolutions or matmuls."""
    torch.backends.cudnn.allow_tf32 = not on
    torch.backends.cuda.matmul.allow_tf32 = not on


def engine_rate(model_name, device, args, *, teacher: bool, compile: bool = False, model_kwargs=None) -> dict:
    """Images/s of the engine's training step: warm-up epoch, then the best of ``args.repeats`` epochs."""
    n = args.steps * args.batch
    data = synthetic(10, train=n, test=100, seed=0)
    torch.manual_seed(0)
    student = build(model_name, 10, **(model_kwargs or {}))
    teach = build(model_name, 10).eval() if teacher else None
    recipe = Recipe(epochs=1000, batch_size=args.batch, lr=0.05, eval_batch_size=100)
    reset_peak(device)
    gen = Generation(student, data, recipe, loss="ban" if teacher else "label", teacher=teach, device=device, compile=compile)
    warm_started = time.perf_counter()
    gen.train_epoch()
    warm = time.perf_counter() - warm_started
    rates = [gen.train_epoch().images_per_s for _ in range(args.repeats)]
    out = {"images_per_s": max(rates), "runs": rates, "warmup_epoch_s": warm, "peak_gib": peak_gib(device),
           "params": parameter_count(student)}
    del gen, student, teach
    return out


def bare_rate(model_name, device, args, *, teacher: bool, fast: bool) -> dict:
    """Images/s of the bare loop over batches precomputed once on the device."""
    n = args.steps * args.batch
    data = synthetic(10, train=n, test=100, seed=0)
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.train_images, data.train_labels, args.batch, device=device, mean=mean, std=std)
    batches = list(loader)
    torch.manual_seed(0)
    student = build(model_name, 10)
    teach = build(model_name, 10) if teacher else None
    if not fast:
        torch.backends.cudnn.benchmark = False
        set_strict_fp32(True)
    reset_peak(device)
    loop = BareLoop(student, teach, device, bf16=fast, channels_last=fast, fused=fast)
    _, warm = timed(lambda: loop.run(batches), device)
    rates = []
    for _ in range(args.repeats):
        seen, seconds = timed(lambda: loop.run(batches), device)
        rates.append(seen / seconds)
    out = {"images_per_s": max(rates), "runs": rates, "warmup_s": warm, "peak_gib": peak_gib(device)}
    set_strict_fp32(False)
    torch.backends.cudnn.benchmark = True
    del loop, student, teach, batches
    return out


def section_throughput(device, args, budget) -> dict:
    results = {}
    for model in args.big_models:
        rows = {}
        for teacher in (True, False):
            tag = "ban" if teacher else "label"
            rows[f"bare_fp32_{tag}"] = bare_rate(model, device, args, teacher=teacher, fast=False)
            rows[f"bare_fast_{tag}"] = bare_rate(model, device, args, teacher=teacher, fast=True)
            rows[f"engine_{tag}"] = engine_rate(model, device, args, teacher=teacher)
            print(f"  {model} {tag}: fp32 {rows[f'bare_fp32_{tag}']['images_per_s']:,.0f}  "
                  f"bare fast {rows[f'bare_fast_{tag}']['images_per_s']:,.0f}  "
                  f"engine {rows[f'engine_{tag}']['images_per_s']:,.0f} img/s", flush=True)
        if model.startswith("densenet"):
            rows["engine_ban_memory_efficient"] = engine_rate(model, device, args, teacher=True,
                                                              model_kwargs={"memory_efficient": True})
            print(f"  {model} memory-efficient: {rows['engine_ban_memory_efficient']['images_per_s']:,.0f} img/s, "
                  f"peak {rows['engine_ban_memory_efficient']['peak_gib']} GiB vs {rows['engine_ban']['peak_gib']}",
                  flush=True)
        if budget.left() > args.compile_reserve_s:
            rows["engine_ban_compiled"] = engine_rate(model, device, args, teacher=True, compile=True)
            print(f"  {model} compiled: {rows['engine_ban_compiled']['images_per_s']:,.0f} img/s "
                  f"(warm-up epoch incl. compile {rows['engine_ban_compiled']['warmup_epoch_s']:.0f} s)", flush=True)
        else:
            rows["engine_ban_compiled"] = {"skipped": f"budget: {budget.left():.0f} s left"}
        results[model] = rows
    return results


def section_overhead(device, args) -> dict:
    """Engine vs bare fast loop on batches from one live DeviceLoader, interleaved rounds."""
    out = {}
    for model in args.overhead_models:
        n = args.steps * args.batch
        data = synthetic(10, train=n, test=100, seed=0)
        torch.manual_seed(0)
        student0, teacher = build(model, 10), build(model, 10)
        recipe = Recipe(epochs=1000, batch_size=args.batch, lr=0.05, eval_batch_size=100)
        gen = Generation(copy.deepcopy(student0), data, recipe, loss="ban", teacher=copy.deepcopy(teacher), device=device)
        loop = BareLoop(copy.deepcopy(student0), copy.deepcopy(teacher), device, bf16=True, channels_last=True, fused=True)
        mean, std = data.channel_stats()
        loader = DeviceLoader(data.train_images, data.train_labels, args.batch, device=device, mean=mean, std=std,
                              channels_last=True)

        def bare() -> float:
            loader.set_epoch(loader.epoch + 1)
            seen, seconds = timed(lambda: loop.run(loader), device)
            return seen / seconds

        gen.train_epoch(), bare()  # warm-up
        runs = {"engine": [], "bare": []}
        for r in range(args.rounds):
            for who in (("engine", "bare") if r % 2 == 0 else ("bare", "engine")):
                runs[who].append(gen.train_epoch().images_per_s if who == "engine" else bare())
        paired = [e / b for e, b in zip(runs["engine"], runs["bare"])]
        out[model] = {"runs": runs, "engine_median": _common.summarise(runs["engine"])["median"],
                      "bare_median": _common.summarise(runs["bare"])["median"],
                      "ratio_paired_median": _common.summarise(paired)["median"]}
        print(f"  {model}: engine {out[model]['engine_median']:,.0f} vs bare {out[model]['bare_median']:,.0f} img/s, "
              f"ratio {out[model]['ratio_paired_median']:.3f}", flush=True)
        del gen, loop
    return out


def section_loader(device, data, args) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from loader import PILDataset  # the CPU benchmark's PIL dataset, same transforms

    images, labels = data.train_images, data.train_labels
    mean, std = data.channel_stats()
    dev = DeviceLoader(images, labels, args.loader_batch, device=device, mean=mean, std=std, channels_last=True)
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((mean / 255).tolist(), (std / 255).tolist())])
    pil = DataLoader(PILDataset(images, labels, transform), batch_size=args.loader_batch, shuffle=True, drop_last=True,
                     num_workers=args.loader_workers, pin_memory=device.type == "cuda", persistent_workers=True)

    def device_epoch() -> int:
        dev.set_epoch(dev.epoch + 1)
        seen = 0
        for x, y in dev:
            seen += y.shape[0]
        return seen

    def pil_epoch() -> int:
        seen = 0
        for x, y in pil:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            seen += y.shape[0]
        return seen

    device_epoch(), pil_epoch()  # warm-up (starts the workers)
    dev_runs = [n / s for n, s in (timed(device_epoch, device) for _ in range(3))]
    pil_runs = [n / s for n, s in (timed(pil_epoch, device) for _ in range(2))]
    out = {"images": int(images.shape[0]), "batch": args.loader_batch, "workers": args.loader_workers,
           "device_loader": _common.summarise(dev_runs), "dataloader_pil": _common.summarise(pil_runs)}
    out["ratio"] = out["device_loader"]["median"] / out["dataloader_pil"]["median"]
    print(f"  DeviceLoader {out['device_loader']['median']:,.0f} img/s vs DataLoader({args.loader_workers} workers) "
          f"{out['dataloader_pil']['median']:,.0f} img/s: {out['ratio']:.1f}x", flush=True)
    return out


def pack_worker(args) -> None:
    """One packed process: BAN steps of ``--pack-model`` from ``--start-at`` for ``--seconds``; prints JSON."""
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    n = args.pack_steps * args.batch
    data = synthetic(10, train=n, test=100, seed=0)
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.train_images, data.train_labels, args.batch, device=device, mean=mean, std=std,
                          channels_last=True)
    loops = []
    for i in range(args.lockstep):
        torch.manual_seed(i)
        loops.append(BareLoop(build(args.pack_model, 10), build(args.pack_model, 10), device,
                              bf16=True, channels_last=True, fused=True))
    for loop in loops:
        loop.run(loader)  # warm-up
    sync(device)
    late = time.time() - args.start_at  # > 0: this process missed the common start (its window is shifted)
    time.sleep(max(0.0, -late))
    started = time.perf_counter()
    seen = 0
    while time.perf_counter() - started < args.seconds:
        loader.set_epoch(loader.epoch + 1)
        batches = list(loader)
        for loop in loops:
            seen += loop.run(batches)
        sync(device)
    print(json.dumps({"images": seen, "seconds": time.perf_counter() - started, "late_s": max(0.0, late)}), flush=True)


def section_packing(device, args) -> dict:
    out = {}
    base = [sys.executable, str(Path(__file__).resolve()), "--pack-worker", "--device", str(device),
            "--pack-model", args.pack_model, "--batch", str(args.batch), "--pack-steps", str(args.pack_steps),
            "--seconds", str(args.pack_seconds)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for label, processes, lockstep in args.pack_layouts:
        start_at = time.time() + args.pack_lead_s
        procs = [subprocess.Popen(base + ["--start-at", str(start_at), "--lockstep", str(lockstep)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(processes)]
        results = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=args.pack_lead_s + args.pack_seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"packed worker failed: {stderr[-2000:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        rate = sum(r["images"] / r["seconds"] for r in results)
        out[label] = {"processes": processes, "models_per_process": lockstep, "aggregate_images_per_s": rate,
                      "per_process": results}
        print(f"  {label}: {rate:,.0f} img/s aggregate", flush=True)
    return out


def section_chain(device, data, args) -> dict:
    """Teacher -> BAN-1 -> BAN-2 on real CIFAR-10, plus a second label-trained seed for a fair ensemble."""
    recipe = Recipe(epochs=args.chain_epochs, batch_size=args.chain_batch, lr=args.chain_lr, schedule="onecycle",
                    weight_decay=5e-4, momentum=0.9, nesterov=True, eval_batch_size=1000)
    plan = [("teacher", "label", None, 0), ("ban-1", "ban", "teacher", 1), ("ban-2", "ban", "ban-1", 2),
            ("label-seed1", "label", None, 1)]
    trained, logits, rows = {}, {}, {}
    started = time.perf_counter()
    for name, loss, teacher_name, seed in plan:
        torch.manual_seed(seed)
        student = build(args.chain_model, data.num_classes)
        gen = Generation(student, data, recipe, loss=loss, teacher=trained.get(teacher_name), device=device, seed=seed)
        t0 = time.perf_counter()
        history = [r.to_dict() for r in gen.run()]
        trained[name], logits[name] = gen.student, gen.test_logits
        rows[name] = {"loss": loss, "teacher": teacher_name, "seed": seed, "final_test_error": history[-1]["test_error"],
                      "agreement_with_teacher": history[-1]["agreement"], "seconds": time.perf_counter() - t0,
                      "images_per_s_last_epoch": history[-1]["images_per_s"],
                      "test_error_by_epoch": [h["test_error"] for h in history]}
        print(f"  {name}: {rows[name]['final_test_error']:.2f}% in {rows[name]['seconds']:.1f} s", flush=True)
    labels = data.test_labels.to(device)
    ens = {
        "ens(teacher, ban-1)": ["teacher", "ban-1"],
        "ens(teacher, ban-1, ban-2)": ["teacher", "ban-1", "ban-2"],
        "ens(ban-1, ban-2)": ["ban-1", "ban-2"],
        "ens(teacher, label-seed1)": ["teacher", "label-seed1"],
    }
    ensembles = {k: metrics.error_rate(metrics.ensemble_logits([logits[m] for m in v]), labels) for k, v in ens.items()}
    for k, v in ensembles.items():
        print(f"  {k}: {v:.2f}%", flush=True)
    return {"model": args.chain_model, "params": parameter_count(trained["teacher"]), "recipe": recipe.to_dict(),
            "train_images": int(data.train_images.shape[0]), "test_images": int(data.test_images.shape[0]),
            "models": rows, "ensembles": ensembles, "wall_s": time.perf_counter() - started}


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(_common.CIFAR_DIR), help="the CIFAR-10 Parquet folder")
    p.add_argument("--out", default=None, help="folder for gpu.json (default: benchmarks/results)")
    p.add_argument("--budget-s", type=float, default=450)
    p.add_argument("--smoke", action="store_true", help="tiny CPU dry run of every section")
    p.add_argument("--sections", default="throughput,overhead,loader,packing,chain")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile-reserve-s", type=float, default=240, help="skip torch.compile with less budget left")
    p.add_argument("--chain-model", default="wrn-16-4")
    p.add_argument("--chain-epochs", type=int, default=10)
    p.add_argument("--chain-batch", type=int, default=256)
    p.add_argument("--chain-lr", type=float, default=0.2)
    p.add_argument("--loader-batch", type=int, default=512)
    p.add_argument("--loader-workers", type=int, default=8)
    # packed-worker mode (internal)
    p.add_argument("--pack-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pack-model", default="wrn-16-4")
    p.add_argument("--pack-steps", type=int, default=20)
    p.add_argument("--pack-seconds", type=float, default=10)
    p.add_argument("--pack-lead-s", type=float, default=20)
    p.add_argument("--start-at", type=float, default=0)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--lockstep", type=int, default=1)
    args = p.parse_args()
    args.big_models = ["wrn-28-10", "densenet-90-60"]
    args.overhead_models = ["wrn-16-4", "wrn-28-10"]
    args.pack_layouts = [("1 process", 1, 1), ("4 processes", 4, 1), ("4 models lockstep in 1 process", 1, 4)]
    if args.smoke:
        args.device, args.steps, args.repeats, args.rounds, args.batch = "cpu", 2, 1, 1, 16
        args.big_models, args.overhead_models = ["wrn-10-1", "densenet-22-8"], ["wrn-10-1"]
        args.chain_model, args.chain_epochs, args.chain_batch = "wrn-10-1", 1, 64
        args.pack_model, args.pack_seconds, args.pack_lead_s, args.pack_steps = "wrn-10-1", 2, 8, 2
        args.pack_layouts = [("1 process", 1, 1), ("2 models lockstep in 1 process", 1, 2)]
        args.loader_workers, args.compile_reserve_s = 1, 1e9
    return args


def main() -> None:
    args = parse_args()
    if args.pack_worker:
        return pack_worker(args)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    out_dir = Path(args.out) if args.out else _common.RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cpu_count": os.cpu_count(), "args": {k: v for k, v in vars(args).items()}}
    result: dict = {"benchmark": "gpu", "info": info, "machine": _common.machine_info()}
    print(f"device: {info['device']}, torch {info['torch']}, CUDA {info['cuda']}", flush=True)

    data = None
    if {"loader", "chain"} & set(args.sections.split(",")):
        t0 = time.perf_counter()
        data = load_dataset(f"parquet:{Path(args.data).resolve()}")
        if args.smoke:
            data = data.subset(2000, 500)
        info["data_load_s"] = time.perf_counter() - t0

    sections = {
        "throughput": lambda: section_throughput(device, args, budget),
        "overhead": lambda: section_overhead(device, args),
        "loader": lambda: section_loader(device, data, args),
        "packing": lambda: section_packing(device, args),
        "chain": lambda: section_chain(device, data, args),
    }
    minimum = {"throughput": 60, "overhead": 20, "loader": 15, "packing": 90, "chain": 60}
    for name in args.sections.split(","):
        if budget.left() < (0 if args.smoke else minimum[name]):
            result[name] = {"skipped": f"budget: {budget.left():.0f} s left"}
            print(f"[{name}] skipped: {budget.left():.0f} s of budget left", flush=True)
            continue
        print(f"[{name}] ({budget.left():.0f} s of budget left)", flush=True)
        t0 = time.perf_counter()
        try:
            result[name] = sections[name]()
        except Exception as error:  # one section's failure must not lose the others' numbers
            result[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"[{name}] failed: {type(error).__name__}: {error}", flush=True)
        result[name + "_seconds"] = time.perf_counter() - t0
        (out_dir / "gpu.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out_dir / 'gpu.json'}")


if __name__ == "__main__":
    main()
