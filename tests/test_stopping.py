"""Chains that stop by themselves: ``generations: {max, patience, metric}`` ends a chain once a generation
fails to improve the validation metric, in plain PyTorch (``core.generations.run_chain``) and through a sweep."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from ray_ban.config import spaces
from ray_ban.config.spaces import SpaceError
from ray_ban.core.generations import prepare_data, run_chain, should_stop
from ray_ban.results.tables import write_results
from ray_ban.store import RunStore
from sweep_helpers import sweep_in_session

ABSENT = 9  # a class no training image has: every model misses every validation image


def space(chains: dict, validation_size: int | None = 128) -> dict:
    raw = {"name": "stops", "dataset": "synthetic", "train_subset": 512, "test_subset": 100,
           "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05, "eval_batch_size": 100},
           "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
           "rows": [{"row": "r", "teacher": "wrn-10-1", "chains": chains}]}
    if validation_size is not None:
        raw["validation_size"] = validation_size
    return raw


def test_the_mapping_form_parses_and_trains_the_int_forms_models():
    fixed = spaces.expand(space({"ban": {"loss": "ban", "generations": 3}}), "s.yaml")
    stopping = spaces.expand(space({"ban": {"loss": "ban", "generations": {"max": 3, "patience": 1}}}), "s.yaml")
    assert [t.key for t in stopping.chains[0].trainings] == [t.key for t in fixed.chains[0].trainings]
    assert stopping.chains[0].stopping == {"patience": 1, "metric": "val_error"} and fixed.chains[0].stopping == {}
    capped = spaces.expand(space({"ban": {"loss": "ban", "generations": {"max": 3}}}), "s.yaml", overrides={"generations": 5})
    assert len(capped.chains[0].generations) == 5 and capped.chains[0].stopping["patience"] == 1
    assert spaces.SweepPlan.from_dict(json.loads(json.dumps(stopping.to_dict()))).chains[0].stopping == {
        "patience": 1, "metric": "val_error"}


@pytest.mark.parametrize("generations, validation, message", [
    ({"max": 3}, None, "stops on a validation metric, and this plan holds out no validation split; set validation_size"),
    ({"max": 3, "metric": "test_error"}, 128, "generations.metric: must be one of 'val_error' or 'val_perplexity', got 'test_error'"),
    ({"max": 0}, 128, "generations.max: must be at least 1, got 0"),
    ({"max": 2, "patience": 0}, 128, "generations.patience: must be at least 1, got 0"),
    ({"max": 2, "patients": 1}, 128, "generations.patients: unknown key; did you mean 'patience'?"),
])
def test_bad_stopping_specs_are_one_line_errors(generations, validation, message):
    with pytest.raises(SpaceError) as error:
        spaces.expand(space({"ban": {"loss": "ban", "generations": generations}}, validation), "s.yaml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_should_stop_counts_generations_without_improvement_on_the_best_before():
    assert not should_stop([10.0], 1)
    assert should_stop([10.0, 10.0], 1)  # equal is no improvement
    assert not should_stop([10.0, 9.0], 1)
    assert not should_stop([10.0, 11.0], 2) and should_stop([10.0, 11.0, 10.5], 2)
    assert not should_stop([10.0, 11.0, 9.5], 2)  # the second of two improved on the best before them
    assert should_stop([10.0, 9.0, 9.5], 1) and not should_stop([12.0, 9.0, 9.5, 8.0], 2)


def crafted(plan):
    """The plan's data with a validation split no model can get right: its labels are a class absent from train."""
    data = prepare_data(plan.data_config())
    return dataclasses.replace(data, train_labels=data.train_labels.clamp(max=ABSENT - 1),
                               val_labels=torch.full_like(data.val_labels, ABSENT))


def run(plan, store) -> None:
    chain = plan.chains[0]
    data = crafted(plan)
    for keys in ([chain.root], list(chain.generations)):  # as the sweep does: the teacher, then the chain
        assert run_chain(keys, {chain.root.key: chain.root}, plan.recipe_for(chain), data, store,
                         device=torch.device("cpu"), stopping=chain.stopping or None) is None


