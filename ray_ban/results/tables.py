"""Arrow results of a sweep: one row per trained model and per ensemble, its cells over seeds, the
paired comparisons between cells, and the paper-style table.

Built only from the run folder (summaries and stored test predictions) and the plan, so it works on
any finished or partial sweep; ensembles come from stored logits, never from re-running models.
This is the only module that knows the Parquet schemas (results, cells, comparisons).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ray_ban.core import metrics
from ray_ban.results.cells import STUDENT_VS_TEACHER, Cells, describe
from ray_ban.config.recipe import Recipe
from ray_ban.config.spaces import Chain, SweepPlan, Training
from ray_ban.store import RunStore

SCHEMA = pa.schema([
    ("sweep", pa.string()), ("row", pa.string()), ("chain", pa.string()), ("role", pa.string()),
    ("generation", pa.int32()), ("architecture", pa.string()), ("parameters", pa.int64()),
    ("loss", pa.string()), ("loss_params", pa.string()), ("seed", pa.int64()), ("dataset", pa.string()),
    ("preset", pa.string()), ("epochs", pa.int32()), ("final_test_error", pa.float64()),
    ("best_test_error", pa.float64()), ("test_loss", pa.float64()), ("agreement", pa.float64()),
    ("kl", pa.float64()), ("ece", pa.float64()), ("val_error", pa.float64()), ("best_val_error", pa.float64()),
    ("wall_time_s", pa.float64()), ("model_key", pa.string()), ("teacher_key", pa.string()),
    ("members", pa.list_(pa.int32())), ("shared_by", pa.list_(pa.string())), ("status", pa.string()),
    ("message", pa.string()), ("config", pa.string()),
    ("test_error_by_epoch", pa.list_(pa.float64())), ("train_loss_by_epoch", pa.list_(pa.float64())),
    # hyperparameter searches: the trial, its sampled values (JSON), whether the scheduler stopped it and
    # after how many per-epoch reports, and whether it is the configuration the search selected
    ("trial", pa.string()), ("hparams", pa.string()), ("stopped", pa.bool_()), ("stopped_at", pa.int32()),
    ("selected", pa.bool_()),
    # language models: perplexity = exp(mean token NLL); an ensemble's averages its members' token probabilities
    ("test_perplexity", pa.float64()), ("val_perplexity", pa.float64()),
    # where and how each model was trained (generations.environment); an ensemble's when its members agree
    ("device", pa.string()), ("precision", pa.string()), ("workers", pa.int32()), ("torch_version", pa.string()),
    ("ray_version", pa.string()), ("ray_ban_version", pa.string()),
    # the teacher bank entry a generation-0 model was copied from instead of being trained (null: trained here)
    ("reused_from", pa.string()),
    # a chain's students: how many of its generations were trained, and why it ended (max_generations, or
    # no_improvement when its stopping rule ended it early; its untrained generations have status skipped)
    ("generations_run", pa.int32()), ("stop_reason", pa.string()),
])
ENVIRONMENT = ("device", "precision", "workers", "torch_version", "ray_version", "ray_ban_version")

# cells.parquet: one row per table cell, over the seeds it has (std and interval need two or more)
CELLS_SCHEMA = pa.schema([
    ("row", pa.string()), ("column", pa.string()), ("reference", pa.string()), ("n", pa.int32()),
    ("mean", pa.float64()), ("std", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("paper", pa.float64()), ("paper_in_ci", pa.bool_()), ("seeds", pa.list_(pa.int64())),
])

# comparisons.parquet: a - b paired by seed; two rows per pair, test "paired_t" (with the 95% t interval of
# the mean difference) and "wilcoxon" (signed-rank; same n and mean difference, no interval)
COMPARISONS_SCHEMA = pa.schema([
    ("row", pa.string()), ("comparison", pa.string()), ("a", pa.string()), ("b", pa.string()), ("metric", pa.string()),
    ("n", pa.int32()), ("seeds", pa.list_(pa.int64())), ("mean_diff", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("p_value", pa.float64()), ("test", pa.string()),
])
VERSIONED = ("ray-ban", "torch", "ray")  # read from installed metadata: this module never imports Ray


def collect_rows(plan: SweepPlan, store: RunStore) -> list[dict]:
    """Result rows for every model of the plan (finished, failed or pending) and every ensemble."""
    if plan.search:
        return _search_rows(plan, store)
    users: dict[str, list[str]] = {}
    for chain in plan.chains:
        for training in chain.all_trainings:
            users.setdefault(training.key, []).append(chain.row)
    rows, seen = [], set()
    for chain in plan.chains:
        for training in chain.all_trainings:
            if training.key in seen:
                continue
            seen.add(training.key)
            rows.append(_model_row(plan, store, chain, training, sorted(set(users[training.key]))))
            if training.role == "student":
                rows[-1].update(chain_outcome(store, chain))
        rows.extend(_ensemble_rows(plan, store, chain))
    return rows


def chain_outcome(store: RunStore, chain: Chain) -> dict:
    """``generations_run`` and ``stop_reason`` of a distilled chain (both null until it has ended)."""
    done = sum(store.is_done(t.key) for t in chain.generations)
    if any(store.skipped(t.key) for t in chain.generations):
        return {"generations_run": done, "stop_reason": "no_improvement"}
    return {"generations_run": done, "stop_reason": "max_generations" if done == len(chain.generations) else None}


def _search_rows(plan: SweepPlan, store: RunStore) -> list[dict]:
    """A search's rows: the shared teacher, then every trial's generations and ensembles with its values."""
    from ray_ban.config.search import chain_to_search
    from ray_ban.results.search_file import read_outcome

    template = chain_to_search(plan)
    rows = [_model_row(plan, store, template, template.root, [template.row])]
    outcome = read_outcome(store) or {"trials": [], "best": None}
    for trial in outcome["trials"]:
        # a search trains the template's teacher and each trial's students, never independent models
        chain = replace(Chain.from_dict(trial["chain"]), independent=())
        recipe = Recipe.from_dict(trial["recipe"])
        stopped = trial["status"] == "stopped"
        extra = {"trial": trial["trial"], "hparams": json.dumps(trial["hparams"], sort_keys=True), "stopped": stopped,
                 "stopped_at": trial["iterations"] if stopped else None, "selected": trial["trial"] == outcome["best"]}
        for training in chain.generations:
            row = {**_model_row(plan, store, chain, training, [chain.row], recipe), **extra}
            if row["status"] == "pending" and stopped:
                row["status"] = "stopped"
            elif row["status"] == "pending" and trial["status"] == "failed":
                row.update(status="failed", message=trial["error"])
            rows.append(row)
        rows.extend({**row, **extra} for row in _ensemble_rows(plan, store, chain))
    return rows


def _model_row(plan: SweepPlan, store: RunStore, chain: Chain, training: Training, shared_by: list[str],
               recipe: Optional[Recipe] = None) -> dict:
    row = _base_row(plan, chain, training.role, training.generation, training.architecture, training.loss,
                    training.loss_params, training.seed)
    row.update(model_key=training.key, teacher_key=training.teacher_key, shared_by=shared_by,
               chain=None if training.role == "teacher" else chain.name,
               config=json.dumps({"training": training.__dict__, "recipe": (recipe or plan.recipe_of(training.key)).to_dict(),
                                  "data": plan.data_config()}, sort_keys=True, default=str))
    if store.is_done(training.key):
        summary = store.summary(training.key)
        row.update({k: summary.get(k) for k in ("parameters", "epochs", "final_test_error", "best_test_error", "test_loss",
                                                 "agreement", "kl", "ece", "val_error", "best_val_error", "wall_time_s",
                                                 "test_perplexity", "val_perplexity", "reused_from", *ENVIRONMENT)})
        row["status"] = "ok"
        history = store.history(training.key)
        row["test_error_by_epoch"] = [h["test_error"] for h in history]
        row["train_loss_by_epoch"] = [h["train_loss"] for h in history]
    elif store.skipped(training.key):
        row.update(status="skipped", message=store.skipped(training.key)["message"])
    else:
        failure = store.failure(training.key)
        row.update(status="failed" if failure else "pending", message=failure)
    return row


def _ensemble_rows(plan: SweepPlan, store: RunStore, chain: Chain) -> list[dict]:
    """The chain's ensembles of generations (Ens*k), then those of its independent models (ind2..indK)."""
    by_generation = {t.generation: t for t in chain.trainings}
    last = chain.generations[-1] if chain.generations else chain.root
    rows = []
    for name, members in chain.ensembles.items():
        # a chain that stopped by itself: the ensemble of the generations it trained
        kept = [g for g in members if not store.skipped(by_generation[g].key)]
        row = _base_row(plan, chain, "ensemble", max(kept or members), last.architecture, last.loss, last.loss_params,
                        chain.seed)
        if len(kept) < 2:
            row.update(chain=f"{chain.name}/{name}", members=kept, model_key=f"{chain.chain_id}.{name}", status="skipped",
                       message="fewer than two of its generations were trained: the chain stopped by itself")
            rows.append(row)
            continue
        rows.append(_ensemble(store, row, chain, name, [by_generation[g] for g in kept], kept))
    for size in range(2, len(chain.independent) + 1):
        # generation 0 and no generations in members: every member is a label-only model of its own seed
        row = _base_row(plan, chain, "ensemble", 0, last.architecture, "label", {}, chain.seed)
        rows.append(_ensemble(store, row, chain, f"ind{size}", list(chain.independent[:size]), []))
    return rows


