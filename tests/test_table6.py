"""Table 6 through the same chains: language models on a real local Ray runtime, with perplexities in
results.parquet, the ensemble's from stored token probabilities, TensorBoard and the report."""

import math

import pyarrow.parquet as pq
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_ban.core import metrics
from ray_ban.store import RunStore
from sweep_helpers import ROOT, sweep_in_session


@pytest.fixture(scope="module")
def table6(tmp_path_factory, shared_ray):
    out = tmp_path_factory.mktemp("table6") / "runs"
    result = sweep_in_session(shared_ray, ROOT / "search_spaces" / "table6.yaml", out, "--preset", "smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "table6", result


def test_smoke_table6_holds_perplexities_for_teacher_generations_and_ensemble(table6):
    run, result = table6
    rows = pq.read_table(run / "results.parquet").to_pylist()
    for row in ("ConvLSTM", "LSTM"):
        mine = sorted((r for r in rows if r["row"] == row), key=lambda r: (r["role"], r["generation"]))
        assert [(r["role"], r["generation"]) for r in mine] == [("ensemble", 2), ("student", 1), ("student", 2),
                                                               ("teacher", 0)]
        assert all(r["status"] == "ok" and r["test_perplexity"] > 1 for r in mine)
        for r in mine:
            if r["role"] != "ensemble":
                # perplexity is exp of the mean token loss; and the model beat a uniform guess over 2,000 words
                assert r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"]), rel=1e-6)
                assert r["test_perplexity"] < 2000 and r["val_perplexity"] is not None
        students = [r for r in mine if r["role"] == "student"]
        assert all(r["loss"] == "ban+l" and r["agreement"] is not None for r in students)
    assert "| ConvLSTM |" in (run / "table.md").read_text() and "(76.97)" in (run / "table.md").read_text()
    assert "[LSTM.ban_l.seed0] gen 2/2 epoch 1/1" in result.stdout and "test perplexity" in result.stdout


def test_the_ensemble_averages_its_members_token_probabilities(table6):
    run, _ = table6
    rows = pq.read_table(run / "results.parquet").to_pylist()
    store = RunStore(run)
    ensemble = next(r for r in rows if r["row"] == "LSTM" and r["role"] == "ensemble")
    members = sorted((r for r in rows if r["row"] == "LSTM" and r["role"] == "student"), key=lambda r: r["generation"])
    probs = [torch.tensor(store.prediction_table(m["model_key"]).column("target_logprob").to_numpy()).double().exp()
             for m in members]
    expected = math.exp(-torch.stack(probs).mean(0).log().mean().item())
    assert ensemble["test_perplexity"] == pytest.approx(expected, rel=1e-9)
    # averaging probabilities never does worse than the members' mean log-loss (Jensen)
    assert ensemble["test_loss"] <= sum(math.log(m["test_perplexity"]) for m in members) / 2 + 1e-9
    labels = store.prediction_table(members[0]["model_key"]).column("label").to_numpy()
    assert len(labels) == len(probs[0]) and metrics.perplexity(-probs[0].log().mean().item()) == pytest.approx(
        members[0]["test_perplexity"], rel=1e-5)


def test_tensorboard_and_report_show_perplexity(table6):
    run, _ = table6
    accumulator = EventAccumulator(str(run / "tensorboard" / "LSTM" / "ban+l-s0" / "gen1"))
    accumulator.Reload()
    assert {"test/perplexity", "val/perplexity", "test/error", "train/loss"} <= set(accumulator.Tags()["scalars"])
    ensemble = EventAccumulator(str(run / "tensorboard" / "LSTM" / "ban+l-s0" / "ens2"))
    ensemble.Reload()
    assert "test/perplexity" in ensemble.Tags()["scalars"]
    report = (run / "report.md").read_text()
    assert "test perplexity" in report and (run / "error_by_generation.png").stat().st_size > 0
