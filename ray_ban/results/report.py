"""``python -m ray_ban.report <out>/<sweep>``: report.md and PNG figures of a sweep.

Built from ``results.parquet`` alone (its rows, their per-epoch curves, and the plan stored in its
schema metadata), so it works on any finished or partial sweep and on a copy fetched from a
cluster. Figures: test error by generation for every row (teacher, students, baselines and
ensembles, with the paper's numbers beside ours), learning curves along each chain, and a forest
plot of the paired comparisons over seeds (student vs teacher, BAN-k vs BAN-(k-1), vs a label-only
baseline, Ens*k vs an ensemble of independent models).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

from ray_ban.results.cells import Cells
from ray_ban.results.tables import paper_table, read_results
from ray_ban.config.cell_refs import parse_cell
from ray_ban.config.spaces import SweepPlan
from ray_ban.results.stats import spread
from ray_ban.store import RunStore

ERROR_FIGURE = "error_by_generation.png"
CURVES_FIGURE = "learning_curves.png"
COMPARISONS_FIGURE = "comparisons.png"


class ReportError(ValueError):
    """The folder holds no readable sweep results."""


def load(location: str | Path) -> tuple[list[dict], SweepPlan]:
    """The rows of results.parquet and the plan stored with them (a local folder or a storage URI)."""
    store = RunStore(location)
    path = store.uri("results.parquet")
    try:
        found = store.exists("results.parquet")
    except Exception as error:  # noqa: BLE001  (a storage URI that cannot be reached: one line)
        raise ReportError(f"cannot read {path} ({type(error).__name__}); check the folder or the storage URI") from None
    if not found:
        raise ReportError(f"{path} not found: point at a sweep folder (<out>/<sweep>) that has written results")
    try:
        table = read_results(store.location)
        plan = SweepPlan.from_dict(json.loads(table.schema.metadata[b"plan"]))
    except Exception as error:  # pyarrow, JSON or a plan from another version: one line, no traceback
        raise ReportError(f"{path} is not a ray-ban results file ({type(error).__name__}); rerun the sweep with --resume") from None
    return table.to_pylist(), plan


def plotted_metric(records: list[dict]) -> str:
    """Test perplexity for language models, else test error."""
    return "test_perplexity" if any(r.get("test_perplexity") is not None for r in records) else "final_test_error"


def paper_points(plan: SweepPlan, row: str, metric: str = "final_test_error") -> list[tuple[str, int, float]]:
    """(series, generation, paper value) for the cells of one row that the paper reports in ``metric``."""
    points = []
    for label, ref in (plan.columns or {"teacher": "teacher"}).items():
        value = plan.paper.get(row, {}).get(label)
        cell = parse_cell(ref)
        if value is None or cell.is_count or cell.field != metric:
            continue
        chain_name, part = cell.chain, cell.part
        if part == "teacher":
            points.append(("teacher", 0, float(value)))
            continue
        chain = next((c for c in plan.chains if c.row == row and c.name == chain_name), None)
        if chain is None:
            continue
        generation = max(chain.ensembles[part]) if part in chain.ensembles else int(part) if part.isdigit() else None
        if generation is not None:
            points.append((ref, generation, float(value)))
    return points


def _half_width(values: list[float]) -> float:
    """Half-width of the 95% Student-t interval of the mean over seeds; 0 (no bar) for a single seed."""
    return spread(values).half_width or 0.0


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _panels(records: list[dict], plan: SweepPlan, height: float):
    """A figure with one panel per table row (three across), the rows' names, and the panels."""
    from matplotlib.figure import Figure  # a figure of its own: no pyplot state, the caller's backend untouched

    rows = list(plan.paper) or sorted({r["row"] for r in records})
    cols = min(3, len(rows))
    lines = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(max(4.6 * cols, 7.0), height * lines + 0.4))
    axes = fig.subplots(lines, cols, squeeze=False)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    return fig, rows, list(axes.flat)[: len(rows)]