def _ensemble(store: RunStore, row: dict, chain: Chain, name: str, trainings: list[Training], members: list[int]) -> dict:
    """One ensemble's row, computed from its members' stored test predictions once all are finished."""
    row.update(chain=f"{chain.name}/{name}", members=members, model_key=f"{chain.chain_id}.{name}",
               config=json.dumps({"members": [t.key for t in trainings]}))
    done = all(store.is_done(t.key) for t in trainings)
    if done:
        row.update(_shared_environment([store.summary(t.key) for t in trainings]))
    if done and "target_logprob" in store.prediction_columns(trainings[0].key):
        row.update(_token_ensemble(store, trainings))
    elif done:
        predictions = [store.load_predictions(t.key) for t in trainings]
        labels = predictions[0][1]
        logits = metrics.ensemble_logits([p[0] for p in predictions])
        summary = metrics.summary(logits, labels, predictions[-1][0])
        row.update(final_test_error=summary["error"], best_test_error=summary["error"], test_loss=summary["loss"],
                   agreement=summary["agreement"], kl=summary["kl"], ece=summary["ece"], status="ok",
                   parameters=sum(store.summary(t.key)["parameters"] for t in trainings),
                   wall_time_s=sum(store.summary(t.key)["wall_time_s"] for t in trainings))
    else:
        row["status"] = "pending"
    return row


