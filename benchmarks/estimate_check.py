"""How good is the --dry-run plan's estimate? It priced against the GPU runs already recorded.

Reads the recorded H200 runs (``benchmarks/results/gpu*.json``) and prices what they trained with the
planner's own arithmetic (``ray_ban.config.gpu_cost``: the shipped throughput table, FLOPs on the
meta device, ``ray_ban.models.flops``, for architectures not in it), then writes estimate, measured and
measured / estimate to ``benchmarks/results/estimate_check.json``. Needs no GPU: the measurements are the recorded ones.

- chain runs (``gpu_chain_10ep.json``, ``gpu_chain_30ep.json``): every model's wall time on real CIFAR-10
  (``wrn-16-4``, 50,000 train / 10,000 test images, batch 256, bf16 fast path), its epochs and evaluations;
- step rates of ``wrn-16-4`` BAN steps at batch 128 (``gpu.json``: the step-overhead section's engine and
  the packing section's single process), against the planner's images/s for that step.

    python benchmarks/estimate_check.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
from ray_ban.config import gpu_cost  # noqa: E402
from ray_ban.models.flops import count_flops  # noqa: E402


def main() -> None:
    table = gpu_cost.load_table()
    device, entry = gpu_cost.device_entry(table, "NVIDIA H200")
    pricer = gpu_cost.Pricer(entry, "bf16", 10, count_flops)
    models, steps = [], []
    for name in ("gpu_chain_10ep.json", "gpu_chain_30ep.json"):
        run = json.loads((_common.RESULTS / name).read_text())["chain"]
        architecture, epochs = run["model"], run["recipe"]["epochs"]
        cost = pricer.cost(architecture)
        for model, row in run["models"].items():
            teacher = cost if row["teacher"] else None
            estimate = gpu_cost.model_seconds(cost, teacher, epochs, run["train_images"], run["test_images"],
                                              run["test_images"])
            models.append({"run": name, "model": model, "architecture": architecture, "epochs": epochs,
                           "batch_size": run["recipe"]["batch_size"], "loss": row["loss"], "source": cost.source,
                           "estimate_s": estimate, "measured_s": row["seconds"], "ratio": row["seconds"] / estimate,
                           "estimated_step_images_per_s": 1 / (cost.train + (cost.teacher if teacher else 0)),
                           "measured_last_epoch_images_per_s": row["images_per_s_last_epoch"]})
    gpu = json.loads((_common.RESULTS / "gpu.json").read_text())
    cost = pricer.cost("wrn-16-4")
    estimated = 1 / (cost.train + cost.teacher)
    for what, measured in (("step overhead section, engine (median of 5)",
                             gpu["overhead"]["wrn-16-4"]["engine_median"]),
                           ("packing section, 1 process", gpu["packing"]["1 process"]["aggregate_images_per_s"])):
        steps.append({"what": f"wrn-16-4 BAN step, batch 128: {what}", "estimated_images_per_s": estimated,
                      "measured_images_per_s": measured, "ratio": measured / estimated})
    for row in models:
        print(f"{row['run']:<20} {row['model']:<12} estimate {row['estimate_s']:6.1f} s  measured "
              f"{row['measured_s']:6.1f} s  ratio {row['ratio']:.2f}  ({row['source']})")
    for row in steps:
        print(f"{row['what']}: estimate {row['estimated_images_per_s']:,.0f} img/s, measured "
              f"{row['measured_images_per_s']:,.0f} (ratio {row['ratio']:.2f})")
    path = _common.write_result("estimate_check", {"device": device, "table_source": entry.get("source"),
                                                   "models": models, "steps": steps})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
