"""Statistics over seeds: intervals and paired tests against hand-computed values, and the cells.parquet,
comparisons.parquet, independent ensembles and provenance of a run folder written without Ray."""

import hashlib
import itertools
import json
import math
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fabricated_run import SPACE, fabricate_run
from ray_ban.results import cells
from ray_ban.results import stats
from ray_ban.results.tables import teacher_student_lines, write_results
from sweep_helpers import ROOT

# Student's t has closed forms for 1 and 2 degrees of freedom: P(|T| < t) = 2 atan(t) / pi and t / sqrt(2 + t^2)
T_975_DF1 = math.tan(0.95 * math.pi / 2)  # 12.706
T_975_DF2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # 4.303


def two_sided_p_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


def exact_wilcoxon_p(differences: list[float]) -> float:
    """Two-sided exact signed-rank p-value by enumerating all 2^n sign patterns; zero differences are dropped
    first (Wilcoxon's own rule), and the rest must differ in size (no tied ranks)."""
    differences = [d for d in (round(d, 10) for d in differences) if d != 0]
    magnitudes = sorted(abs(d) for d in differences)
    assert len(set(magnitudes)) == len(magnitudes)
    rank = {m: i + 1 for i, m in enumerate(magnitudes)}
    observed = sum(rank[abs(d)] for d in differences if d > 0)
    sums = [sum(r for r, positive in zip(range(1, len(differences) + 1), signs) if positive)
            for signs in itertools.product([False, True], repeat=len(differences))]
    low = sum(s <= observed for s in sums) / len(sums)
    high = sum(s >= observed for s in sums) / len(sums)
    return min(1.0, 2 * min(low, high))


def test_a_t_interval_is_mean_plus_minus_t_times_sd_over_root_n():
    values = [10.0, 11.0, 13.0]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    got = stats.spread(values)
    assert got.n == 3 and got.mean == pytest.approx(mean) and got.std == pytest.approx(sd)
    assert got.half_width == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert (got.ci_low, got.ci_high) == pytest.approx((mean - got.half_width, mean + got.half_width))
    two = stats.spread([1.0, 3.0])  # sd sqrt(2), so the half-width is t(1) itself
    assert two.half_width == pytest.approx(T_975_DF1) and T_975_DF1 == pytest.approx(12.706, abs=1e-3)
    five = stats.spread([16.2, 16.9, 17.1, 16.5, 17.3])  # the printed t table: t(0.975, 4) = 2.776
    assert five.half_width / (five.std / math.sqrt(5)) == pytest.approx(2.776, abs=1e-3)
    one = stats.spread([9.52])
    assert (one.n, one.mean, one.std, one.ci_low, one.half_width, one.contains(9.0)) == (1, 9.52, None, None, None, None)
    assert stats.spread([]).n == 0 and got.contains(11.0) and not got.contains(30.0)


def test_a_paired_t_test_uses_only_seeds_both_cells_have():
    a = {0: 17.0, 1: 16.5, 2: 16.0, 3: 99.0}
    b = {0: 17.5, 1: 17.5, 2: 16.5, 7: 1.0}
    result = stats.paired(a, b)
    differences = [-0.5, -1.0, -0.5]
    mean = sum(differences) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    t = mean / (sd / math.sqrt(3))
    assert t == pytest.approx(-4.0)
    assert result.seeds == (0, 1, 2) and result.n == 3
    assert result.difference.mean == pytest.approx(mean)
    assert result.t_p == pytest.approx(two_sided_p_df2(t)) and result.t_p == pytest.approx(1 - 4 / math.sqrt(18))
    assert result.difference.half_width == pytest.approx(T_975_DF2 * sd / math.sqrt(3))
    assert result.wilcoxon_p == pytest.approx(exact_wilcoxon_p([-0.5, -1.0, -0.6]))  # all one sign: 2/8


def test_wilcoxon_signed_rank_matches_the_exact_enumeration():
    differences = [1.0, -2.0, 3.0, 4.0, 5.0]  # W+ = 13, W- = 2; P(W <= 2) = 3/32
    result = stats.paired({s: 10 + d for s, d in enumerate(differences)}, {s: 10.0 for s in range(5)})
    assert result.wilcoxon_p == pytest.approx(exact_wilcoxon_p(differences)) and result.wilcoxon_p == pytest.approx(0.1875)
    same_sign = stats.paired({s: float(s + 1) for s in range(5)}, {s: 0.0 for s in range(5)})
    assert same_sign.wilcoxon_p == pytest.approx(2 / 32)


def test_degenerate_comparisons_have_no_p_values():
    equal = stats.paired({0: 5.0, 1: 6.0, 2: 7.0}, {0: 5.0, 1: 6.0, 2: 7.0})
    assert equal.difference.mean == 0 and equal.t_p is None and equal.wilcoxon_p is None
    single = stats.paired({0: 5.0, 1: 1.0}, {0: 4.0})
    assert single.n == 1 and single.difference.mean == pytest.approx(1.0) and single.t_p is None and single.difference.ci_low is None


