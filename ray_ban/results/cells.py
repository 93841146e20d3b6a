"""The cells of a sweep's table and the paired comparisons between them, over seeds.

A cell reference names one model or ensemble per seed of a table row: ``teacher``, ``params``,
``CHAIN/K`` (generation K; ``CHAIN/0`` is a baseline), ``CHAIN/ensK``, ``CHAIN/indK`` (the ensemble of
K independent label-only models), ``CHAIN/params``, each optionally ``@metric``. ``Cells.values``
gives a cell's values by sweep seed, so a cell is summarised over seeds (``stats.spread``) and two
cells are compared seed by seed (``stats.paired``). Rows in and rows out are plain dicts; results.py
owns the Parquet schemas.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ray_ban.results import stats
from ray_ban.config.cell_refs import CellRef, parse_cell
from ray_ban.config.spaces import Chain, SweepPlan

# what a comparison asks, in the order the report lists them
STUDENT_VS_TEACHER = "student vs teacher"
GENERATION_VS_PREVIOUS = "generation vs previous"
VS_BASELINE = "vs label-only baseline"
VS_INDEPENDENT = "ensemble vs independent ensemble"


def is_count(ref: str) -> bool:
    """A parameter-count cell (``params``, ``CHAIN/params``, ``...@params``): a count, not a sample to test."""
    return parse_cell(ref).is_count


def format_count(value: float) -> str:
    """A parameter count as the paper writes it: ``77.9k``, ``16.1M``, ``1.2G``; never ``0.00M``."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if round(value / scale, 1) >= 1:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def paper_number(value: Any) -> Optional[float]:
    """The paper's cell as a number: ``17.69`` as is, ``10.2M`` / ``77.9k`` as counts; None if neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKMG]?)\s*", str(value))
    if not match:
        return None
    return float(match.group(1)) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


def format_cell(spread: stats.Spread, ref: str, paper: Any, paper_in_ci: Optional[bool]) -> str:
    """``mean ± half-width (n=N) (paper)``; ``9.52 (n=1) (9.0)`` for one seed; a dagger marks a paper
    number outside our interval; parameter counts as ``16.1M``."""
    if spread.n == 0:
        ours = "-"
    elif is_count(ref):
        ours = format_count(spread.mean)
    elif spread.n == 1:
        ours = f"{spread.mean:.2f} (n=1)"
    else:
        ours = f"{spread.mean:.2f} ± {spread.half_width:.2f} (n={spread.n})"
    theirs = "-" if paper is None else f"{paper}{'†' if paper_in_ci is False else ''}"
    return f"{ours} ({theirs})"


class Cells:
    """Cell values by seed from result rows (``results.collect_rows`` or results.parquet read back)."""

    def __init__(self, plan: SweepPlan, records: list[dict]):
        self.plan = plan
        self.by_key = {r["model_key"]: r for r in records}
        language = any(r.get("test_perplexity") is not None for r in records)
        self.metric = "perplexity" if language else "error"  # what comparisons compare

    def columns(self) -> dict:
        return self.plan.columns or {"teacher": "teacher"}

    def values(self, row: str, ref: str) -> dict[int, float]:
        """Sweep seed -> the cell's value in that seed (seeds whose model is not finished are absent)."""
        cell = parse_cell(ref)
        found: dict[int, float] = {}
        for chain in (c for c in self.plan.chains if c.row == row):
            key, wanted = self._key(chain, cell)
            record = self.by_key.get(key) if key else None
            if record is not None and record.get(wanted) is not None:
                found.setdefault(chain.seed, float(record[wanted]))  # a teacher shared by chains: once per seed
        return dict(sorted(found.items()))

    @staticmethod
    def _key(chain: Chain, cell: CellRef) -> tuple[Optional[str], str]:
        """The model (or ensemble) key a cell reads in ``chain``, and the field it reads."""
        if cell.chain is None:
            return (chain.root.key if chain.root.role == "teacher" else None), cell.field
        if chain.name != cell.chain:
            return None, cell.field
        if cell.ensemble:
            return f"{chain.chain_id}.{cell.part}", cell.field
        if cell.part == "params":  # every generation is the student's architecture; the first exists even if a chain stopped
            return (chain.generations[0] if chain.generations else chain.root).key, cell.field
        return next((t.key for t in chain.trainings if t.generation == cell.generation), None), cell.field

    def cell_rows(self) -> list[dict]:
        """One row per table cell: n, mean, std, the 95% interval, the paper's number and whether it lies inside."""
        rows = []
        for row_name, paper_row in self.plan.paper.items():
            for label, ref in self.columns().items():
                by_seed = self.values(row_name, ref)
                spread = stats.spread(list(by_seed.values()))
                paper = paper_number(paper_row.get(label))
                rows.append({"row": row_name, "column": label, "reference": ref, "n": spread.n, "mean": spread.mean,
                             "std": spread.std, "ci_low": spread.ci_low, "ci_high": spread.ci_high,
                             "paper": paper, "paper_in_ci": None if is_count(ref) else spread.contains(paper),
                             "seeds": list(by_seed)})
        return rows

    def table_cell(self, row: str, label: str) -> str:
        """One cell of the paper-style table, formatted."""
        ref = self.columns()[label]
        spread = stats.spread(list(self.values(row, ref).values()))
        raw = self.plan.paper.get(row, {}).get(label)
        inside = None if is_count(ref) else spread.contains(paper_number(raw))
        return format_cell(spread, ref, raw, inside)

    def pairs(self, row: str) -> list[tuple[str, str, str]]:
        """(what, a, b) for the row: each generation vs its teacher, BAN-k vs BAN-(k-1), each generation vs a
        label-only baseline of its architecture, and each ensemble vs the independent ensemble of its size."""
        chains: dict[str, Chain] = {}
        for chain in self.plan.chains:
            if chain.row == row:
                chains.setdefault(chain.name, chain)
        baselines = [c for c in chains.values() if not c.generations]
        found = []
        for chain in chains.values():
            for training in chain.generations:
                k = training.generation
                found.append((STUDENT_VS_TEACHER, f"{chain.name}/1", "teacher") if k == 1 else
                             (GENERATION_VS_PREVIOUS, f"{chain.name}/{k}", f"{chain.name}/{k - 1}"))
            for baseline in baselines:
                found.extend((VS_BASELINE, f"{chain.name}/{t.generation}", f"{baseline.name}/0")
                             for t in chain.generations if t.architecture == baseline.root.architecture)
            for name, members in chain.ensembles.items():
                if len(members) <= len(chain.independent):
                    found.append((VS_INDEPENDENT, f"{chain.name}/{name}", f"{chain.name}/ind{len(members)}"))
        order = [STUDENT_VS_TEACHER, GENERATION_VS_PREVIOUS, VS_BASELINE, VS_INDEPENDENT]
        return sorted(found, key=lambda p: order.index(p[0]))

    def comparisons(self) -> list[dict]:
        """Every pair of every row with at least one seed in common: a - b, its interval and both tests."""
        suffix = "@perplexity" if self.metric == "perplexity" else ""
        found = []
        for row in dict.fromkeys(c.row for c in self.plan.chains):
            for what, a, b in self.pairs(row):
                result = stats.paired(self.values(row, a + suffix), self.values(row, b + suffix))
                if result.n == 0:
                    continue
                d = result.difference
                found.append({"row": row, "comparison": what, "a": a, "b": b, "metric": self.metric, "n": result.n,
                              "seeds": list(result.seeds), "mean_diff": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high,
                              "t_p": result.t_p, "wilcoxon_p": result.wilcoxon_p})
        return found


def describe(comparison: dict) -> str:
    """One terminal line: ``A: ban/1 - teacher = -0.85 points of test error over 3 seeds (95% CI ...; p-values)``."""
    unit = "perplexity" if comparison["metric"] == "perplexity" else "points of test error"
    head = f"{comparison['row']}: {comparison['a']} - {comparison['b']} = {comparison['mean_diff']:+.2f} {unit}"
    if comparison["n"] < 2:
        return f"{head} (1 seed: no interval or test; add seeds, e.g. --seeds 0-4)"
    tests = ", ".join(f"{name} p = {'n/a' if value is None else f'{value:.3g}'}"
                      for name, value in (("paired t", comparison["t_p"]), ("Wilcoxon", comparison["wilcoxon_p"])))
    return (f"{head} over {comparison['n']} seeds (95% CI {comparison['ci_low']:+.2f} to {comparison['ci_high']:+.2f}; "
            f"{tests})")
