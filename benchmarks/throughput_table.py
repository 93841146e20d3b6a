"""The throughput table the --dry-run plan estimates GPU-hours from (``ray_ban/config/throughput.json``).

For each architecture and precision, on one GPU, with ray-ban's engine (``Generation``) at the paper's
batch of 128 on synthetic 32x32 images: images/s of a label-only training step, of a distillation step
(the student plus a frozen teacher of the same architecture, as the engine runs it: the teacher's
forward in fp32 outside autocast), and of evaluation (the forward pass alone, in the recipe's
precision). A warm-up epoch, then the best of ``--repeats`` epochs of ``--steps`` steps.
The result is merged into the table under the GPU's name, so one table can hold several GPUs.

    python benchmarks/throughput_table.py --out ray_ban/config/throughput.json              # on the GPU machine
    python benchmarks/throughput_table.py --from-gpu-json benchmarks/results/gpu.json --out ray_ban/config/throughput.json
    python benchmarks/throughput_table.py --smoke                                      # tiny CPU dry run

``--from-gpu-json`` rebuilds the entry from a recorded ``benchmarks/gpu.py`` run (the shipped H200 entry:
the engine's label and BAN steps under bf16, its strict-fp32 bare loop for fp32, the packing section);
that run measured no evaluation pass, so the planner stands in the teacher's forward for it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

DEFAULT_MODELS = ("wrn-28-10", "densenet-90-60", "wrn-16-4", "preresnet-164", "densenet-100-12")


def measure(model_name: str, precision: str, device, args) -> dict:
    """label / distill / forward images/s of one architecture in one precision."""
    import torch

    from ray_ban.data import synthetic
    from ray_ban.core.engine import Generation
    from ray_ban.models import build
    from ray_ban.config.recipe import Recipe

    n = args.steps * args.batch
    data = synthetic(10, train=n, test=n, seed=0)
    recipe = Recipe(epochs=1000, batch_size=args.batch, lr=0.05, eval_batch_size=args.batch, precision=precision)
    out = {}
    for kind in ("label", "distill"):
        torch.manual_seed(0)
        teacher = build(model_name, 10).eval() if kind == "distill" else None
        gen = Generation(build(model_name, 10), data, recipe, loss="ban" if teacher else "label", teacher=teacher,
                         device=device)
        gen.train_epoch()  # warm-up: cudnn autotuning, allocator
        out[kind] = max(gen.train_epoch().images_per_s for _ in range(args.repeats))
        if kind == "label":
            gen.predict(gen.student, gen.test_loader)
            rates = []
            for _ in range(args.repeats):
                _common_sync(device)
                started = time.perf_counter()
                gen.predict(gen.student, gen.test_loader)
                _common_sync(device)
                rates.append(n / (time.perf_counter() - started))
            out["forward"] = max(rates)
        del gen, teacher
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _common_sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_entry(args) -> tuple[str, dict]:
    import torch

    from ray_ban.config.recipe import precision_on

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precisions: dict = {}
    for precision in args.precisions:
        ran = precision_on(precision, device.type)
        for model in args.models:
            precisions.setdefault(ran, {})[model] = measure(model, precision, device, args)
            rates = ", ".join(f"{k} {v:,.0f} img/s" for k, v in precisions[ran][model].items())
            print(f"  {name} {ran} {model}: {rates}", flush=True)
    return name, {"batch_size": args.batch, "precisions": precisions, "packing": {},
                  "source": "benchmarks/throughput_table.py", "measured": _stamp(), "notes": []}


def entry_from_gpu_json(path: Path) -> tuple[str, dict]:
    """The table entry of a recorded benchmarks/gpu.py run."""
    run = json.loads(path.read_text())
    info = run["info"]
    bf16, fp32 = {}, {}
    for model, rows in run["throughput"].items():
        bf16[model] = {"label": rows["engine_label"]["images_per_s"], "distill": rows["engine_ban"]["images_per_s"]}
        fp32[model] = {"label": rows["bare_fp32_label"]["images_per_s"],
                       "distill": rows["bare_fp32_ban"]["images_per_s"]}
    packing = {}
    if "packing" in run:
        one = run["packing"]["1 process"]["aggregate_images_per_s"]
        for layout in run["packing"].values():
            if layout["models_per_process"] == 1 and layout["processes"] > 1:
                packing.setdefault(info["args"]["pack_model"], {})[str(layout["processes"])] = (
                    layout["aggregate_images_per_s"] / one)
    notes = [f"from {path.name} ({run['machine']['date']}, {run['machine']['command']}), torch {info['torch']}",
             "bf16: the engine's label and BAN steps (then the teacher ran under bf16 autocast; it now runs in fp32 "
             "with TF32 math, so today's distillation steps are slower)",
             "fp32: a bare strict-fp32 loop (TF32 off, contiguous tensors, cudnn.benchmark off), slower than the "
             "engine's fp32 (channels_last, cudnn.benchmark): an upper bound on time",
             "no evaluation pass was measured: the planner uses the teacher's forward rate, 1/(1/distill - 1/label)",
             f"batch {info['args']['batch']}, synthetic 32x32 images, 10 classes"]
    return info["device"], {"batch_size": info["args"]["batch"], "precisions": {"bf16": bf16, "fp32": fp32},
                            "packing": packing, "source": f"benchmarks/throughput_table.py --from-gpu-json {path.name}",
                            "measured": {"date": run["machine"]["date"], "command": run["machine"]["command"]},
                            "notes": notes}


def _stamp() -> dict:
    machine = _common.machine_info()
    return {"date": machine["date"], "command": machine["command"], "torch": machine["torch"]}


def merge(out: Path, device: str, entry: dict) -> None:
    table = json.loads(out.read_text()) if out.is_file() else {}
    table.setdefault("description", "images/s of ray-ban's training and evaluation steps per GPU, precision and "
                                    "architecture, written by benchmarks/throughput_table.py; the --dry-run plan's source")
    table.setdefault("devices", {})[device] = entry
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{device}: {sum(len(v) for v in entry['precisions'].values())} entries -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "ray_ban" / "config" / "throughput.json")
    parser.add_argument("--from-gpu-json", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(DEFAULT_MODELS))
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["auto", "fp32"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, written to /tmp")
    args = parser.parse_args()
    if args.smoke:
        args.device, args.models, args.precisions, args.steps, args.repeats = "cpu", ["wrn-10-1"], ["auto"], 2, 1
        args.out = Path("/tmp/ray-ban-throughput-smoke.json")
    device, entry = entry_from_gpu_json(args.from_gpu_json) if args.from_gpu_json else measured_entry(args)
    merge(args.out, device, entry)


if __name__ == "__main__":
    main()
