"""A sweep's plan in GPU-hours: each model's estimated training time, a schedule on N GPUs, a cost.

Arithmetic on plain data (``gpu_cost`` prices each model from the throughput table): GPU-hours are wall
time x the GPUs held; the sweep's wall time is a list schedule of its trials (teachers first, each chain
once its teacher is done, as ``orchestration.release.TeacherFirst`` releases them) on the GPUs' chain
slots. Not counted: Ray's and Train's start-up, checkpoints and the data's first decode. The image
counts and the FLOP counter come from the caller (``data.sizes``, ``models.flops``), so this module
stays torch-free; ``cli.gpu_plan`` is the command line's glue and ``results.report`` sets the estimate
beside each model's measured time.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Optional

from ray_ban.config.family_versions import family_of as code_family
from ray_ban.config.gpu_cost import Flops, Pricer, device_entry, family, model_seconds, packed, per_gpu, slots
from ray_ban.config.recipe import precision_on
from ray_ban.config.spaces import SweepPlan

Counts = Optional[tuple[int, int, int]]  # (train images per epoch, evaluated images per epoch, test images); None: text


@dataclass(frozen=True)
class Job:
    """One trial of the schedule: its models' durations in order, and the job it waits for."""

    name: str
    durations: tuple[float, ...]
    after: Optional[str] = None


@dataclass(frozen=True)
class Estimate:
    """One model in the plan."""

    key: str
    label: str
    architecture: str
    epochs: int
    seconds: float  # on one whole GPU
    wall_s: float  # with --workers and packing
    gpu_s: float  # GPU-seconds held
    source: str
    note: str = ""
    count: int = 1  # a search's generations: one per trial


def makespan(jobs: list[Job], slot_count: int) -> float:
    """Wall time of a list schedule: jobs start in order on free slots, each once the job it waits for is done."""
    if slot_count < 1:
        raise ValueError("no chain fits on the GPUs given")
    names = {j.name for j in jobs}
    pending = [j for j in jobs]
    finished: set[str] = set()
    running: list[tuple[float, int, str]] = []
    now, order = 0.0, 0
    while pending or running:
        while len(running) < slot_count:
            ready = next((j for j in pending if j.after is None or j.after not in names or j.after in finished), None)
            if ready is None:
                break
            pending.remove(ready)
            order += 1
            heapq.heappush(running, (now + sum(ready.durations), order, ready.name))
        if not running:
            raise ValueError(f"job {pending[0].name} waits for {pending[0].after}, which never runs")
        now, _, name = heapq.heappop(running)
        finished.add(name)
    return now


def estimate(plan: SweepPlan, entry: dict, counts: Counts, flops: Callable[[str, int, str], Flops], *,
             num_classes: int = 10, device_type: str = "cuda", workers: int = 1, gpus_per_worker: float = 1.0,
             settled: frozenset = frozenset(), family_of: Callable[[str], str] = family
             ) -> tuple[list[Estimate], list[Job]]:
    """Every model of ``plan`` priced on one GPU entry, and the jobs of its schedule. ``counts``: the
    plan's image counts (``data.sizes.image_counts``); ``settled``: keys that cost nothing (finished in
    the run folder, or in the teacher bank)."""
    classes = num_classes
    pricers: dict[str, Pricer] = {}
    trainings = {t.key: t for t in plan.trainings()}
    labels = _labels(plan)
    estimates: dict[str, Estimate] = {}
    for key, training in trainings.items():
        recipe = plan.recipe_of(key)
        ran = precision_on(recipe.precision, device_type)
        note = "" if recipe.batch_size == entry.get("batch_size") else f"table at batch {entry.get('batch_size')}"
        if key in settled:
            estimates[key] = Estimate(key, labels[key], training.architecture, recipe.epochs, 0.0, 0.0, 0.0, "done")
            continue
        if counts is None or _is_language(training.architecture):
            estimates[key] = Estimate(key, labels[key], training.architecture, recipe.epochs, math.nan, math.nan, math.nan,
                                      "-", "language model: the table holds image models")
            continue
        pricer = pricers.get(ran) or pricers.setdefault(ran, Pricer(entry, ran, classes, flops, family_of))
        student = pricer.cost(training.architecture, training.model_kwargs)
        teacher_training = trainings.get(training.teacher_key) if training.teacher_key else None
        teacher = pricer.cost(teacher_training.architecture, teacher_training.model_kwargs) if teacher_training else None
        seconds = model_seconds(student, teacher, recipe.epochs, *counts)
        speedup = entry.get("packing", {}).get(training.architecture, {}).get(str(per_gpu(gpus_per_worker)), 1.0)
        wall, gpu = packed(seconds, workers, gpus_per_worker, speedup)
        estimates[key] = Estimate(key, labels[key], training.architecture, recipe.epochs, seconds, wall, gpu,
                                  student.source, "; ".join(n for n in (note, pricer.note) if n))
    jobs = [Job(t.key, (estimates[t.key].wall_s,)) for t in plan.roots()]
    for chain in plan.distilled_chains():
        jobs.append(Job(chain.chain_id, tuple(estimates[t.key].wall_s for t in chain.generations), chain.root.key))
    return list(estimates.values()), jobs


