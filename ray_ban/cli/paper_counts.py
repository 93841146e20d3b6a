"""Each planned model's parameter count beside the paper's, for ``--dry-run``.

The paper's counts are data, not code: every row's ``paper`` numbers under a column whose cell is
``params`` (the teacher), ``CHAIN/params`` (that chain's model) or ``CHAIN/GEN@params``, as in
search_spaces/table5.yaml. Models are built on the meta device: shapes only, instant even at 100M.
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from ray_ban import models
from ray_ban.data import num_classes_of
from ray_ban.config.cell_refs import parse_cell
from ray_ban.config.spaces import SweepPlan, Training

_SCALE = {"": 1e6, "K": 1e3, "M": 1e6, "B": 1e9}  # a bare number is in millions, as the paper prints counts


def paper_number(value: object) -> Optional[float]:
    """A printed count as a number: ``"7.3M"`` -> 7.3e6, ``52`` -> 52e6 (millions); None if not a count."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMB]?)\s*", str(value))
    return float(match[1]) * _SCALE[match[2]] if match else None


def _is_params(ref: str) -> bool:
    return parse_cell(ref).is_count


def counted_training(plan: SweepPlan, row: str, ref: str) -> Optional[Training]:
    """The model whose parameters a ``params`` cell of ``row`` reports (its first seed's), or None."""
    cell = parse_cell(ref)
    chains = [c for c in plan.chains if c.row == row and c.seed == plan.seeds[0]]
    if cell.chain is None:
        return next((c.root for c in chains if c.root.role == "teacher"), None)
    for chain in (c for c in chains if c.name == cell.chain):
        if cell.part == "params":
            return chain.trainings[-1]
        if cell.generation is not None:
            return next((t for t in chain.trainings if t.generation == cell.generation), None)
    return None  # an ensemble's cell: the sum of its members, not one model


def parameter_lines(plan: SweepPlan) -> list[str]:
    """Dry-run lines: row, architecture, our count and the paper's (with the difference in the paper preset)."""
    classes = num_classes_of(plan.dataset) or 10
    entries = []
    for label, ref in plan.columns.items():
        if not _is_params(ref):
            continue
        for row, numbers in plan.paper.items():
            training = counted_training(plan, row, ref)
            if training is None:
                continue
            with torch.device("meta"):
                count = models.parameter_count(models.build(training.architecture, classes, **training.model_kwargs))
            paper = numbers.get(label)
            published = paper_number(paper)
            diff = f"{100 * (count / published - 1):+.1f}%" if published and plan.preset == "paper" else ""
            entries.append((row, training.architecture, f"{count:,}", f"{count / 1e6:.2f}M",
                            f"paper {'-' if paper is None else paper}", diff))
    if not entries:
        return []
    stand_in = ("" if plan.preset == "paper" else
                f"; the {plan.preset} preset builds stand-ins, the paper's are for the paper preset")
    widths = [max(len(e[i]) for e in entries) for i in range(len(entries[0]))]
    lines = [f"parameters, ours ({classes} classes) vs the paper's params column{stand_in}:"]
    for entry in entries:
        cells = [text.rjust(w) if i in (2, 3, 5) else text.ljust(w) for i, (text, w) in enumerate(zip(entry, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
