"""The teacher bank at the store level, without Ray: entries written whole and reused, one training for
two processes that want the same missing model, dead owners' leases taken over, storage URIs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from ray_ban import bank as banking
from ray_ban.cli import sweep
from ray_ban.config import spaces
from ray_ban.bank import TeacherBank, entry_name
from ray_ban.store import RunStore
from sweep_helpers import ROOT, SPACE

KEY, DIGEST = "wrn-10-1-label-s1-0123456789", "d" * 64
NAME = entry_name(KEY, "fp32")


def save(store: RunStore, key: str = KEY, value: float = 1.0) -> None:
    """A finished model as the engine stores one (weights, fp16 test logits, history, summary last)."""
    store.save_model(key, {"w": torch.full((3,), value)}, {"logits": torch.full((4, 10), value), "label": torch.arange(4)},
                     [{"epoch": 1, "test_error": 50.0}], {"key": key, "final_test_error": 50.0, "wall_time_s": 2.0})


def test_an_entry_is_published_whole_and_reused_as_links_marked_in_the_summary(tmp_path):
    first, second = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    bank = TeacherBank(str(tmp_path / "bank"))
    assert bank.find(NAME, DIGEST) is None
    save(first)
    where = bank.publish(first, KEY, NAME, DIGEST)
    record = json.loads((tmp_path / "bank" / NAME / "complete.json").read_text())
    assert record["digest"] == DIGEST and (tmp_path / "bank" / NAME / record["version"] / "model.pt").is_file()

    assert bank.provide(NAME, DIGEST, second, KEY, train=lambda: pytest.fail("a banked model was trained")) == where
    assert second.summary(KEY)["reused_from"] == where and "reused_from" not in first.summary(KEY)
    assert torch.equal(second.load_state(KEY)["w"], torch.ones(3))
    assert torch.equal(second.load_predictions(KEY)[0], first.load_predictions(KEY)[0])
    linked = Path(second.path(second.model_file(KEY, "model.pt")))
    assert linked.stat().st_ino == (tmp_path / "bank" / NAME / record["version"] / "model.pt").stat().st_ino
    assert not (tmp_path / "bank" / NAME / "lease.json").exists()


def test_an_entry_made_for_another_identity_is_not_reused(tmp_path):
    bank = TeacherBank(str(tmp_path / "bank"))
    save(RunStore(tmp_path / "a"))
    bank.publish(RunStore(tmp_path / "a"), KEY, NAME, DIGEST)
    trained = []
    other = RunStore(tmp_path / "b")
    assert bank.provide(NAME, "e" * 64, other, KEY, train=lambda: (trained.append(1), save(other, value=2.0))) is None
    assert trained == [1] and bank.find(NAME, "e" * 64)["digest"] == "e" * 64  # republished for the new identity


def test_an_entry_without_its_completion_marker_is_not_there(tmp_path):
    bank = TeacherBank(str(tmp_path / "bank"))
    run = RunStore(tmp_path / "a")
    save(run)
    bank.publish(run, KEY, NAME, DIGEST)
    (tmp_path / "bank" / NAME / "complete.json").unlink()  # a publisher that died before its last write
    assert bank.find(NAME, DIGEST) is None


WORKER = """
import sys, time
from pathlib import Path
import torch
sys.path[:0] = [{root!r}, {tests!r}]  # this checkout's ray_ban, and the test module
from test_bank import KEY, DIGEST, NAME, save
from ray_ban.bank import TeacherBank
from ray_ban.store import RunStore

run = RunStore(sys.argv[1])
bank = TeacherBank(sys.argv[2], poll_s=0.2, heartbeat_s=0.5)
def train():
    print("training", flush=True)
    time.sleep(3.0)
    save(run)
