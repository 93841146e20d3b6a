"""The --dry-run plan in GPU-hours: its arithmetic on a fixed throughput table, FLOPs on the meta device, the
CLI's lines and report.md's estimate against measured time."""

from __future__ import annotations

import math
import json
import re

import pytest
import torch

from ray_ban.cli import sweep
from ray_ban.config import gpu_cost, gpu_plan, spaces
from ray_ban.config.gpu_cost import Cost, Flops, Pricer, measured_cost, model_seconds, packed, scaled_cost
from ray_ban.config.gpu_plan import Job, makespan
from ray_ban.data.sizes import image_counts
from ray_ban.models.flops import count_flops

# a fixed table: one GPU, two measured architectures, a packing measurement
TABLE = {"devices": {"GPU-X": {
    "batch_size": 64, "source": "fixed",
    "precisions": {"bf16": {"wrn-10-1": {"label": 1000.0, "distill": 800.0},
                            "densenet-10-4": {"label": 500.0, "distill": 400.0, "forward": 4000.0}},
                   "fp32": {"wrn-10-1": {"label": 250.0, "distill": 200.0}}},
    "packing": {"wrn-10-1": {"4": 2.0}}}}}
ENTRY = TABLE["devices"]["GPU-X"]
FLOPS = {"wrn-10-1": Flops(1e6, 3e6), "wrn-10-2": Flops(4e6, 12e6), "densenet-10-4": Flops(2e6, 6e6),
         "preresnet-11": Flops(2.2e6, 6.6e6)}


def fixed_flops(architecture: str, classes: int, kwargs: str) -> Flops:
    return FLOPS[architecture]


def test_a_measured_row_becomes_seconds_per_image():
    cost = measured_cost(ENTRY["precisions"]["bf16"]["wrn-10-1"])
    assert cost.train == pytest.approx(1e-3) and cost.teacher == pytest.approx(1 / 800 - 1 / 1000)
    assert cost.evaluate == cost.teacher  # no evaluation measured: the teacher's forward stands in
    assert measured_cost(ENTRY["precisions"]["bf16"]["densenet-10-4"]).evaluate == pytest.approx(1 / 4000)


def test_model_seconds_is_the_documented_formula():
    student, teacher = Cost(1e-3, 2e-4, 3e-4, "measured"), Cost(2e-3, 5e-4, 6e-4, "measured")
    # 10 epochs x (900 train images x (student step + teacher forward) + 200 evaluated x student evaluation)
    # + 100 test images x the teacher's evaluation, once
    assert model_seconds(student, teacher, 10, 900, 200, 100) == pytest.approx(10 * (900 * 1.5e-3 + 200 * 3e-4) + 100 * 6e-4)
    assert model_seconds(student, None, 10, 900, 200, 100) == pytest.approx(10 * (900 * 1e-3 + 200 * 3e-4))


def test_packing_and_data_parallel_workers():
    assert packed(100.0, 1, 1.0) == (100.0, 100.0)
    assert packed(100.0, 4, 1.0) == (25.0, 100.0)  # ideal data parallelism: a quarter of the wall, the same GPU time
    wall, gpu = packed(100.0, 1, 0.25, speedup=2.0)  # 4 on a GPU, measured 2x aggregate: each at half speed
    assert wall == pytest.approx(200.0) and gpu == pytest.approx(50.0)
    assert packed(100.0, 1, 0.25) == (400.0, 100.0)  # no packing measurement: no gain assumed
    assert gpu_cost.per_gpu(0.3) == 3 and gpu_cost.slots(2, 1, 0.25) == 8 and gpu_cost.slots(3, 2, 1.0) == 1
    assert gpu_cost.slots(math.inf, 1, 1.0) >= 1000


def test_the_schedule_waits_for_teachers_and_fills_free_slots():
    jobs = [Job("t1", (10.0,)), Job("t2", (4.0,)), Job("a", (5.0, 5.0), "t1"), Job("b", (3.0,), "t2"),
            Job("c", (1.0,), "t2")]
    assert makespan(jobs, 1) == pytest.approx(10 + 4 + 10 + 3 + 1)
    # two slots: t1 | t2; at 4 b starts (t2 done), at 7 c, at 8 the second slot idles until a starts at 10
    assert makespan(jobs, 2) == pytest.approx(20.0)
    assert makespan(jobs, 10) == pytest.approx(20.0)
    assert makespan([Job("x", (2.0,), "done-before")], 1) == 2.0  # a settled teacher is not a job
    with pytest.raises(ValueError):
        makespan(jobs, 0)


