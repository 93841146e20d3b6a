"""Faults and bad input with real processes: a Train worker of a data-parallel chain SIGKILLed
mid-generation, a NaN chain, and randomly broken search-space files (hypothesis). A whole sweep
SIGKILLed and resumed from its object storage is in test_storage.py."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ray_ban.cli import sweep
from sweep_helpers import cli_in_process, run_sweep

CHAIN = {
    "name": "faults", "dataset": "synthetic", "seeds": [0], "train_subset": 512, "test_subset": 200,
    "recipe": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1", "BAN-2": "ban/2", "Ens*2": "ban/ens2"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 2}},
              "paper": {"Teacher": 10.0}}],
}


def test_faults_in_a_data_parallel_chain(tmp_path):
    """One sweep, three faults: rank 1 of a two-worker chain SIGKILLs itself after generation 1's first
    epoch (restarted, resumed from the checkpoint), the ranks must still train disjoint shards and end
    identical, and a chain whose loss turns NaN fails alone, at once, without retries."""
    space = dict(CHAIN, rows=[{"row": "A", "teacher": "wrn-10-1", "paper": {"Teacher": 10.0}, "chains": {
        "ban": {"loss": "ban", "generations": 2},
        # a finite weight so large that the first steps overflow the weights and the loss turns NaN (a NaN weight
        # itself is refused at load)
        "broken": {"loss": "ban+l", "loss_params": {"label_weight": 1e38}, "ensembles": {}}}}])
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(space))
    audit = tmp_path / "audit"
    result = run_sweep(path, tmp_path / "runs", "--workers", "2", "--cpus-per-worker", "0.5",
                       env={"RAY_BAN_FAULT": "1:1:1", "RAY_BAN_AUDIT_DIR": str(audit)})
    assert result.returncode == 1, result.stdout + result.stderr  # one chain failed; the others finished
    run = tmp_path / "runs" / "faults"
    assert len(list((run / "faults").iterdir())) == 1  # the kill happened

    # the killed chain: the shape of an uninterrupted run, epoch 1 from the checkpoint, not trained twice
    rows = {(r["chain"], r["role"], r["generation"]): r for r in pq.read_table(run / "results.parquet").to_pylist()}
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {
        (None, "teacher", 0), ("ban", "student", 1), ("ban", "student", 2), ("ban/ens2", "ensemble", 2)}
    gen1 = run / "models" / rows[("ban", "student", 1)]["model_key"]
    history = json.loads((gen1 / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # the kill lands once Train has recorded epoch 1's checkpoint (chain_worker.inject_fault), so epoch 2 must have
    # continued from it: a generation retrained from scratch would have no resumed_from
    assert "resumed_from" not in history[0] and history[1]["resumed_from"] == 1
    assert json.loads((gen1 / "summary.json").read_text())["resumed_from"] == 1
    board = EventAccumulator(str(run / "tensorboard" / "A" / "ban-s0" / "gen1"))
    board.Reload()
    assert [e.step for e in board.Scalars("test/error")] == [1, 2]

    # data parallelism survived the restart: disjoint equal shards every epoch, identical replicas
    trained = [rows[(None, "teacher", 0)], rows[("ban", "student", 1)], rows[("ban", "student", 2)]]
    for row in trained:
        model = audit / row["model_key"]
        for epoch in (1, 2):
            shards = [set(json.loads((model / f"rank{r}-epoch{epoch}.json").read_text())) for r in (0, 1)]
            assert len(shards[0]) == len(shards[1]) == 256 and not shards[0] & shards[1]
        digests = [json.loads((model / f"rank{r}-weights.json").read_text()) for r in (0, 1)]
        assert digests[0] == digests[1]
    first = audit / trained[0]["model_key"]
    assert json.loads((first / "rank0-epoch1.json").read_text()) != json.loads((first / "rank0-epoch2.json").read_text())

    # the teacher's finished trial handed its process to a chain (Tune reuses a sweep's trial actors): three
    # trials, fewer processes
    trials = [json.loads(p.read_text()) for p in (audit / "trials").iterdir()]
    assert sorted(t["chain"] for t in trials) == sorted(["A.ban.seed0", "A.broken.seed0",
                                                         f"gen0.{trained[0]['model_key']}"])
    assert len({t["pid"] for t in trials}) < len(trials)

    # the NaN chain: failed once, named, no traceback, no retries spent on a deterministic NaN
    broken = rows[("broken", "student", 1)]
    assert broken["status"] == "failed" and "generation 1" in broken["message"]
    assert "FAILED A.broken.seed0" in result.stderr and "training loss is nan at epoch 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.count("[A.broken.seed0] gen 1/1") == 0


def test_gpus_asked_of_a_machine_without_any_are_refused_before_writing(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(CHAIN))
    code, _, err = cli_in_process(path, "--out", tmp_path / "runs", "--gpus-per-worker", "0.25", env={"RAY_ADDRESS": ""})
    assert code == 2
    assert err.count("\n") == 1 and "has none" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_parquet_dataset_with_the_wrong_columns_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"pixels": [b"x"], "target": [1]}), data / f"{split}.parquet")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(dict(CHAIN, dataset=f"parquet:{data}")))
    code, _, err = cli_in_process(path, "--out", tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "column" in err and not (tmp_path / "runs").exists()


# -- fuzz: randomly broken search-space files --------------------------------------------------------------
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=12),
                 st.lists(st.integers(-2, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(value, prefix=()):
    """Every (path to a value) inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def broken_space_text(draw) -> str:
    space = json.loads(json.dumps(CHAIN))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(space) if p]
        if not paths:
            break
        target = draw(st.sampled_from(paths))
        parent = space
        for step in target[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[target[-1]] = draw(JUNK)
        elif action == "delete":
            del parent[target[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(target[-1])
    text = yaml.safe_dump(space)
    if draw(st.booleans()):  # break the YAML itself: cut it short or splice in junk characters
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ":", "\t", "[", "{x: ", "- - ", "'", "\x00", "&a *b"])) + text[cut:][:20]
    return text


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=broken_space_text())
def test_random_broken_spaces_get_exit_2_and_one_line(tmp_path, capsys, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    try:
        code = sweep.main([str(path), "--dry-run", "--out", str(tmp_path / "runs")])
    except SystemExit as exit_:  # argparse paths exit; anything else escaping main would be a traceback
        code = exit_.code
    captured = capsys.readouterr()
    assert code in (0, 2), (code, text, captured.err)
    if code == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ray-ban: error: "), (text, captured.err)
    assert not (tmp_path / "runs").exists()