def _shared_environment(summaries: list[dict]) -> dict:
    """The environment fields on which all of an ensemble's members agree (the others stay null)."""
    return {k: summaries[0].get(k) for k in ENVIRONMENT if len({repr(s.get(k)) for s in summaries}) == 1}


def _token_ensemble(store: RunStore, trainings: list[Training]) -> dict:
    """A language-model ensemble: the mean of the members' probabilities of each target token, so its
    perplexity is exp(-mean log mean_k p_k(target)). Its top token is not stored, so no error rate."""
    import math

    import torch

    members = [torch.tensor(store.prediction_table(t.key).column("target_logprob").to_numpy()) for t in trainings]
    nll = -metrics.ensemble_target_logprob(members).mean().item()
    summaries = [store.summary(t.key) for t in trainings]
    return {"test_loss": nll, "test_perplexity": math.exp(nll), "status": "ok",
            "parameters": sum(s["parameters"] for s in summaries), "wall_time_s": sum(s["wall_time_s"] for s in summaries)}


def _base_row(plan: SweepPlan, chain: Chain, role, generation, architecture, loss, loss_params, seed) -> dict:
    row = {name: None for name in SCHEMA.names}
    row.update(sweep=plan.name, row=chain.row, role=role, generation=generation, architecture=architecture,
               loss=loss, loss_params=json.dumps(loss_params, sort_keys=True), seed=seed, dataset=plan.dataset,
               preset=plan.preset, members=[], shared_by=[chain.row], test_error_by_epoch=[], train_loss_by_epoch=[])
    return row