def test_counts_and_cells_are_formatted_as_the_paper_writes_them():
    assert [cells.format_count(v) for v in (77_900, 16_100_000, 380, 999_960, 1_234_567_890)] == \
        ["77.9k", "16.1M", "380", "1.0M", "1.2G"]
    assert [cells.paper_number(v) for v in ("10.2M", "0.38M", "77.9k", 17.69, "n/a", None)] == \
        [10.2e6, 0.38e6, 77_900, 17.69, None, None]
    assert cells.format_cell(stats.spread([9.52]), "ban/1", 9.0, None) == "9.52 (n=1) (9.0)"
    three = stats.spread([10.0, 11.0, 13.0])
    assert cells.format_cell(three, "ban/1", 20.0, False) == f"11.33 ± {three.half_width:.2f} (n=3) (20.0†)"
    assert cells.format_cell(stats.spread([77_900] * 3), "params", "77.9k", None) == "77.9k (77.9k)"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    plan, store, space = fabricate_run(tmp_path_factory.mktemp("stats"))
    argv = ["python", "-m", "ray_ban.sweep", str(space), "--seeds", "0-2"]
    table = write_results(plan, store, argv=argv)
    return plan, store, space, argv, table


def by_seed(plan, records, chain_name, pick):
    """Sweep seed -> final test error of the model ``pick(chain)`` of row A's chain, from results.parquet rows."""
    errors = {r["model_key"]: r["final_test_error"] for r in records}
    return {c.seed: errors[pick(c)] for c in plan.chains if c.name == chain_name}


def test_cells_parquet_summarises_each_cell_of_results_parquet_over_seeds(run):
    plan, store, *_ = run
    records = pq.read_table(store.path("results.parquet")).to_pylist()
    cell_rows = {r["column"]: r for r in pq.read_table(store.path("cells.parquet")).to_pylist()}
    assert set(cell_rows) == set(SPACE["columns"])
    expected = {"Teacher": by_seed(plan, records, "ban", lambda c: c.root.key),
                "BAN-1": by_seed(plan, records, "ban", lambda c: c.generations[0].key),
                "BAN-2": by_seed(plan, records, "ban", lambda c: c.generations[1].key),
                "Ens*2": by_seed(plan, records, "ban", lambda c: f"{c.chain_id}.ens2"),
                "IndEns*2": by_seed(plan, records, "ban", lambda c: f"{c.chain_id}.ind2"),
                "Baseline": by_seed(plan, records, "base", lambda c: c.root.key)}
    table_md = Path(store.path("table.md")).read_text()
    for column, values in expected.items():
        row = cell_rows[column]
        mean, sd = statistics.fmean(values.values()), statistics.stdev(values.values())
        half = T_975_DF2 * sd / math.sqrt(3)
        assert (row["row"], row["n"], row["seeds"]) == ("A", 3, [0, 1, 2])
        assert row["mean"] == pytest.approx(mean) and row["std"] == pytest.approx(sd)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
        paper = SPACE["rows"][0]["paper"].get(column)
        assert row["paper"] == paper and row["paper_in_ci"] == (None if paper is None else mean - half <= paper <= mean + half)
        assert f"{mean:.2f} ± {half:.2f} (n=3)" in table_md
    assert cell_rows["BAN-1"]["paper_in_ci"] is False and "(1.0†)" in table_md  # the paper's 1.0 lies far outside
    assert cell_rows["params"]["paper"] == 77_900 and cell_rows["params"]["paper_in_ci"] is None
    assert "| 77.9k (77.9k) |" in table_md and "0.00M" not in table_md


def test_comparisons_parquet_pairs_cells_seed_by_seed(run):
    plan, store, *_ = run
    records = pq.read_table(store.path("results.parquet")).to_pylist()
    rows = pq.read_table(store.path("comparisons.parquet")).to_pylist()
    pairs = {(r["a"], r["b"]) for r in rows}
    assert pairs == {("ban/1", "teacher"), ("ban/2", "ban/1"), ("ban/1", "base/0"), ("ban/2", "base/0"),
                     ("ban/ens2", "ban/ind2")}
    cell = {"teacher": lambda c: c.root.key, "ban/1": lambda c: c.generations[0].key, "ban/2": lambda c: c.generations[1].key,
            "ban/ens2": lambda c: f"{c.chain_id}.ens2", "ban/ind2": lambda c: f"{c.chain_id}.ind2"}
    for a, b in pairs:
        if b == "base/0":
            other = by_seed(plan, records, "base", lambda c: c.root.key)
        else:
            other = by_seed(plan, records, "ban", cell[b])
        ours = by_seed(plan, records, "ban", cell[a])
        differences = [ours[s] - other[s] for s in (0, 1, 2)]
        mean, sd = statistics.fmean(differences), statistics.stdev(differences)
        t = mean / (sd / math.sqrt(3))
        t_row = next(r for r in rows if (r["a"], r["b"], r["test"]) == (a, b, "paired_t"))
        w_row = next(r for r in rows if (r["a"], r["b"], r["test"]) == (a, b, "wilcoxon"))
        assert t_row["n"] == w_row["n"] == 3 and t_row["seeds"] == [0, 1, 2] and t_row["metric"] == "error"
        assert t_row["mean_diff"] == pytest.approx(mean) == w_row["mean_diff"]
        assert t_row["p_value"] == pytest.approx(two_sided_p_df2(t))
        assert t_row["ci_high"] - t_row["ci_low"] == pytest.approx(2 * T_975_DF2 * sd / math.sqrt(3))
        assert w_row["p_value"] == pytest.approx(exact_wilcoxon_p(differences)) and w_row["ci_low"] is None
    assert {r["comparison"] for r in rows if r["b"] == "ban/ind2"} == {cells.VS_INDEPENDENT}