def test_an_unmeasured_architecture_is_priced_by_flops_at_its_family_or_the_nearest():
    pricer = Pricer(ENTRY, "bf16", 10, flops=fixed_flops)
    wider = pricer.cost("wrn-10-2")  # same family as wrn-10-1: 4x its FLOPs, 4x its time
    base = measured_cost(ENTRY["precisions"]["bf16"]["wrn-10-1"])
    assert wider.source == "FLOPs x wrn-10-1"
    assert (wider.train, wider.teacher) == (pytest.approx(4 * base.train), pytest.approx(4 * base.teacher))
    other = pricer.cost("preresnet-11")  # no preresnet measured: the nearest in FLOPs (densenet-10-4)
    assert other.source == "FLOPs x densenet-10-4"
    assert other.train == pytest.approx(1.1 / 500) and other.evaluate == pytest.approx(1.1 / 4000)
    assert scaled_cost(base, FLOPS["wrn-10-1"], FLOPS["wrn-10-1"], "wrn-10-1").train == base.train
    assert Pricer(ENTRY, "tf32", 10, flops=fixed_flops).precision == "fp32"  # priced at the nearest it has
    with pytest.raises(ValueError):
        Pricer({"precisions": {"fp32": {}}}, "bf16", 10, flops=fixed_flops)


def small_plan(**extra) -> spaces.SweepPlan:
    raw = {"name": "p", "dataset": "synthetic", "train_subset": 1000, "test_subset": 200, "validation_size": 100,
           "recipe": {"epochs": 3, "batch_size": 64, "lr": 0.05, "precision": "auto"},
           "rows": [{"row": "A", "teacher": "densenet-10-4",
                     "chains": {"ban": {"student": "wrn-10-1", "loss": "ban", "generations": 2},
                                "base": {"baseline": True, "student": "wrn-10-2"}}}], **extra}
    return spaces.expand(raw, "p.yaml")


def test_a_plans_models_total_and_schedule_on_a_fixed_table():
    plan = small_plan()
    estimates, jobs = gpu_plan.estimate(plan, ENTRY, image_counts(plan), fixed_flops)
    by = {e.label: e for e in estimates}
    teacher, wrn = (measured_cost(ENTRY["precisions"]["bf16"][a]) for a in ("densenet-10-4", "wrn-10-1"))
    # train 1000 - 100 held out = 900 per epoch; evaluated 200 test + 100 validation
    expected_teacher = model_seconds(teacher, None, 3, 900, 300, 200)
    expected_gen1 = model_seconds(wrn, teacher, 3, 900, 300, 200)
    expected_gen2 = model_seconds(wrn, wrn, 3, 900, 300, 200)
    expected_base = 3 * (900 * 4 * wrn.train + 300 * 4 * wrn.evaluate)
    assert by["teacher s0 (A)"].seconds == pytest.approx(expected_teacher)
    assert by["A/ban gen 1 s0"].seconds == pytest.approx(expected_gen1)
    assert by["A/ban gen 2 s0"].seconds == pytest.approx(expected_gen2)
    assert by["A/base baseline s0"].seconds == pytest.approx(expected_base)
    assert by["A/base baseline s0"].source == "FLOPs x wrn-10-1"
    assert all(e.note == "" for e in estimates)  # the table is at this plan's batch of 64
    lines = gpu_plan.summary_lines(estimates, jobs, "GPU-X", ENTRY, 2, 1, 1.0, 2.5)
    total = expected_teacher + expected_gen1 + expected_gen2 + expected_base
    wall = max(expected_teacher + expected_gen1 + expected_gen2, expected_base)  # two slots: chain | baseline
    assert lines[-2] == (f"total: {total / 3600:.2f} GPU-hours over 4 models; wall {gpu_plan.hours(wall)} on 2 GPUs "
                         f"(2 chains at once); ${total / 3600 * 2.5:,.2f} at $2.5/GPU-hour")

    # packed four to a GPU: wrn-10-1's measured 2x applies to its generations, nothing to the others
    packed_estimates, _ = gpu_plan.estimate(plan, ENTRY, image_counts(plan), fixed_flops, gpus_per_worker=0.25)
    packed_by = {e.label: e for e in packed_estimates}
    assert packed_by["A/ban gen 1 s0"].gpu_s == pytest.approx(expected_gen1 / 2)
    assert packed_by["teacher s0 (A)"].gpu_s == pytest.approx(expected_teacher)
    assert packed_by["teacher s0 (A)"].wall_s == pytest.approx(4 * expected_teacher)

    settled, _ = gpu_plan.estimate(plan, ENTRY, image_counts(plan), fixed_flops,
                                  settled=frozenset({plan.chains[0].root.key}))
    assert {e.label: e.gpu_s for e in settled}["teacher s0 (A)"] == 0.0


