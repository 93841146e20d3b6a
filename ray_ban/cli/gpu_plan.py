"""The --dry-run plan in GPU-hours for the command line: the GPUs to plan for (--gpus, the cluster's, this
machine's or 1), the models that cost nothing (finished in the run folder or held by the teacher bank),
and the estimate of ``config.gpu_plan`` with the plan's image counts and FLOPs counted on the meta device."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

from ray_ban.bank import TeacherBank, entry_name
from ray_ban.config.gpu_cost import device_entry, load_table
from ray_ban.config.gpu_plan import estimate, summary_lines
from ray_ban.config.options import SweepOptions
from ray_ban.config.recipe import precision_on
from ray_ban.config.search import Search, chain_to_search
from ray_ban.config.spaces import SweepPlan
from ray_ban.data import num_classes_of
from ray_ban.data.sizes import image_counts
from ray_ban.results.run_folder import run_location
from ray_ban.store import RunStore


def plan_lines(plan: SweepPlan, args: SweepOptions) -> list[str]:
    """The plan's lines. A plan that cannot be made is one line: the dry run's validation has passed, and
    stays the answer."""
    try:
        return _plan_lines(plan, args)
    except Exception as error:  # noqa: BLE001
        first = str(error).splitlines()[0] if str(error) else ""
        return [f"plan in GPU-hours: not estimated ({type(error).__name__}: {first})"]


def _plan_lines(plan: SweepPlan, args: SweepOptions) -> list[str]:
    from ray_ban.models.flops import count_flops  # torch: validate_plan has imported it already

    gpus, note = plan_gpus(args)
    gpus_per_worker = 1.0 if args.gpus_per_worker == "auto" else float(args.gpus_per_worker)
    if gpus_per_worker == 0:
        return ["plan in GPU-hours: --gpus-per-worker 0 trains on CPUs; no GPU plan"]
    device, entry = device_entry(load_table())
    trials, notes = 1, []
    if plan.search:  # the template's teacher once, then one chain per trial, priced at the template's values
        plan, trials = replace(plan, chains=(chain_to_search(plan),)), Search(**plan.search).trials()
        notes.append(f"{trials} search trials, each priced at the template's values")
    settled = _settled(plan, args, lambda p: precision_on(p, "cuda"))
    estimates, jobs = estimate(plan, entry, image_counts(plan), count_flops,
                               num_classes=num_classes_of(plan.dataset) or 10, workers=args.workers,
                               gpus_per_worker=gpus_per_worker, settled=frozenset(settled))
    if trials > 1:
        roots = {t.key for t in plan.roots()}
        estimates = [e if e.key in roots else replace(e, count=trials) for e in estimates]
        jobs = [j for j in jobs if j.name in roots] + [replace(j, name=f"{j.name}.{i}") for i in range(trials)
                                                       for j in jobs if j.name not in roots]
    if settled:
        notes.append(f"{len(settled)} models already trained (in the run folder or the teacher bank): 0 h")
    return summary_lines(estimates, jobs, device, entry, gpus, args.workers, gpus_per_worker, args.gpu_price, note,
                         tuple(notes))


def plan_gpus(args: SweepOptions) -> tuple[float, str]:
    """GPUs to plan for, and a note on where the number came from."""
    if args.gpus is not None:
        return float(args.gpus), ""
    if args.address or os.environ.get("RAY_ADDRESS"):
        try:
            from ray_ban.orchestration.capacity import cluster_gpus

            total = cluster_gpus(args.address or os.environ["RAY_ADDRESS"], args.cluster_config)
            if total > 0:
                return total, " (the cluster's)"
        except Exception as error:  # noqa: BLE001 - a plan, not a run: fall back and say so
            return 1.0, f" (cluster not reachable: {type(error).__name__}; pass --gpus N)"
    import torch

    local = torch.cuda.device_count()
    return (float(local), " (this machine's)") if local else (1.0, " (no GPU here: pass --gpus N)")


def _settled(plan: SweepPlan, args: SweepOptions, ran: Callable[[str], str]) -> set[str]:
    """Keys finished in the run folder or complete in the teacher bank (with a matching digest)."""
    settled = set()
    try:
        store = RunStore(run_location(args.out, plan.name))
        settled = {t.key for t in plan.trainings() if store.is_done(t.key)}
    except Exception:  # noqa: BLE001 - no run folder yet, or unreadable: nothing is finished
        pass
    location = getattr(args, "teacher_bank", None)
    if location:
        bank = TeacherBank(location)
        for training in plan.roots():
            if bank.find(entry_name(training.key, ran(plan.recipe_of(training.key).precision)), training.digest):
                settled.add(training.key)
    return settled