def test_a_chain_stops_after_a_generation_that_does_not_improve_on_its_teacher(tmp_path):
    plan = spaces.expand(space({"ban": {"loss": "ban", "generations": {"max": 3, "patience": 1}, "ensembles": {
        "ens2": [1, 2], "ens3": [0, 1, 3]}}}), "s.yaml")
    store = RunStore(tmp_path / "run")
    run(plan, store)
    chain = plan.chains[0]
    assert store.summary(chain.root.key)["val_error"] == 100.0
    assert store.summary(chain.generations[0].key)["val_error"] == 100.0
    assert [store.is_done(t.key) for t in chain.generations] == [True, False, False]
    assert store.skipped(chain.generations[1].key)["after_generation"] == 1

    rows = {(r["role"], r["generation"], r["chain"]): r for r in write_results(plan, store).to_pylist()}
    assert [rows[("student", g, "ban")]["status"] for g in (1, 2, 3)] == ["ok", "skipped", "skipped"]
    assert "stopped after generation 1" in rows[("student", 2, "ban")]["message"]
    assert {(rows[("student", g, "ban")]["generations_run"], rows[("student", g, "ban")]["stop_reason"])
            for g in (1, 2, 3)} == {(1, "no_improvement")}
    # ensembles use the generations that exist: ens3 is the teacher and BAN-1; ens2 has one member left
    assert rows[("ensemble", 1, "ban/ens3")]["status"] == "ok" and rows[("ensemble", 1, "ban/ens3")]["members"] == [0, 1]
    assert rows[("ensemble", 1, "ban/ens2")]["status"] == "skipped"

    run(plan, store)  # a rerun (a resumed sweep) decides the same from the stored summaries and trains nothing
    assert [store.is_done(t.key) for t in chain.generations] == [True, False, False]


def test_a_chain_whose_patience_outlasts_it_runs_to_max(tmp_path):
    plan = spaces.expand(space({"ban": {"loss": "ban", "generations": {"max": 2, "patience": 2}}}), "s.yaml")
    store = RunStore(tmp_path / "run")
    run(plan, store)
    assert all(store.is_done(t.key) for t in plan.chains[0].generations)
    students = [r for r in write_results(plan, store).to_pylist() if r["role"] == "student"]
    assert {(r["status"], r["generations_run"], r["stop_reason"]) for r in students} == {("ok", 2, "max_generations")}


def crafted_parquet(folder, plan_validation: int, train: int = 512, test: int = 100) -> None:
    """A Hub-style Parquet dataset whose validation rows (the ones ``with_validation(seed=0)`` holds out) are
    labelled with a class no other training image has."""
    from torchvision.io import encode_png

    from ray_ban.data import synthetic

    data = synthetic(10, train, test, seed=3)
    held = torch.randperm(train, generator=torch.Generator().manual_seed(0))[:plan_validation]
    train_labels = data.train_labels.clamp(max=ABSENT - 1)
    train_labels[held] = ABSENT
    features = {"img": {"_type": "Image"}, "label": {"names": [f"c{i}" for i in range(10)], "_type": "ClassLabel"}}
    for split, images, labels in (("train", data.train_images, train_labels), ("test", data.test_images, data.test_labels)):
        blobs = [encode_png(image).numpy().tobytes() for image in images]
        img = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), pa.array([None] * len(blobs), pa.string())],
                                         names=["bytes", "path"])
        table = pa.table({"img": img, "label": pa.array(np.asarray(labels), pa.int64())})
        pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}),
                       folder / f"{split}.parquet")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision's PNG encoder, used to write the dataset
def test_a_sweep_reports_how_far_each_chain_ran_and_why_it_stopped(tmp_path, shared_ray):
    """Through Ray: one teacher, a chain that stops after generation 1 and one that runs to its max."""
    (tmp_path / "data").mkdir()
    crafted_parquet(tmp_path / "data", 128)
    raw = space({"stops": {"loss": "ban", "generations": {"max": 3, "patience": 1}},
                 "full": {"loss": "ban", "generations": {"max": 2, "patience": 2}}})
    raw.update(dataset=f"parquet:{tmp_path / 'data'}", columns={"Teacher": "teacher", "Stops": "stops/1",
                                                                 "Full": "full/2"})
    raw.pop("train_subset"), raw.pop("test_subset")
    path = tmp_path / "stops.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = sweep_in_session(shared_ray, path, tmp_path / "runs", "--cpus-per-worker", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[r.stops.seed0] finished: stopped after generation 1 of 3, val_error did not improve" in result.stdout
    assert "[r.full.seed0] finished\n" in result.stdout
    rows = pq.read_table(tmp_path / "runs" / "stops" / "results.parquet").to_pylist()
    students = {(r["chain"], r["generation"]): r for r in rows if r["role"] == "student"}
    assert [students[("stops", g)]["status"] for g in (1, 2, 3)] == ["ok", "skipped", "skipped"]
    assert [students[("full", g)]["status"] for g in (1, 2)] == ["ok", "ok"]
    assert {students[("stops", g)]["stop_reason"] for g in (1, 2, 3)} == {"no_improvement"}
    assert {students[("full", g)]["generations_run"] for g in (1, 2)} == {2}
    ensembles = {r["chain"]: r for r in rows if r["role"] == "ensemble"}
    assert ensembles["full/ens2"]["status"] == "ok" and ensembles["stops/ens3"]["status"] == "skipped"


def test_a_search_refuses_a_chain_that_stops_by_itself(tmp_path, capsys):
    from ray_ban.cli import sweep

    raw = space({"ban": {"loss": "ban+l", "generations": {"max": 3}}})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert sweep.main([str(path), "--search", "label_weight=uniform:0:1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a search trains a fixed number of generations per trial" in err
