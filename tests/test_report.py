"""The sweep report: rendered from results.parquet alone into report.md and valid PNG figures."""

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

import pyarrow.parquet as pq

from fabricated_run import SPACE, fabricate_run
from ray_ban.results.report import COMPARISONS_FIGURE, CURVES_FIGURE, ERROR_FIGURE, load, paper_points, write_report
from ray_ban.results.report import main as report_main
from ray_ban.results.tables import write_results
from sweep_helpers import ROOT


def test_the_sweep_wrote_its_report_and_the_cli_renders_it_from_parquet_alone(finished_sweep, tmp_path):
    folder, *_ = finished_sweep
    sweep_dir = folder / "runs" / "shared"
    for name in ("report.md", ERROR_FIGURE, CURVES_FIGURE, COMPARISONS_FIGURE, "cells.parquet", "comparisons.parquet"):
        assert (sweep_dir / name).is_file(), name  # written at the end of the sweep
    only_parquet = tmp_path / "copy"
    only_parquet.mkdir()
    shutil.copy(sweep_dir / "results.parquet", only_parquet)
    result = subprocess.run([sys.executable, "-m", "ray_ban.report", str(only_parquet)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in (ERROR_FIGURE, CURVES_FIGURE):
        with Image.open(only_parquet / name) as image:
            image.verify()  # a whole, valid PNG
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    text = (only_parquet / "report.md").read_text()
    assert f"]({ERROR_FIGURE})" in text and "| A |" in text and "(9.0)" in text
    records, _ = load(only_parquet)
    assert text.count("| ok |") == sum(r["status"] == "ok" for r in records)


def test_paper_numbers_are_placed_at_their_generation(finished_sweep):
    folder, *_ = finished_sweep
    _, plan = load(folder / "runs" / "shared")
    assert sorted(paper_points(plan, "A")) == [("ban/1", 1, 9.0), ("teacher", 0, 10.0)]
    assert sorted(paper_points(plan, "B")) == [("base/0", 0, 11.5), ("teacher", 0, 10.0)]


def test_report_on_a_folder_without_results_is_one_line_and_exit_2(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2  # the CLI's main in this process (`python -m ray_ban.report` exits with it)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.parquet" in err and "Traceback" not in err


def test_the_report_shows_paired_comparisons_as_a_table_and_a_forest_plot(tmp_path):
    plan, store, _ = fabricate_run(tmp_path)  # three seeds, written without Ray
    write_results(plan, store)
    write_report(store.location)
    with Image.open(store.path(COMPARISONS_FIGURE)) as image:
        image.verify()
        assert image.format == "PNG" and image.size[1] > 200
    text = Path(store.path("report.md")).read_text()
    assert "## Paired comparisons over seeds" in text and f"]({COMPARISONS_FIGURE})" in text
    comparisons = [r for r in pq.read_table(store.path("comparisons.parquet")).to_pylist() if r["test"] == "paired_t"]
    assert len(comparisons) == 5
    for c in comparisons:  # every pair is a line of the table, with the same numbers as comparisons.parquet
        assert (f"| {c['row']} | {c['comparison']} | {c['a']} - {c['b']} | {c['n']} | {c['mean_diff']:+.2f} | "
                f"{c['ci_low']:+.2f} to {c['ci_high']:+.2f} | {c['p_value']:.3g} |") in text
    assert "(n=3)" in text and "77.9k" in text and "independent" in text


def test_a_row_of_only_a_baseline_is_drawn_without_a_warning(tmp_path):
    import copy
    import warnings

    space = copy.deepcopy(SPACE)  # row B: a label-only baseline and nothing else (no teacher, no chain)
    space["columns"]["Slow"] = "slow/0"
    space["rows"].append({"row": "B", "chains": {"slow": {"baseline": True, "student": "wrn-10-1"}}})
    plan, store, _ = fabricate_run(tmp_path, space)
    write_results(plan, store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: matplotlib's "No artists with labels found to put in legend"
        write_report(store.location)
    with Image.open(store.path(ERROR_FIGURE)) as image:
        image.verify()
