"""Table cell references, parsed once: ``teacher``, ``params``, ``CHAIN/GENERATION``, ``CHAIN/ensK``,
``CHAIN/indK`` or ``CHAIN/params``, each optionally ``@metric`` (``ban+l/1@perplexity``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

CELL_METRICS = {"params": "parameters", "error": "final_test_error", "best_error": "best_test_error",
                "val_error": "val_error", "perplexity": "test_perplexity", "val_perplexity": "val_perplexity"}


@dataclass(frozen=True)
class CellRef:
    """One column's cell: the chain it names (None for the row's teacher or its count) and the part of it."""

    chain: Optional[str]
    part: str  # "teacher", "params", a generation "2", an ensemble "ens2", an independent ensemble "ind3"
    metric: str = ""  # after "@"; "" for the default (final test error)

    @property
    def field(self) -> str:
        """The results column the cell reads."""
        if self.part == "params" or self.metric == "params":
            return "parameters"
        return CELL_METRICS.get(self.metric, "final_test_error")

    @property
    def is_count(self) -> bool:
        """A parameter count: a number to print, not a sample over seeds to test."""
        return self.field == "parameters"

    @property
    def generation(self) -> Optional[int]:
        return int(self.part) if self.part.isdigit() else None

    @property
    def ensemble(self) -> bool:
        return self.part.startswith(("ens", "ind"))


def parse_cell(ref: str) -> CellRef:
    """``ref`` as a CellRef (shape only: whether the chain and ensemble exist is the plan's to check)."""
    cell, _, metric = ref.partition("@")
    if cell in ("teacher", "params"):
        return CellRef(None, cell, metric)
    chain, _, part = cell.partition("/")
    return CellRef(chain, part, metric)