def record_estimates(plan: SweepPlan, records: list[dict], table: dict, counts: Counts,
                     flops: Callable[[str, int, str], Flops], num_classes: int = 10) -> tuple[str, list[dict]]:
    """For report.md: each finished model of results.parquet priced like the plan prices it, with the
    precision and workers it ran with, beside its measured ``wall_time_s``. Returns (the table's GPU,
    rows of label, architecture, precision, device, workers, estimate_s, measured_s, ratio) where the
    ratio is measured / estimate, given only for models that ran on the table's GPU."""
    trainings = {t.key: t for t in plan.trainings()}
    labels = _labels(plan)
    out = []
    device_name, _ = device_entry(table)
    for record in records:
        training = trainings.get(record["model_key"])
        if record["role"] == "ensemble" or record["status"] != "ok" or training is None or counts is None:
            continue
        if _is_language(training.architecture) or not record.get("precision"):
            continue
        device_name, entry = device_entry(table, record.get("device"))
        pricer = Pricer(entry, record["precision"], num_classes, flops)
        teacher = trainings.get(training.teacher_key) if training.teacher_key else None
        seconds = model_seconds(pricer.cost(training.architecture, training.model_kwargs),
                                pricer.cost(teacher.architecture, teacher.model_kwargs) if teacher else None,
                                int(record["epochs"] or 0), *counts) / max(1, int(record.get("workers") or 1))
        measured = record.get("wall_time_s")
        same = record.get("device") == device_name
        out.append({"label": labels.get(training.key, training.key), "architecture": training.architecture,
                    "precision": record["precision"], "device": record.get("device"), "workers": record.get("workers"),
                    "estimate_s": seconds, "measured_s": measured,
                    "ratio": measured / seconds if same and measured and seconds > 0 else None})
    return device_name, out


def _is_language(architecture: str) -> bool:
    """Whether ``architecture`` is a language model (the throughput table holds image models only)."""
    return code_family(architecture) == "language"


def _labels(plan: SweepPlan) -> dict[str, str]:
    """A readable name per model: teacher (and the rows sharing it), row/chain gen k, baselines, independents."""
    rows: dict[str, set] = {}
    labels: dict[str, str] = {}
    for chain in plan.chains:
        for training in chain.all_trainings:
            rows.setdefault(training.key, set()).add(chain.row)
            if training.role == "teacher":
                labels[training.key] = f"teacher s{chain.seed}"
            elif training.role == "baseline":
                labels[training.key] = f"{chain.row}/{chain.name} baseline s{chain.seed}"
            elif training.role == "independent":
                labels[training.key] = f"{chain.row}/{chain.name} independent s{chain.seed}"
            else:
                labels[training.key] = f"{chain.row}/{chain.name} gen {training.generation} s{chain.seed}"
    for key, label in labels.items():
        if label.startswith("teacher"):
            shared = sorted(rows[key])
            labels[key] = f"{label} ({len(shared)} rows)" if len(shared) > 1 else f"{label} ({shared[0]})"
    return labels


def hours(seconds: float) -> str:
    """A duration as the plan prints it: hours from 6 minutes up, else seconds; ``-`` for NaN."""
    if math.isnan(seconds):
        return "-"
    if seconds >= 360:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2f} s"


def summary_lines(estimates: list[Estimate], jobs: list[Job], device: str, entry: dict, gpus: float, workers: int,
                  gpus_per_worker: float, price: Optional[float], gpu_note: str = "",
                  notes: tuple[str, ...] = ()) -> list[str]:
    """The plan as terminal lines: one per model, then the totals."""
    share = f"{workers} worker{'s' if workers > 1 else ''} x {gpus_per_worker:g} GPU per model"
    lines = [f"plan in GPU-hours on {device} (throughput table: {entry.get('source', '?')}), {share}:",
             f"  {'model':<44} {'architecture':<28} {'epochs':>6} {'GPU time':>10} {'wall':>10}  source"]
    for e in estimates:
        extra = f" ({e.note})" if e.note else ""
        label = f"{e.label} x {e.count} trials" if e.count > 1 else e.label
        lines.append(f"  {label[:44]:<44} {e.architecture[:28]:<28} {e.epochs:>6} {hours(e.gpu_s):>10} "
                     f"{hours(e.wall_s):>10}  {e.source}{extra}")
    priced = [e for e in estimates if not math.isnan(e.gpu_s)]
    total_gpu = sum(e.gpu_s * e.count for e in priced)
    slot_count = slots(gpus, workers, gpus_per_worker)
    where = "unlimited GPUs" if math.isinf(gpus) else f"{gpus:g} GPU{'s' if gpus != 1 else ''}{gpu_note}"
    priced_jobs = [j for j in jobs if not any(math.isnan(d) for d in j.durations)]
    if slot_count < 1:
        wall_text = f"no chain fits on {where} with {share}"
    else:
        wall = makespan(priced_jobs, slot_count)
        wall_text = f"wall {hours(wall)} on {where} ({min(slot_count, len(priced_jobs))} chains at once)"
    cost = f"; ${total_gpu / 3600 * price:,.2f} at ${price:g}/GPU-hour" if price is not None else ""
    models = sum(e.count for e in priced)
    lines.append(f"total: {total_gpu / 3600:.2f} GPU-hours over {models} models; {wall_text}{cost}")
    if len(priced) < len(estimates):
        lines.append(f"  {len(estimates) - len(priced)} models not estimated (see their lines)")
    lines.extend(f"  {note}" for note in notes)
    lines.append("  not counted: Ray and Train start-up, checkpoints, the data's first decode (BENCHMARKS.md)")
    return lines