def test_fp32_recipes_use_the_fp32_rates_and_other_batches_are_noted():
    plan = small_plan(recipe={"epochs": 1, "batch_size": 32, "lr": 0.05, "precision": "fp32"})
    estimates, _ = gpu_plan.estimate(plan, ENTRY, image_counts(plan), fixed_flops)
    gen1 = next(e for e in estimates if e.label == "A/ban gen 1 s0")
    # densenet-10-4 has no fp32 row: FLOPs-priced at wrn-10-1's fp32 rate (2x its FLOPs)
    fp32 = measured_cost(ENTRY["precisions"]["fp32"]["wrn-10-1"])
    assert gen1.seconds == pytest.approx(900 * (fp32.train + 2 * fp32.teacher) + 300 * fp32.evaluate + 200 * 2 * fp32.evaluate)
    assert gen1.note == "table at batch 64"


def test_flops_are_counted_on_the_meta_device():
    small, wide = count_flops("wrn-10-1", 10), count_flops("wrn-10-2", 10)
    assert 2.9 < small.train / small.forward < 3.1  # a backward pass costs about two forwards
    assert 3.5 < wide.forward / small.forward < 4.1  # twice the width: about four times the convolutions
    # wrn-10-1: 3x3 convolutions over 32x32 maps; its forward is about 0.025 GFLOPs (2 per multiply-add)
    assert 1e7 < small.forward < 1e8


@pytest.mark.parametrize("architecture,kwargs", [("wrn-10-1", {}), ("densenet-10-4", {}), ("resnet9-8", {}),
                                                 ("preresnet-20", {}), ("ban-wrn-1-1", {}),
                                                 ("densenet-40-12-compr0.5x", {}), ("densenet-10-4", {"memory_efficient": True})])
def test_the_hook_count_is_torchs_flop_counter_on_forward_and_backward(architecture, kwargs):
    """``count_flops`` reads convolutions and linear layers off hooks; torch's FlopCounterMode, which
    intercepts every operator of a real forward and backward pass, must give the same numbers."""
    from torch.utils.flop_counter import FlopCounterMode

    from ray_ban.models import build

    with torch.device("meta"):
        model = build(architecture, 10, **kwargs)
        with FlopCounterMode(display=False) as forward:
            logits = model(torch.randn(2, 3, 32, 32))
        with FlopCounterMode(display=False) as backward:
            logits.float().sum().backward()
    counted = count_flops(architecture, 10, json.dumps(kwargs))
    assert counted.forward == forward.get_total_flops() / 2
    assert counted.train == (forward.get_total_flops() + backward.get_total_flops()) / 2


def test_the_dry_run_prints_the_plan_with_its_cost(capsys):
    assert sweep.main(["table4", "--preset", "smoke", "--dry-run", "--gpus", "2", "--gpu-price", "4",
                       "--gpus-per-worker", "0.5"]) == 0
    out = capsys.readouterr().out
    plan = out[out.index("plan in GPU-hours on NVIDIA H200"):].splitlines()
    assert "1 worker x 0.5 GPU per model" in plan[0]
    assert len([line for line in plan if re.match(r"  (teacher|\S+/ban gen 1)", line)]) == 8
    total = re.match(r"total: ([0-9.]+) GPU-hours over 8 models; wall .* on 2 GPUs \(4 chains at once\); \$([0-9.,]+) "
                     r"at \$4/GPU-hour", [line for line in plan if line.startswith("total")][0])
    assert total and float(total.group(2)) == pytest.approx(4 * float(total.group(1)), abs=0.01)


def test_report_shows_estimates_beside_measured_times(tmp_path):
    from fabricated_run import fabricate_run  # every model stored by the real RunStore, without training

    from ray_ban.results.report import load, markdown
    from ray_ban.results.tables import write_results

    plan, store, _ = fabricate_run(tmp_path)
    for index, training in enumerate(plan.trainings()):  # as a GPU or a CPU run would record them
        summary = store.summary(training.key)
        summary.update(precision="bf16", workers=1, device="GPU-X" if index % 2 else "cpu")
        store.write_json(store.model_file(training.key, "summary.json"), summary)
    write_results(plan, store)
    records, plan = load(store.location)
    device, rows = gpu_plan.record_estimates(plan, records, TABLE, image_counts(plan), count_flops)
    assert device == "GPU-X" and len(rows) == len(plan.trainings())
    wrn = measured_cost(ENTRY["precisions"]["bf16"]["wrn-10-1"])
    for row, record in zip(rows, [r for r in records if r["role"] != "ensemble"]):
        teacher = wrn if record["role"] == "student" else None  # every model here is a wrn-10-1
        expected = model_seconds(wrn, teacher, 2, 5000, 1000, 1000)  # synthetic: 5000 train, 1000 test images
        assert row["estimate_s"] == pytest.approx(expected) and row["measured_s"] == 1.5
        assert row["ratio"] == (pytest.approx(1.5 / expected) if record["device"] == "GPU-X" else None)
    text = markdown(records, plan)  # with the shipped table
    section = text[text.index("## Estimated against measured training time"):].split("\n## ")[0]
    assert len([line for line in section.splitlines() if line.startswith("| ") and "---" not in line]) == len(rows) + 1