def write_results(plan: SweepPlan, store: RunStore, argv: Optional[Sequence[str]] = None) -> pa.Table:
    """Write ``results.parquet``, ``cells.parquet``, ``comparisons.parquet`` (each atomically) and ``table.md``.

    Each file's schema metadata records the provenance (``provenance``: the driver's command line,
    ``argv`` or ``sys.argv``); returns the results table."""
    records = collect_rows(plan, store)
    origin = provenance(plan, argv)
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    table = table.replace_schema_metadata({"sweep": plan.name, "plan": json.dumps(plan.to_dict(), default=str), **origin})
    cells = Cells(plan, records)
    for name, rows, schema in (("cells.parquet", cells.cell_rows(), CELLS_SCHEMA),
                               ("comparisons.parquet", comparison_rows(cells.comparisons()), COMPARISONS_SCHEMA)):
        extra = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata({"sweep": plan.name, **origin})
        store.write_with(name, lambda temp, extra=extra: pq.write_table(extra, temp))
    store.write_with("results.parquet", lambda temp: pq.write_table(table, temp))
    store.write_bytes("table.md", (paper_table(plan, table) + "\n").encode())
    return table


def provenance(plan: SweepPlan, argv: Optional[Sequence[str]] = None) -> dict[str, str]:
    """What made these results: the command line (JSON list), the space file's sha256 (of its bytes when the
    results are written; empty if it is not a readable file) and the versions of ray-ban, torch, Ray, Python."""
    source = Path(plan.source)
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else ""
    except OSError:
        digest = ""
    versions = {name: _installed(name) for name in VERSIONED}
    versions["python"] = platform.python_version()
    return {"command": json.dumps(list(sys.argv if argv is None else argv)), "space_sha256": digest,
            "versions": json.dumps(versions, sort_keys=True)}


def _installed(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def comparison_rows(comparisons: list[dict]) -> list[dict]:
    """``Cells.comparisons`` as comparisons.parquet rows: a paired-t row and a Wilcoxon row per pair."""
    rows = []
    for c in comparisons:
        common = {k: c[k] for k in ("row", "comparison", "a", "b", "metric", "n", "seeds", "mean_diff")}
        rows.append({**common, "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p_value": c["t_p"], "test": "paired_t"})
        rows.append({**common, "ci_low": None, "ci_high": None, "p_value": c["wilcoxon_p"], "test": "wilcoxon"})
    return rows


def paper_table(plan: SweepPlan, table: pa.Table) -> str:
    """The paper-style markdown table: each cell is ours over seeds (mean ± 95% interval half-width, n) and the paper's."""
    cells = Cells(plan, table.to_pylist())
    columns = cells.columns()
    header = "| row | " + " | ".join(columns) + " |"
    measure = "each column's metric" if any("@" in ref for ref in columns.values()) else "test error %"
    ref = plan.reference
    lines = [f"{plan.name} ({plan.preset} preset, {plan.dataset}): {measure}, ours ({ref}); ours = mean ± half-width "
             f"of the 95% Student-t interval over seeds (n); n=1: one seed, no interval; † the {ref}'s number lies "
             "outside our interval", "", header, "|" + " --- |" * (len(columns) + 1)]
    for row_name in plan.paper:
        lines.append(f"| {row_name} | " + " | ".join(cells.table_cell(row_name, label) for label in columns) + " |")
    return "\n".join(lines)


def teacher_student_lines(plan: SweepPlan, table: pa.Table) -> list[str]:
    """The terminal's paired lines after the table: each chain's first generation against its teacher, by seed."""
    return [describe(c) for c in Cells(plan, table.to_pylist()).comparisons() if c["comparison"] == STUDENT_VS_TEACHER]


def read_results(location: str | Path) -> pa.Table:
    """Read a sweep's results back with plain pyarrow (a local folder or a storage URI)."""
    store = RunStore(location)
    return pq.read_table(store.path("results.parquet"), filesystem=store.fs)
