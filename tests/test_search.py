"""Hyperparameter search over generation chains: specs, grids, and real searches on a local Ray runtime
(random sampling with ASHA stopping chains early; Optuna's TPE with its suggestions recorded)."""

import json
import math

import pyarrow.parquet as pq
import pytest
import yaml

from ray_ban.config import search as searching
from ray_ban.config import spaces
from ray_ban.orchestration.tuning import tune_space
from ray_ban.cli import sweep
from sweep_helpers import sweep_in_session

SPACE = {
    "name": "tune-banl", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "validation_size": 128,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "rows": [{"row": "W", "teacher": "wrn-10-1", "chains": {"banl": {"loss": "ban+l", "generations": 2}}}],
    "presets": {"small": {"resources": {"cpus_per_worker": 0.5}}},
}


def write(path, **changes):
    path.write_text(yaml.safe_dump({**SPACE, **changes}))
    return path


def run_main(capsys, *args):
    code = sweep.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    (["--search", "lr=loguniform:0:1"], "loguniform needs positive bounds"),
    (["--search", "lr=normal:0:1"], "unknown distribution 'normal'"),
    (["--search", "colour=choice:1,2"], "cannot be searched"),
    (["--search", "batch_size=uniform:32:64"], "whole number"),
    (["--search", "label_weight"], "write NAME=DISTRIBUTION"),
    (["--search", "lr=uniform:0.2:0.1"], "needs low < high"),
    (["--search", "lr=choice:0.1,-1"], "lr must be positive"),
    (["--search", "temperature=uniform:1:4"], "temperature"),  # ban+l takes no temperature
    (["--search", "label_weight=grid:0,1", "--search-alg", "optuna"], "Optuna cannot search a grid"),
    (["--search", "lr=uniform:0.01:0.1", "--search-alg", "grid"], "needs grid: values"),
    (["--search", "lr=uniform:0.01:0.1", "--scheduler", "pbt"], "'pbt' is not known"),
    (["--search", "lr=uniform:0.01:0.1", "--num-samples", "0"], "num_samples: must be a positive integer"),
])
def test_bad_search_specs_are_one_line_errors(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    code, _, err = run_main(capsys, write(tmp_path / "s.yaml"), "--out", out, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_search_must_select_on_validation_never_on_test(tmp_path, capsys):
    code, _, err = run_main(capsys, write(tmp_path / "s.yaml", search={"space": {"lr": "uniform:0.01:0.1"}, "metric": "test_error"}))
    assert code == 2 and "selection never uses test data" in err
    no_validation = {k: v for k, v in SPACE.items() if k != "validation_size"}
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(no_validation))
    code, _, err = run_main(capsys, tmp_path / "n.yaml", "--search", "lr=uniform:0.01:0.1")
    assert code == 2 and "set validation_size" in err
    two_rows = {**SPACE, "rows": SPACE["rows"] + [{**SPACE["rows"][0], "row": "V"}]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two_rows))
    code, _, err = run_main(capsys, tmp_path / "two.yaml", "--search", "lr=uniform:0.01:0.1")
    assert code == 2 and "tunes exactly one distilled chain" in err


def test_a_grid_over_label_weights_expands_to_the_expected_chains(tmp_path, capsys):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space = write(tmp_path / "s.yaml")
    code, out, err = run_main(capsys, space, "--search", "label_weight=grid:0,0.5,1", "--num-samples", "2", "--dry-run")
    assert code == 0, err
    assert "search: 6 chains (random search" in out
    # Tune's own generator, fed the same space, creates exactly those trials
    plan = spaces.load(str(space))
    search = searching.parse_search({"space": {"label_weight": "grid:0,0.5,1"}, "num_samples": 2}, str(space),
                                    plan.chains[0], plan.recipe)
    generator = BasicVariantGenerator(random_state=0)
    generator.add_configurations({"search": {"run": lambda config: None, "config": tune_space(search),
                                             "num_samples": search.num_samples}})
    trials = []
    while (trial := generator.next_trial()) is not None:
        trials.append(trial)
    assert sorted(t.config["label_weight"] for t in trials) == [0, 0, 0.5, 0.5, 1, 1]
    chains = {searching.apply_hparams(plan, plan.chains[0], t.config)[0].generations[-1].key for t in trials}
    assert len(chains) == 3  # the same values make the same models: a repeated grid point is trained once


def test_applied_values_rebuild_the_students_and_keep_the_teacher(tmp_path):
    plan = spaces.load(str(write(tmp_path / "s.yaml")))
    template = plan.chains[0]
    chain, recipe = searching.apply_hparams(plan, template, {"lr": 0.2, "label_weight": 0.25, "generations": 3,
                                                             "dropout": 0.1})
    assert recipe.lr == 0.2 and chain.root == template.root
    assert [t.generation for t in chain.generations] == [1, 2, 3] and list(chain.ensembles) == ["ens2", "ens3"]
    assert all(t.loss_params == {"label_weight": 0.25} and t.model_kwargs == {"dropout": 0.1} for t in chain.generations)
    assert chain.generations[0].teacher_key == template.root.key
    assert {t.key for t in chain.generations}.isdisjoint(t.key for t in template.generations)