def test_the_independent_ensemble_averages_other_seeds_label_only_models(run):
    plan, store, *_ = run
    records = {r["model_key"]: r for r in pq.read_table(store.path("results.parquet")).to_pylist()}
    for chain in (c for c in plan.chains if c.name == "ban"):
        row = records[f"{chain.chain_id}.ind2"]
        members = json.loads(row["config"])["members"]
        assert members == [t.key for t in chain.independent] and len(members) == 2
        member_rows = [records[k] for k in members]
        assert all(r["role"] == "independent" and r["loss"] == "label" and r["status"] == "ok" for r in member_rows)
        lineage = {t.seed for t in chain.trainings}
        seeds = {r["seed"] for r in member_rows}
        assert len(seeds) == 2 and not seeds & lineage  # fresh seeds, neither the teacher's nor a student's
        probabilities, labels = [], None
        for key in members:  # the prediction files themselves, read with pyarrow and averaged with numpy
            with pa.OSFile(store.prediction_path(key)) as source:
                stored = pa.ipc.open_file(source).read_all()
            logits = np.stack(stored.column("logits").to_numpy(zero_copy_only=False)).astype(np.float32)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities.append(shifted / shifted.sum(axis=1, keepdims=True))
            labels = stored.column("label").to_numpy()
        error = 100 * float(np.mean(np.mean(probabilities, axis=0).argmax(axis=1) != labels))
        assert row["final_test_error"] == pytest.approx(error, abs=1e-4)
        assert row["parameters"] == sum(r["parameters"] for r in member_rows)
        assert row["final_test_error"] != pytest.approx(records[f"{chain.chain_id}.ens2"]["final_test_error"])


def test_results_parquet_records_the_command_the_space_file_and_the_versions(run):
    plan, store, space, argv, _ = run
    for name in ("results.parquet", "cells.parquet", "comparisons.parquet"):
        metadata = pq.read_schema(store.path(name)).metadata
        assert json.loads(metadata[b"command"]) == argv
        assert metadata[b"space_sha256"].decode() == hashlib.sha256(space.read_bytes()).hexdigest()
        versions = json.loads(metadata[b"versions"])
        assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
        assert versions["ray"].startswith("2.60")
        assert versions["ray-ban"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    probe = ("import sys, ray_ban.results.tables, ray_ban.results.report; print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["False"], result.stderr  # versions without importing Ray


def test_the_command_defaults_to_the_drivers_argv(tmp_path):
    plan, store, _ = fabricate_run(tmp_path, {**SPACE, "seeds": [4]})
    table = write_results(plan, store)
    assert json.loads(table.schema.metadata[b"command"]) == sys.argv
    cell = {r["column"]: r for r in pq.read_table(store.path("cells.parquet")).to_pylist()}["BAN-1"]
    assert (cell["n"], cell["seeds"], cell["std"], cell["ci_low"], cell["paper_in_ci"]) == (1, [4], None, None, None)
    assert f"{cell['mean']:.2f} (n=1) (1.0)" in (tmp_path / "runs" / "stats" / "table.md").read_text()
    [line] = teacher_student_lines(plan, table)
    assert line.startswith("A: ban/1 - teacher = ") and "1 seed: no interval or test" in line


def test_the_terminal_line_pairs_each_student_with_its_teacher(run):
    plan, store, _, _, table = run
    [line] = teacher_student_lines(plan, table)
    t_row = next(r for r in pq.read_table(store.path("comparisons.parquet")).to_pylist()
                 if r["b"] == "teacher" and r["test"] == "paired_t")
    assert line.startswith(f"A: ban/1 - teacher = {t_row['mean_diff']:+.2f} points of test error over 3 seeds (95% CI ")
    assert f"paired t p = {t_row['p_value']:.3g}" in line and "Wilcoxon p = 0.25" in line
