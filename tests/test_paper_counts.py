"""The dry run prints every counted model's parameters beside the paper's number from the space file."""

from __future__ import annotations

import pytest
import torch
import yaml

from ray_ban import models
from ray_ban.config import spaces
from ray_ban.cli import sweep
from ray_ban.cli.paper_counts import paper_number


def dry_run(capsys, *args: str) -> list[str]:
    """The dry run's parameter lines (after their header), as printed by the CLI's own main()."""
    assert sweep.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    return out[out.index("\nparameters, ours") + 1:].split("\n\n")[0].splitlines()[1:]  # the GPU plan follows


def counted(table: str) -> list[tuple[dict, str, str]]:
    """Per row of the space file: the row, the architecture its params column counts, the paper's number."""
    raw = yaml.safe_load((spaces.SPACES_DIR / f"{table}.yaml").read_text())
    label, ref = next((label, ref) for label, ref in raw["columns"].items() if ref.endswith("params"))
    chain = ref.partition("/")[0]
    return [(row, row["chains"][chain]["student"], row["paper"][label]) for row in raw["rows"]]


@pytest.mark.parametrize("table", ["table4", "table5"])
def test_dry_run_prints_each_students_count_beside_the_papers(table: str, capsys) -> None:
    lines = dry_run(capsys, table, "--dataset", "synthetic-100")  # the paper's architectures, CIFAR-100's classes
    rows = counted(table)
    assert len(lines) == len(rows)
    for line, (row, architecture, paper) in zip(lines, rows):
        with torch.device("meta"):
            count = models.parameter_count(models.build(architecture, 100))
        name, arch, exact, millions, word, printed, diff = line.split()
        assert (name, arch, exact, millions, word, printed) == (
            row["row"], architecture, f"{count:,}", f"{count / 1e6:.2f}M", "paper", paper)
        assert float(diff.rstrip("%")) == pytest.approx(100 * (count / paper_number(paper) - 1), abs=0.05)


@pytest.mark.parametrize("table", ["table4", "table5"])
def test_smoke_dry_run_counts_its_stand_ins_without_comparing(table: str, capsys) -> None:
    out_lines = dry_run(capsys, table, "--preset", "smoke")
    plan = spaces.load(table, "smoke")
    assert len(out_lines) == len(plan.paper)
    for line in out_lines:
        name, arch, exact, millions, word, printed = line.split()  # no difference: a stand-in is not the paper's model
        kwargs = next(t.model_kwargs for c in plan.chains for t in c.trainings if t.architecture == arch)
        with torch.device("meta"):
            assert exact == f"{models.parameter_count(models.build(arch, 100, **kwargs)):,}"


def test_paper_numbers() -> None:
    assert paper_number("7.3M") == pytest.approx(7.3e6)
    assert paper_number("0.38M") == pytest.approx(3.8e5)
    assert paper_number(52) == pytest.approx(52e6)  # Table 6 prints millions without the M
    assert paper_number("800K") == pytest.approx(8e5)
    assert paper_number("about 7M") is None and paper_number(None) is None