def _search_rows(run):
    rows = pq.read_table(run / "results.parquet").to_pylist()
    by_trial = {}
    for r in rows:
        if r["trial"]:
            by_trial.setdefault(r["trial"], []).append(r)
    return rows, by_trial


def test_random_search_with_asha_stops_poor_chains_early(tmp_path, shared_ray):
    space = write(tmp_path / "s.yaml", recipe={**SPACE["recipe"], "epochs": 2},
                  search={"space": {"lr": "loguniform:0.01:0.5"}, "num_samples": 4, "scheduler": "asha",
                          "grace_period": 1, "reduction_factor": 2})
    # One trial at a time: ASHA's decisions then depend only on the seeded values (0.12, 0.029, 0.012,
    # 0.011), not on timing; the range is one where the step size shows within the first epochs. A whole
    # CPU per worker: on two cores, two stopped chains whose placement groups leaked would hang the third.
    result = sweep_in_session(shared_ray, space, tmp_path / "runs", "--preset", "small", "--max-concurrent", "1", "--cpus-per-worker", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "tune-banl"
    rows, by_trial = _search_rows(run)
    assert len(by_trial) == 4
    teacher = [r for r in rows if r["role"] == "teacher"]
    assert len(teacher) == 1 and teacher[0]["status"] == "ok"  # trained once, shared by every trial
    stopped = {t: rs for t, rs in by_trial.items() if rs[0]["stopped"]}
    complete = {t: rs for t, rs in by_trial.items() if not rs[0]["stopped"]}
    assert stopped and complete, {t: rs[0]["stopped"] for t, rs in by_trial.items()}
    for rs in stopped.values():
        assert rs[0]["stopped_at"] < 2 * 2 + 1  # before the last of epochs x generations reports (+ the final)
    # A chain stopped at its first report is really stopped: Tune ends its actor, the placement group is
    # released, and its second generation (three epochs later) is never trained.
    first_report = [rs for rs in stopped.values() if rs[0]["stopped_at"] == 1]
    assert first_report, {t: rs[0]["stopped_at"] for t, rs in stopped.items()}
    for rs in first_report:
        assert [r["status"] for r in rs if r["role"] == "student" and r["generation"] == 2] == ["stopped"]
    for rs in complete.values():
        assert all(r["status"] == "ok" for r in rs) and len([r for r in rs if r["role"] == "student"]) == 2
    values = [json.loads(rs[0]["hparams"])["lr"] for rs in by_trial.values()]
    assert len(set(values)) == 4 and all(0.01 <= v <= 0.5 for v in values)
    # selection: the complete trial with the lowest final validation error; its test error is reported apart
    final_val = {t: max((r for r in rs if r["role"] == "student"), key=lambda r: r["generation"])["val_error"]
                 for t, rs in complete.items()}
    best = min(final_val, key=final_val.get)
    assert {t for t, rs in by_trial.items() if rs[0]["selected"]} == {best}
    assert "(selected on validation); its test error" in result.stdout
    chosen = json.loads(by_trial[best][0]["hparams"])
    rerun = spaces.load(str(run / "best.yaml"), "small")
    assert not rerun.search and math.isclose(rerun.recipe.lr, chosen["lr"])
    assert (run / "tensorboard" / "W" / "banl-s0" / best / "gen2").is_dir()
    assert "## Search trials" in (run / "report.md").read_text()


def test_optuna_search_records_its_suggestions(tmp_path, shared_ray):
    from ray.tune.search.optuna import OptunaSearch

    space = write(tmp_path / "s.yaml", rows=[{"row": "W", "teacher": "wrn-10-1",
                                              "chains": {"banl": {"loss": "ban+l", "generations": 1}}}],
                  search={"space": {"label_weight": "uniform:0:1", "lr": "loguniform:0.01:0.1"}, "num_samples": 2,
                          "search_alg": "optuna"})
    result = sweep_in_session(shared_ray, space, tmp_path / "runs", "--preset", "small", "--max-concurrent", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "tune-banl"
    _, by_trial = _search_rows(run)
    recorded = sorted((round(h["label_weight"], 12), round(h["lr"], 12))
                      for h in (json.loads(rs[0]["hparams"]) for rs in by_trial.values()))
    # Tune saved the Optuna searcher's state: its study holds exactly the suggestions the results record
    state = sorted((run / "ray" / "search").glob("searcher-state-*.pkl"))
    assert state, list((run / "ray" / "search").iterdir())
    searcher = OptunaSearch()
    searcher.restore(str(state[-1]))
    suggested = sorted((round(t.params["label_weight"], 12), round(t.params["lr"], 12)) for t in searcher._ot_study.trials)
    assert suggested == recorded and len(recorded) == 2
    for rs in by_trial.values():
        student = next(r for r in rs if r["role"] == "student")
        assert student["status"] == "ok" and json.loads(student["config"])["recipe"]["lr"] == json.loads(rs[0]["hparams"])["lr"]
