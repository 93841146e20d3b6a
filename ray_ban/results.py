"""Arrow results of a sweep: one row per trained model and per ensemble, and the paper-style table.

Built only from the run folder (summaries and stored test predictions) and the plan, so it works on
any finished or partial sweep; ensembles come from stored logits, never from re-running models.
This is the only module that knows the Parquet schema.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from . import metrics
from .recipe import Recipe
from .spaces import CELL_METRICS, Chain, SweepPlan, Training
from .store import RunStore

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
])
ENVIRONMENT = ("device", "precision", "workers", "torch_version", "ray_version", "ray_ban_version")


def collect_rows(plan: SweepPlan, store: RunStore) -> list[dict]:
    """Result rows for every model of the plan (finished, failed or pending) and every ensemble."""
    if plan.search:
        return _search_rows(plan, store)
    users: dict[str, list[str]] = {}
    for chain in plan.chains:
        for training in chain.trainings:
            users.setdefault(training.key, []).append(chain.row)
    rows, seen = [], set()
    for chain in plan.chains:
        for training in chain.trainings:
            if training.key in seen:
                continue
            seen.add(training.key)
            rows.append(_model_row(plan, store, chain, training, sorted(set(users[training.key]))))
        rows.extend(_ensemble_rows(plan, store, chain))
    return rows


def _search_rows(plan: SweepPlan, store: RunStore) -> list[dict]:
    """A search's rows: the shared teacher, then every trial's generations and ensembles with its values."""
    from .search import chain_to_search
    from .search_phase import read_outcome

    template = chain_to_search(plan)
    rows = [_model_row(plan, store, template, template.root, [template.row])]
    outcome = read_outcome(store) or {"trials": [], "best": None}
    for trial in outcome["trials"]:
        chain = Chain.from_dict(trial["chain"])
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
                                                 "test_perplexity", "val_perplexity", *ENVIRONMENT)})
        row["status"] = "ok"
        history = store.history(training.key)
        row["test_error_by_epoch"] = [h["test_error"] for h in history]
        row["train_loss_by_epoch"] = [h["train_loss"] for h in history]
    else:
        failure = store.failure(training.key)
        row.update(status="failed" if failure else "pending", message=failure)
    return row


def _ensemble_rows(plan: SweepPlan, store: RunStore, chain: Chain) -> list[dict]:
    by_generation = {t.generation: t for t in chain.trainings}
    rows = []
    for name, members in chain.ensembles.items():
        trainings = [by_generation[g] for g in members]
        row = _base_row(plan, chain, "ensemble", max(members), chain.generations[-1].architecture, chain.generations[-1].loss,
                        chain.generations[-1].loss_params, chain.seed)
        row.update(chain=f"{chain.name}/{name}", members=list(members), model_key=f"{chain.chain_id}.{name}",
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
        rows.append(row)
    return rows


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


def write_results(plan: SweepPlan, store: RunStore) -> pa.Table:
    """Write ``results.parquet`` (atomically) and ``table.md``; returns the Arrow table."""
    table = pa.Table.from_pylist(collect_rows(plan, store), schema=SCHEMA)
    table = table.replace_schema_metadata({"sweep": plan.name, "plan": json.dumps(plan.to_dict(), default=str)})
    store.write_with("results.parquet", lambda temp: pq.write_table(table, temp))
    store.write_bytes("table.md", (paper_table(plan, table) + "\n").encode())
    return table


def paper_table(plan: SweepPlan, table: pa.Table) -> str:
    """The paper-style markdown table: each cell is our test error (mean ± sd over seeds) and the paper's."""
    records = table.to_pylist()
    columns = plan.columns or {"teacher": "teacher"}
    header = "| row | " + " | ".join(columns) + " |"
    measure = "each column's metric" if any("@" in ref for ref in columns.values()) else "test error %"
    lines = [f"{plan.name} ({plan.preset} preset, {plan.dataset}): {measure}, ours (paper)", "",
             header, "|" + " --- |" * (len(columns) + 1)]
    for row_name in plan.paper:
        cells = []
        for label, ref in columns.items():
            ours = _cell_values(plan, records, row_name, ref)
            paper = plan.paper[row_name].get(label)
            cells.append(f"{_format(ours, ref)} ({'-' if paper is None else paper})")
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell_values(plan: SweepPlan, records: list[dict], row_name: str, ref: str) -> list[float]:
    """Values of one cell over seeds: test error (or ``@metric``) of a model or ensemble, or a parameter count."""
    by_key = {r["model_key"]: r for r in records}
    ref, _, metric = ref.partition("@")
    field = CELL_METRICS[metric] if metric else "final_test_error"
    chain_name, _, part = ref.partition("/")
    wanted: list[tuple[str, str]] = []  # (model key, field)
    for chain in (c for c in plan.chains if c.row == row_name):
        if ref in ("teacher", "params"):
            if chain.root.role == "teacher":
                wanted.append((chain.root.key, "parameters" if ref == "params" else field))
        elif chain.name != chain_name:
            continue
        elif part.startswith("ens"):
            wanted.append((f"{chain.chain_id}.{part}", field))
        elif part == "params":
            wanted.append((chain.trainings[-1].key, "parameters"))
        else:
            wanted.extend((t.key, field) for t in chain.trainings if t.generation == int(part))
    # dict.fromkeys: a teacher shared by several chains of the row counts once per seed
    return [by_key[k][f] for k, f in dict.fromkeys(wanted) if k in by_key and by_key[k][f] is not None]


def _format(values: list[float], ref: str) -> str:
    if not values:
        return "-"
    if ref.endswith("params") or ref.endswith("@params"):
        return f"{values[0] / 1e6:.2f}M"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def read_results(location: str | Path) -> pa.Table:
    """Read a sweep's results back with plain pyarrow (a local folder or a storage URI)."""
    store = RunStore(location)
    return pq.read_table(store.path("results.parquet"), filesystem=store.fs)