where = bank.provide(NAME, DIGEST, run, KEY, train)
print("reused" if where else "trained", flush=True)
"""


def test_two_processes_that_want_the_same_missing_entry_train_it_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT), tests=str(Path(__file__).parent)))
    processes = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"run{i}"), str(tmp_path / "bank")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    lines = sorted(out.split() for out, _ in outputs)
    assert lines == [["reused"], ["training", "trained"]], outputs
    for i in range(2):
        assert RunStore(tmp_path / f"run{i}").is_done(KEY)
    assert not (tmp_path / "bank" / NAME / "lease.json").exists()


def write_lease(tmp_path, **fields) -> dict:
    record = {"owner": "someone", "host": socket.gethostname(), "pid": os.getpid(), "beat": 0,
              "heartbeat_at": time.time(), "started_at": time.time(), **fields}
    path = tmp_path / "bank" / NAME / "lease.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def test_a_dead_owners_lease_on_this_host_is_taken_over_at_once(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lease(tmp_path, pid=int(finished.stdout))  # that process has exited: its lease is dead
    run = RunStore(tmp_path / "run")
    started = time.monotonic()
    assert TeacherBank(str(tmp_path / "bank"), ttl_s=600, poll_s=0.1).provide(NAME, DIGEST, run, KEY, lambda: save(run)) is None
    assert time.monotonic() - started < 5 and run.is_done(KEY)


def test_a_silent_owner_elsewhere_expires_after_ttl_and_a_beating_one_is_waited_for(tmp_path):
    write_lease(tmp_path, host="another-host", pid=1)
    run = RunStore(tmp_path / "run")
    started = time.monotonic()
    assert TeacherBank(str(tmp_path / "bank"), ttl_s=1.5, poll_s=0.1).provide(NAME, DIGEST, run, KEY, lambda: save(run)) is None
    assert 1.5 <= time.monotonic() - started < 10

    # an owner elsewhere that keeps beating holds its lease past the ttl; the waiter then copies its model
    other = tmp_path / "other"
    (tmp_path / "bank").rename(other)
    owner = TeacherBank(str(tmp_path / "bank"), heartbeat_s=0.2, owner={"owner": "far", "host": "another-host", "pid": 1})
    source = RunStore(tmp_path / "source")
    lease = owner.try_lease(NAME)
    assert lease is not None and owner.try_lease(NAME) is None

    def hold() -> None:
        with lease:
            time.sleep(3.0)  # two ttls of the waiter below
            save(source)
            owner.publish(source, KEY, NAME, DIGEST)

    holder = threading.Thread(target=hold)
    holder.start()
    waiter = RunStore(tmp_path / "waiter")
    where = TeacherBank(str(tmp_path / "bank"), ttl_s=1.5, poll_s=0.1).provide(
        NAME, DIGEST, waiter, KEY, lambda: pytest.fail("took over a live lease"))
    holder.join()
    assert where and waiter.summary(KEY)["reused_from"] == where


def test_a_failed_training_releases_its_lease_and_publishes_nothing(tmp_path):
    bank = TeacherBank(str(tmp_path / "bank"), poll_s=0.1)

    def fail() -> None:
        raise RuntimeError("NaN loss")

    with pytest.raises(RuntimeError, match="NaN loss"):
        bank.provide(NAME, DIGEST, RunStore(tmp_path / "run"), KEY, fail)
    assert bank.read_lease(NAME) is None and bank.find(NAME, DIGEST) is None
    run = RunStore(tmp_path / "again")
    assert bank.provide(NAME, DIGEST, run, KEY, lambda: save(run)) is None  # the next one trains it
    assert bank.find(NAME, DIGEST) is not None


def test_in_object_storage_one_of_two_contenders_trains_and_the_other_copies(tmp_path, local_s3):
    uri = local_s3.uri("bank/teachers")
    banking.check_writable(uri)
    trained, results = [], {}

    def contender(i: int) -> None:
        run = RunStore(tmp_path / f"run{i}")
        bank = TeacherBank(uri, poll_s=0.2, settle_s=0.5, heartbeat_s=0.3,
                           owner={"owner": f"contender{i}", "host": "elsewhere", "pid": 1})

        def train() -> None:
            trained.append(i)
            time.sleep(1.5)
            save(run, value=float(i))

        results[i] = bank.provide(NAME, DIGEST, run, KEY, train)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(trained) == 1, trained
    winner, loser = trained[0], 1 - trained[0]
    assert results[winner] is None and results[loser].startswith("s3://bank/teachers/")
    copied = RunStore(tmp_path / f"run{loser}")
    assert torch.equal(copied.load_state(KEY)["w"], torch.full((3,), float(winner)))
    assert TeacherBank(uri).read_lease(NAME) is None


def test_the_bank_location_option(tmp_path, monkeypatch):
    monkeypatch.delenv(banking.ENV, raising=False)
    assert banking.resolve_location(None, joined_cluster=False) == str(Path("~/.cache/ray-ban/teachers").expanduser())
    assert banking.resolve_location(None, joined_cluster=True) is None  # nodes may not see this machine's home
    assert banking.resolve_location("none", joined_cluster=False) is None
    assert banking.resolve_location("OFF", joined_cluster=False) is None
    assert banking.resolve_location("s3://b/t?region=x", joined_cluster=True) == "s3://b/t?region=x"
    assert banking.resolve_location(str(tmp_path / "x" / ".." / "bank"), False) == str(tmp_path / "bank")
    monkeypatch.setenv(banking.ENV, str(tmp_path / "env-bank"))
    assert banking.resolve_location(None, joined_cluster=True) == str(tmp_path / "env-bank")


def test_an_unwritable_bank_named_on_the_command_line_is_exit_2_in_one_line(tmp_path, capsys):
    space = tmp_path / "shared.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    (tmp_path / "a-file").write_text("not a folder")
    code = sweep.main([str(space), "--out", str(tmp_path / "runs"), "--teachers", str(tmp_path / "a-file")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("ray-ban: error: cannot write to the teacher bank ")
    assert "choose a writable --teachers, or --teachers none" in err and not (tmp_path / "runs").exists()


def test_tables_2_4_and_5_share_one_teacher_model_in_the_paper_and_in_the_smoke_presets():
    for preset in ("paper", "smoke"):
        roots = [{t.key for t in spaces.load(table, preset).roots() if t.role == "teacher"} for table in
                 ("table4", "table5")]
        assert len(roots[0]) == 1 and roots[0] <= roots[1], preset
    paper = [{t.digest for t in spaces.load(table).roots() if t.architecture == "densenet-90-60"}
             for table in ("table2", "table4", "table5")]
    assert paper[0] == paper[1] == paper[2] and len(paper[0]) == 1


def test_a_family_version_bump_changes_its_models_keys_and_version_1_keeps_the_old_ones(monkeypatch):
    import hashlib

    from ray_ban.config import family_versions

    before = spaces.load("table4", "smoke")
    teacher, student = before.chains[0].root, before.chains[0].generations[0]
    identity = {"architecture": teacher.architecture, "loss": "label", "loss_params": {}, "seed": teacher.seed,
                "teacher": None, "model_kwargs": {}, "recipe": before.recipe.to_dict(),
                "data": {"dataset": "synthetic-100", "validation_size": None, "train_subset": 1024, "test_subset": 500}}
    text = json.dumps(identity, sort_keys=True)
    assert teacher.key.endswith(hashlib.sha1(text.encode()).hexdigest()[:10])  # as before versions existed
    assert teacher.digest == hashlib.sha256(text.encode()).hexdigest()

    monkeypatch.setitem(family_versions.FAMILIES, "densenet", (2, ("common",)))  # DenseNet's construction changed
    after = spaces.load("table4", "smoke")
    assert after.chains[0].root.key != teacher.key and after.chains[0].root.digest != teacher.digest
    assert after.chains[0].generations[0].key != student.key  # its students are DenseNets too (they build on it)
    monkeypatch.undo()
    raw = {"name": "w", "dataset": "synthetic", "rows": [{"row": "r", "teacher": "wrn-10-1",
                                                          "chains": {"b": {"loss": "ban"}}}]}
    wide = spaces.expand(raw, "w.yaml")
    monkeypatch.setitem(family_versions.FAMILIES, "densenet", (2, ("common",)))
    again = spaces.expand(raw, "w.yaml")
    assert [t.key for t in wide.trainings()] == [t.key for t in again.trainings()]  # other families keep theirs


def test_an_unwritable_default_bank_is_turned_off_with_a_warning_record(tmp_path, monkeypatch, caplog):
    """The per-user default that cannot be written (here a file stands where ~/.cache should be) turns the
    bank off; the warning is a record of the ray_ban.bank logger, like every line ray-ban says."""
    import logging

    from ray_ban.cli.bank_option import teacher_bank
    from ray_ban.config.options import SweepOptions

    monkeypatch.delenv("RAY_BAN_TEACHERS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="ray_ban.bank"):
        assert teacher_bank(SweepOptions(table="table1")) is None
    [record] = [r for r in caplog.records if r.name == "ray_ban.bank"]
    assert record.levelno == logging.WARNING and "not writable" in record.getMessage()
    assert "--teachers none silences this" in record.getMessage()