def error_by_generation(records: list[dict], plan: SweepPlan, store: RunStore, path: str) -> None:
    """One panel per row: test error against generation, ours (filled) and the paper's (hollow)."""
    from matplotlib.ticker import MaxNLocator

    fig, rows, axes = _panels(records, plan, 3.6)
    metric = plotted_metric(records)
    what = "test perplexity" if metric == "test_perplexity" else "test error %"
    ok = [r for r in records if r["status"] == "ok" and r[metric] is not None]
    for ax, row in zip(axes, rows):
        teacher = [r[metric] for r in ok if r["role"] == "teacher" and row in r["shared_by"]]
        series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in ok:
            if r["row"] == row and r["role"] == "student":
                series[_series(r)][r["generation"]].append(r[metric])
        for name, by_gen in sorted(series.items()):
            xs = ([0] if teacher else []) + sorted(by_gen)
            ys = ([_mean(teacher)] if teacher else []) + [_mean(by_gen[g]) for g in sorted(by_gen)]
            bars = ([_half_width(teacher)] if teacher else []) + [_half_width(by_gen[g]) for g in sorted(by_gen)]
            ax.errorbar(xs, ys, yerr=bars, marker="o", capsize=3, label=name)
        if teacher:
            ax.errorbar([0], [_mean(teacher)], yerr=[_half_width(teacher)], marker="*", markersize=14, color="black",
                        linestyle="none", capsize=3, label="teacher")
        baselines: dict[str, list[dict]] = defaultdict(list)  # one line per baseline chain: its mean over seeds
        for r in ok:
            if r["row"] == row and r["role"] == "baseline":
                baselines[r["chain"]].append(r)
        for rs in baselines.values():
            level = _mean([r[metric] for r in rs])
            ax.axhline(level, linestyle="--", color="gray", linewidth=1, label=f"baseline {rs[0]['architecture']}")
        ensembles: dict[str, list[dict]] = defaultdict(list)
        for r in ok:
            if r["row"] == row and r["role"] == "ensemble":
                ensembles[_series(r)].append(r)
        for name, rs in sorted(ensembles.items()):
            independent = _is_independent(rs[0])  # drawn at its size, beside the Ens*k it partners
            x = len(json.loads(rs[0]["config"])["members"]) if independent else rs[0]["generation"]
            values = [r[metric] for r in rs]
            ax.errorbar([x], [_mean(values)], yerr=[_half_width(values)], marker="d" if independent else "D",
                        linestyle="none", capsize=3, markerfacecolor="none" if independent else None,
                        label=f"{name} (independent)" if independent else name)
        paper = paper_points(plan, row, metric)
        if paper:
            ax.plot([g for _, g, _ in paper], [v for _, _, v in paper], marker="o", markersize=9, linestyle="none",
                    markerfacecolor="none", markeredgecolor="red", label=plan.reference)
        ax.set_title(row, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("generation")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    seeds = len(plan.seeds)
    bars = f"; mean of {seeds} seeds, bars: 95% t interval" if seeds > 1 else ""
    hollow = f"; hollow red = {plan.reference}" if any(paper_points(plan, row, metric) for row in rows) else ""
    fig.suptitle(f"{plan.name} ({plan.preset} preset, {plan.dataset}):\n{what} by generation{bars}{hollow}",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, store, path)


def learning_curves(records: list[dict], plan: SweepPlan, store: RunStore, path: str) -> None:
    """One panel per row: test error per epoch along each chain (generation k starts at k x epochs)."""
    fig, rows, axes = _panels(records, plan, 3.4)
    for ax, row in zip(axes, rows):
        for r in records:
            curve = r.get("test_error_by_epoch") or []
            mine = r["row"] == row or (r["role"] == "teacher" and row in r["shared_by"])
            if not curve or not mine or r["role"] == "ensemble":
                continue
            start = r["generation"] * len(curve)
            label = ("teacher" if r["role"] == "teacher" else f"{_series(r)} independent" if r["role"] == "independent"
                     else f"{_series(r)} gen {r['generation']}")
            ax.plot(range(start + 1, start + len(curve) + 1), curve, label=f"{label} s{r['seed']}",
                    color="black" if r["role"] == "teacher" else None)
        ax.set_title(row, fontsize=9)
        ax.set_xlabel("epoch along the chain")
        ax.set_ylabel("test error %")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(f"{plan.name}: learning curves", fontsize=9)
    fig.tight_layout()
    _save(fig, store, path)


def _is_independent(r: dict) -> bool:
    """An ensemble of a chain's independent label-only models (``<chain>/ind<k>``)."""
    return r["role"] == "ensemble" and (r["chain"] or "").rpartition("/")[2].startswith("ind")


def forest_plot(comparisons: list[dict], plan: SweepPlan, store: RunStore, path: str) -> None:
    """One line per paired comparison: the mean of a - b over seeds and its 95% t interval, against zero."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 1.2 + 0.32 * max(1, len(comparisons))))
    ax = fig.subplots()
    for y, c in enumerate(reversed(comparisons)):
        low = c["mean_diff"] - c["ci_low"] if c["ci_low"] is not None else 0.0
        high = c["ci_high"] - c["mean_diff"] if c["ci_high"] is not None else 0.0
        ax.errorbar([c["mean_diff"]], [y], xerr=[[low], [high]], fmt="o", capsize=3,
                    color="black" if c["ci_low"] is not None else "gray")
    ax.set_yticks(range(len(comparisons)))
    ax.set_yticklabels([f"{c['row']}: {c['a']} - {c['b']} (n={c['n']})" for c in reversed(comparisons)], fontsize=7)
    ax.axvline(0.0, color="red", linewidth=1)
    what = "perplexity" if comparisons and comparisons[0]["metric"] == "perplexity" else "test error points"
    ax.set_xlabel(f"a - b in {what}, paired by seed (left of 0: a is better); bars: 95% t interval")
    if not comparisons:
        ax.text(0.5, 0.5, "no comparison has a finished seed yet", transform=ax.transAxes, ha="center")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{plan.name}: paired comparisons over seeds (gray: one seed, no interval)", fontsize=9)
    fig.tight_layout()
    _save(fig, store, path)


def comparisons_section(comparisons: list[dict]) -> list[str]:
    """report.md's table of paired comparisons: a - b over the seeds both have, its interval and both tests."""
    lines = ["## Paired comparisons over seeds", "",
             "Within a seed a chain's generations share one lineage, so cells are compared seed by seed: a - b "
             "(negative: a is better), the mean over seeds with its 95% Student-t interval, a paired t-test and a "
             "Wilcoxon signed-rank test (which cannot reach p < 0.05 below 6 seeds). Also in comparisons.parquet.", "",
             f"![paired comparisons]({COMPARISONS_FIGURE})", "",
             "| row | comparison | a - b | n | mean a - b | 95% CI | paired t p | Wilcoxon p |",
             "|" + " --- |" * 8]
    for c in comparisons:
        interval = "-" if c["ci_low"] is None else f"{c['ci_low']:+.2f} to {c['ci_high']:+.2f}"
        cells = [c["row"], c["comparison"], f"{c['a']} - {c['b']}", c["n"], f"{c['mean_diff']:+.2f}", interval,
                 _p(c["t_p"]), _p(c["wilcoxon_p"])]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines + [""]


def _p(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"


def _save(fig, store: RunStore, path: str) -> None:
    store.write_with(path, lambda temp: fig.savefig(temp, format="png", dpi=110))


def markdown(records: list[dict], plan: SweepPlan) -> str:
    """report.md: the paper-style table, the figures, and every row of the results."""
    import pyarrow as pa

    from ray_ban.results.tables import SCHEMA

    language = plotted_metric(records) == "test_perplexity"
    statuses = defaultdict(int)
    for r in records:
        statuses[r["status"]] += 1
    lines = [f"# {plan.name}: {plan.preset} preset on {plan.dataset}", "",
             f"{len(records)} result rows ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}); "
             f"recipe: {plan.recipe.epochs} epochs, batch {plan.recipe.batch_size}, lr {plan.recipe.lr}, "
             f"{plan.recipe.schedule} schedule.", "",
             paper_table(plan, pa.Table.from_pylist(records, schema=SCHEMA)), "",
             f"![{'test perplexity' if language else 'test error'} by generation]({ERROR_FIGURE})", "", f"![learning curves]({CURVES_FIGURE})", "",
             *comparisons_section(Cells(plan, records).comparisons()),
             *search_section(records),
             *estimate_section(records, plan),
             "## Every model and ensemble", "",
             "| row | chain | role | gen | architecture | loss | seed | final error % | best error % | agreement % | "
             + ("val perplexity | test perplexity | " if language else "") + "status |",
             "|" + " --- |" * (13 if language else 11)]
    for r in sorted(records, key=lambda r: (r["row"], r["chain"] or "", r["generation"], r["seed"])):
        cells = [r["row"], r["chain"] or "", r["role"], r["generation"], r["architecture"], r["loss"], r["seed"],
                 _num(r["final_test_error"]), _num(r["best_test_error"]), _num(r["agreement"]),
                 *([_num(r.get("val_perplexity")), _num(r.get("test_perplexity"))] if language else []),
                 r["status"] + (" (reused from the teacher bank)" if r.get("reused_from") else "")
                 + (f": {r['message']}" if r["message"] else "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def estimate_section(records: list[dict], plan: SweepPlan) -> list[str]:
    """Each finished model's time as the --dry-run plan estimates it against its measured wall_time_s."""
    from ray_ban.config.gpu_cost import load_table
    from ray_ban.config.gpu_plan import hours, record_estimates
    from ray_ban.data import num_classes_of
    from ray_ban.data.sizes import image_counts
    from ray_ban.models.flops import count_flops

    try:
        device, rows = record_estimates(plan, records, load_table(), image_counts(plan), count_flops,
                                        num_classes_of(plan.dataset) or 10)
    except Exception as error:  # noqa: BLE001 - an estimate must never cost the report
        return ["## Estimated against measured training time", "", f"Not estimated ({type(error).__name__}: {error}).", ""]
    if not rows:
        return []
    lines = ["## Estimated against measured training time", "",
             f"The estimate is the --dry-run plan's (`ray_ban/config/gpu_plan.py`, throughput table "
             f"`ray_ban/config/throughput.json`) "
             f"for {device}, with the precision and workers each model ran with; measured is its `wall_time_s` (its "
             "epochs and evaluations, without start-up). The ratio is given only for models trained on that GPU.", "",
             "| model | architecture | precision | device | workers | estimate | measured | measured / estimate |",
             "|" + " --- |" * 8]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        measured = "-" if r["measured_s"] is None else hours(r["measured_s"])
        lines.append(f"| {r['label']} | {r['architecture']} | {r['precision']} | {r['device']} | {r['workers']} | "
                     f"{hours(r['estimate_s'])} | {measured} | {ratio} |")
    return lines + [""]


def _series(r: dict) -> str:
    """A plotted line: a chain, or in a search one trial of it (its chain name is shared by all)."""
    return f"{r['chain']} {r['trial']}" if r.get("trial") else r["chain"]


def search_section(records: list[dict]) -> list[str]:
    """The trials of a search: values, how far each got, validation and test error, the selected one."""
    trials: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("trial") and r["role"] == "student":
            trials[r["trial"]].append(r)
    if not trials:
        return []
    lines = ["## Search trials", "", "Selected on validation error; the test error is reported, never used to select.", "",
             "| trial | values | generations done | stopped at report | val error % | test error % | selected |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in sorted(trials.items()):
        done = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["generation"])
        last = done[-1] if done else None
        first = rows[0]
        cells = [name, first["hparams"], f"{len(done)}/{len(rows)}", first["stopped_at"] if first["stopped"] else "-",
                 _num(last and last["val_error"]), _num(last and last["final_test_error"]),
                 "yes" if first["selected"] else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""]


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_report(location: str | Path) -> str:
    """Write report.md and its figures into the sweep folder (local or storage URI); returns report.md's location."""
    store = RunStore(location)
    records, plan = load(location)
    error_by_generation(records, plan, store, ERROR_FIGURE)
    learning_curves(records, plan, store, CURVES_FIGURE)
    forest_plot(Cells(plan, records).comparisons(), plan, store, COMPARISONS_FIGURE)
    store.write_bytes("report.md", markdown(records, plan).encode())
    return store.uri("report.md")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_ban.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a sweep's folder, <out>/<sweep>, or its storage URI")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir)
    except ReportError as error:
        print(f"ray-ban report: error: {error}", file=sys.stderr)
        return 2
    print(f"ray-ban report: {path} ({ERROR_FIGURE}, {CURVES_FIGURE}, {COMPARISONS_FIGURE} beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
