"""The sweep CLI without training: validation, dry runs and bad input (exit 2, one line, nothing written)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_ban.config import spaces
from ray_ban.config.options import SweepOptions
from sweep_helpers import cli_in_process

ROOT = Path(__file__).resolve().parents[1]


def sweep(*args, cwd=None):
    """``python -m ray_ban.sweep ARGS`` run in this process (no training happens in these tests): exit code,
    stdout, stderr."""
    return cli_in_process(*args, cwd=cwd)


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4", "table5"])
def test_every_paper_table_expands_with_its_paper_numbers(table):
    plan = spaces.load(table)
    raw = yaml.safe_load((spaces.SPACES_DIR / f"{table}.yaml").read_text())
    assert list(plan.paper) == [row["row"] for row in raw["rows"]]
    assert all(plan.paper[row] for row in plan.paper)
    smoke = spaces.load(table, "smoke")
    assert smoke.dataset.startswith("synthetic") and smoke.recipe.epochs <= 2
    assert {c.row for c in smoke.chains} == set(plan.paper)  # the smoke preset runs every row


def test_shared_teachers_are_planned_once():
    plan = spaces.load("table5")
    teachers = [t for t in plan.roots() if t.role == "teacher"]
    assert len(teachers) == 1 and teachers[0].architecture == "densenet-90-60"
    table2 = spaces.load("table2")
    row = [c for c in table2.chains if c.row == "DenseNet-90-60"]
    assert len({c.root.key for c in row}) == 1 and len(row) == 5
    ban = next(c for c in row if c.name == "ban")
    assert [t.teacher_key for t in ban.generations] == [ban.root.key, ban.generations[0].key, ban.generations[1].key]
    assert ban.ensembles == {"ens2": [1, 2], "ens3": [1, 2, 3]}
    single = next(c for c in row if c.name == "ban_single")
    assert single.generations[0].seed != ban.generations[0].seed  # BAN and BAN-1 differ only by seed


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    code, out, err = sweep("table5", "--preset", "smoke", "--dry-run", "--out", tmp_path / "runs")
    assert code == 0, err
    assert "13 chains; 8 generation-0 models" in out and "ban-wrn-2-1" in out
    assert not (tmp_path / "runs").exists()


def test_list_names_the_tables():
    code, out, _ = sweep("--list")
    names = out.split()
    assert code == 0 and names == sorted(names)
    assert {"table1", "table2", "table3", "table4", "table5", "cifar10-cpu"} <= set(names)


def write_space(path: Path, **changes) -> Path:
    raw = {
        "name": "mine", "dataset": "synthetic", "seeds": [0],
        "recipe": {"epochs": 1, "batch_size": 64},
        "columns": {"Teacher": "teacher", "BAN": "ban/1"},
        "rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}},
                  "paper": {"Teacher": 5.0, "BAN": 4.0}}],
    }
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


BAD_INPUTS = [
    ("unknown table", ["tabel5"], "unknown table 'tabel5' (did you mean table5"),
    ("missing file", ["nope/space.yaml"], "no such search-space file"),
    ("malformed yaml", "rows: [\n  - {row: r1,", "line"),
    ("unknown architecture", {"rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"student": "wrn-10-l"}}}]}, "wrn-10-1"),
    ("unknown loss", {"rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "bann"}}}]}, "unknown loss 'bann' (did you mean ban?)"),
    ("zero epochs", {"recipe": {"epochs": 0}}, "epochs must be a positive integer"),
    ("nesterov without momentum", {"recipe": {"epochs": 1, "batch_size": 64, "momentum": 0}}, "nesterov needs momentum > 0"),
    ("zero generations", {"rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"generations": 0}}}]}, "generations: must be a positive integer"),
    ("negative seed", {"seeds": [-1]}, "seeds: must be a non-empty list of non-negative integers"),
    ("unknown key", {"recipee": {}}, "did you mean 'recipe'"),
    ("unformable pair", {"rows": [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"student": "ban-wrn-1-1"}}}]}, "cannot inherit from teacher"),
    ("missing dataset", {"dataset": "cifar100"}, "cifar100 not found under"),
    ("missing parquet", {"dataset": "parquet:/nonexistent"}, "/nonexistent does not exist; point parquet: at a folder"),
]


@pytest.mark.parametrize("label,content,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_exit_2_and_one_line(tmp_path, label, content, expected):
    if isinstance(content, list):
        args = content
    else:
        path = tmp_path / "space.yaml"
        if isinstance(content, str):
            path.write_text(content)
        else:
            write_space(path, **content)
        args = [path]
    code, out, err = sweep(*args, "--out", tmp_path / "runs", "--data-root", tmp_path)
    assert code == 2, (out, err)
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_bad_command_line_values(tmp_path):
    space = write_space(tmp_path / "space.yaml")
    for args, expected in [(["--generations", "0"], "--generations must be a positive integer"),
                           (["--seeds", "a,b"], "--seeds must be comma-separated integers"),
                           (["--seeds", "4-2"], "the range '4-2' runs backwards; write 2-4"),
                           (["--seeds", "0-2,1"], "seed 1 is given twice"),
                           (["--workers", "0"], "--workers must be positive"),
                           (["--workers", "2", "--gpus-per-worker", "0.5"], "which NCCL refuses"),
                           (["--gpus-per-worker", "1.5"], "a worker uses one device"),
                           (["--gpus-per-worker", "many"], "--gpus-per-worker takes auto or a number"),
                           (["--max-failures", "-2"], "--max-failures must be -1 (unlimited)")]:
        code, _, err = sweep(space, *args, "--out", tmp_path / "runs")
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "runs").exists()  # refused before anything is written
    # unlimited retries and GPU sizing from the cluster are accepted options
    code, out, err = sweep(space, "--max-failures", "-1", "--gpus-per-worker", "auto", "--workers", "2", "--dry-run")
    assert code == 0, err


def test_existing_results_are_never_overwritten_without_consent(tmp_path):
    space = write_space(tmp_path / "space.yaml")
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    (run / "sweep.json").write_text('{"identity": {"name": "other", "preset": "paper"}}')
    (run / "results.parquet").write_bytes(b"precious")
    code, _, err = sweep(space, "--out", tmp_path / "runs")
    assert code == 2 and "already holds another sweep (other" in err and "--overwrite" in err
    code, _, err = sweep(space, "--out", tmp_path / "runs", "--resume")
    assert code == 2 and "only continues the same sweep" in err
    assert (run / "results.parquet").read_bytes() == b"precious"
    unwritable = tmp_path / "ro"
    unwritable.write_text("a file, not a folder")
    code, _, err = sweep(space, "--out", unwritable)
    assert code == 2 and "choose a writable --out" in err


def test_a_chains_trial_and_controller_code_does_not_import_torch():
    # Every chain starts a Tune trial actor and a Train controller as fresh processes; importing torch
    # there cost each about 2.7 s of CPU per chain (benchmarks/import_costs.py). Only the workers' module may import it.
    probe = ("import sys, ray_ban.orchestration.chain, ray_ban.orchestration.placement, ray_ban.store; "
             "print('torch' in sys.modules); import ray_ban.orchestration.chain_worker; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_seed_ranges_on_the_command_line_replace_the_files_seeds(tmp_path):
    space = write_space(tmp_path / "space.yaml", seeds=2)
    code, out, err = sweep(space, "--seeds", "0-2,7", "--dry-run")
    assert code == 0, err
    assert "seeds [0, 1, 2, 7]" in out and "4 chains" in out and "r1.ban.seed7" in out


def test_seeds_in_a_space_file_are_a_list_a_count_or_ranges(tmp_path):
    for given, expected in [(5, (0, 1, 2, 3, 4)), ("0-2,7", (0, 1, 2, 7)), ([3, 1], (3, 1))]:
        plan = spaces.load(str(write_space(tmp_path / "space.yaml", seeds=given)))
        assert plan.seeds == expected and sorted(c.seed for c in plan.chains) == sorted(expected)
    space = write_space(tmp_path / "preset.yaml", presets={"more": {"seeds": 3}})
    assert spaces.load(str(space), "more").seeds == (0, 1, 2)
    assert spaces.load(str(space), "more", {"seeds": [7]}).seeds == (7,)  # the command line wins


@pytest.mark.parametrize("seeds,expected", [(0, "seeds: a count of seeds must be at least 1"),
                                            ("3-1", "seeds: the range '3-1' runs backwards"),
                                            ([0, 0], "seeds: lists a seed twice"), ("0,x", "seeds: 'x' is neither"),
                                            (True, "seeds: must be a non-empty list"), ([], "seeds: must be a non-empty list")])
def test_bad_seeds_in_a_space_file_are_one_line(tmp_path, seeds, expected):
    with pytest.raises(spaces.SpaceError) as error:
        spaces.load(str(write_space(tmp_path / "space.yaml", seeds=seeds)))
    assert expected in str(error.value) and "\n" not in str(error.value)


INDEPENDENT = {"columns": {"Teacher": "teacher", "Ens*2": "ban/ens2", "IndEns*2": "ban/ind2"},
               "rows": [{"row": "r1", "teacher": "wrn-10-1", "paper": {},
                         "chains": {"ban": {"loss": "ban", "generations": 2, "independent": 2},
                                    "banl": {"loss": "ban+l", "independent": 2}}}]}


def test_independent_models_are_generation_0_roots_trained_once_each(tmp_path):
    from ray_ban.cli import sweep as cli
    from ray_ban.orchestration.sweep import trial_config
    from ray_ban.results.tensorboard_runs import plan_runs

    space = write_space(tmp_path / "space.yaml", seeds=2, **INDEPENDENT)
    code, out, err = sweep(space, "--dry-run")
    # per seed: one teacher and two independent models, which ban and banl (the same student) share
    assert code == 0 and "6 generation-0 models" in out and "; 2 independent [label]" in out, err
    args = SweepOptions(table=str(space))
    plan = cli.plan_from_args(args)
    independent = [t for t in plan.roots() if t.role == "independent"]
    assert len(independent) == 4 and all((t.loss, t.generation, t.architecture, t.teacher_key) == ("label", 0, "wrn-10-1", None)
                                         for t in independent)
    lineage = {t.seed for c in plan.chains for t in c.trainings}
    assert len({t.seed for t in independent}) == 4 and not {t.seed for t in independent} & lineage
    runs = plan_runs(plan)
    assert runs[independent[0].key]["run"] == "r1/ban-s0/independent0" and runs[independent[0].key]["hparams"]["role"] == "independent"
    for training in plan.roots():  # what the generation-0 phase builds for each root: a trial with its own board run
        config = trial_config(plan, f"gen0.{training.key}", [training], [], str(tmp_path), args, "test_error", runs)
        assert config["board"]["runs"][training.key] == runs[training.key] and config["teachers"] == []


@pytest.mark.parametrize("change,expected", [
    ({"independent": 1}, "independent: must be the size of an ensemble (2 or more"),
    ({"independent": "3"}, "rows[0].chains.ban.independent: must be an integer, got '3'; e.g. independent: 3"),
    ({"baseline": True, "loss": "label", "independent": 2}, "a baseline has no ensemble to partner"),
])
def test_bad_independent_options_are_one_line(tmp_path, change, expected):
    rows = [{"row": "r1", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", **change}}}]
    with pytest.raises(spaces.SpaceError) as error:
        spaces.load(str(write_space(tmp_path / "space.yaml", columns={"Teacher": "teacher"}, rows=rows)))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_an_independent_ensemble_cell_needs_that_many_models(tmp_path):
    space = write_space(tmp_path / "space.yaml", **{**INDEPENDENT, "columns": {"IndEns*3": "ban/ind3"}})
    with pytest.raises(spaces.SpaceError, match=r"asks for an ensemble of independent models .* \(2 independent\)"):
        spaces.load(str(space))


def test_a_sweeps_identity_is_its_content_never_its_path(tmp_path):
    from ray_ban.config import spaces
    from ray_ban.results.run_folder import sweep_identity

    original = spaces.load("table1", "smoke")
    copy = tmp_path / "upload-folder" / "table1.yaml"  # as ray job submit's per-upload working dir
    copy.parent.mkdir()
    copy.write_text(spaces.resolve("table1").read_text() + "\n# a comment changes nothing that trains\n")
    assert sweep_identity(spaces.load(str(copy), "smoke")) == sweep_identity(original)
    assert str(tmp_path) not in json.dumps(sweep_identity(original))
    more_epochs = spaces.load(str(copy), "smoke", {"generations": 3})
    assert sweep_identity(more_epochs)["content_sha256"] != sweep_identity(original)["content_sha256"]


def test_a_storage_uri_is_never_told_to_overwrite(tmp_path):
    from ray_ban.config import spaces
    from ray_ban.store import RunStore
    from ray_ban.errors import UsageError
    from ray_ban.results.run_folder import prepare_run_dir

    store = RunStore(f"file://{tmp_path}/bucket/table1")  # a URI: the hint must not delete a bucket's sweep
    store.remote = True
    prepare_run_dir(store, spaces.load("table1", "smoke"), resume=False, overwrite=False)
    with pytest.raises(UsageError) as refused:
        prepare_run_dir(store, spaces.load("table1", "smoke", {"generations": 3}), resume=False, overwrite=False)
    assert "--overwrite" not in str(refused.value) and "choose another --out" in str(refused.value)


def test_the_demo_space_loads_and_its_dry_run_passes(tmp_path):
    plan = spaces.load(str(ROOT / "search_spaces" / "demo.yaml"))
    assert plan.dataset == "synthetic-siblings" and plan.seeds == (0, 1, 2, 3) and plan.recipe.epochs == 30
    assert {c.root.architecture for c in plan.chains} == {"resnet9-8"} and plan.chains[0].ensembles == {"ens2": [0, 1]}
    code, out, err = sweep("search_spaces/demo.yaml", "--dry-run", "--out", tmp_path / "runs")
    assert code == 0, err
    assert "4 chains; 4 generation-0 models" in out and "8 trainings" in out
    assert not (tmp_path / "runs").exists()


def test_the_cpu_proof_space_names_the_fast_family_and_its_reference(tmp_path):
    proof = spaces.load(str(ROOT / "search_spaces" / "cifar10-resnet9.yaml"))
    assert proof.seeds == (0, 1, 2) and proof.recipe.schedule == "onecycle-cosine"
    assert {c.name for c in proof.chains} == {"ban", "banl"} and proof.reference == "paper"
    assert spaces.load("cifar10-cpu").reference.startswith("reference run")
    space = tmp_path / "s.yaml"
    space.write_text((ROOT / "search_spaces" / "demo.yaml").read_text() + "reference: ''\n")
    code, _, err = sweep(space, "--dry-run")
    assert code == 2 and "reference" in err and len(err.strip().splitlines()) == 1
