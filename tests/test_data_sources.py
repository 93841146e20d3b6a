"""Parquet image datasets as the Hugging Face Hub exports them, from local folders and from S3 (a local moto
server), decoded once per node into a locked cache; the CIFAR export that stages data in a bucket."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import encode_png

from ray_ban.config import spaces
from ray_ban.data import DataError, check_dataset, load_dataset, parquet
from ray_ban.data.cache import CACHE_ENV, cache_root
from ray_ban.data.export import main as export_main
from ray_ban.data.sources import cifar_lock
from ray_ban.core.generations import prepare_data
from ray_ban.cli.sweep import main as sweep_main

ROOT = Path(__file__).resolve().parents[1]
FINE = [f"fine{i}" for i in range(6)]
COARSE = ["coarse0", "coarse1", "coarse2"]


def images(count: int, seed: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3, size, size), dtype=np.uint8)


def hf_file(path, pixels: np.ndarray, columns: dict, features: dict | None, image_column: str = "img") -> None:
    """One Parquet file as the Hub writes it: PNG images in a {bytes, path} struct, int64 labels, `huggingface` metadata."""
    blobs = [encode_png(torch.from_numpy(p)).numpy().tobytes() for p in pixels]
    img = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), pa.array([None] * len(blobs), pa.string())],
                                     names=["bytes", "path"])
    table = pa.table({image_column: img, **{name: pa.array(values, pa.int64()) for name, values in columns.items()}})
    if features is not None:
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def cifar100_like(root: Path, shards: dict[str, list[str]]) -> dict:
    """A CIFAR-100-shaped dataset (fine_label and coarse_label ClassLabels) in the given shard files; its arrays."""
    features = {"img": {"_type": "Image"},
                "fine_label": {"names": FINE, "_type": "ClassLabel"},
                "coarse_label": {"names": COARSE, "_type": "ClassLabel"}}
    expected = {}
    for seed, (split, files) in enumerate(shards.items()):
        pixels, fine = [], []
        for index, name in enumerate(files):
            x = images(5 + index, seed * 10 + index)
            y = (np.arange(len(x)) + index) % len(FINE)
            hf_file(root / name, x, {"fine_label": y, "coarse_label": y // 2}, features)
            pixels.append(x)
            fine.append(y)
        expected[split] = np.concatenate(pixels), np.concatenate(fine)
    (root / "README.md").write_text("dataset card")
    return expected


def decode_counter(monkeypatch) -> list:
    """Record every decode of image bytes (the work the cache saves)."""
    calls = []
    real = parquet.decode_images

    def counted(blobs, where):
        calls.append(where)
        return real(blobs, where)

    monkeypatch.setattr(parquet, "decode_images", counted)
    return calls


@pytest.mark.parametrize("layout", [
    {"train": ["cifar100/train-00000-of-00002.parquet", "cifar100/train-00001-of-00002.parquet"],
     "test": ["cifar100/test-00000-of-00001.parquet"]},
    {"train": ["data/train-00000-of-00002-5ed4a5f4.parquet", "data/train-00001-of-00002-5ed4a5f4.parquet"],
     "test": ["data/test-00000-of-00001-0a1b2c3d.parquet"]},
    {"train": ["cifar100/train/0000.parquet", "cifar100/train/0001.parquet"], "test": ["cifar100/test/0000.parquet"]},
], ids=["config-shards", "data-shards", "converted"])
def test_hub_shards_load_with_fine_label_and_its_class_names(tmp_path, layout):
    expected = cifar100_like(tmp_path / "hub", layout)
    data = load_dataset(f"parquet:{tmp_path / 'hub'}")
    assert torch.equal(data.train_images, torch.from_numpy(expected["train"][0]))  # PNG is lossless; shards in order
    assert torch.equal(data.train_labels, torch.from_numpy(expected["train"][1]))
    assert torch.equal(data.test_labels, torch.from_numpy(expected["test"][1]))
    assert data.classes == tuple(FINE) and data.num_classes == 6  # the ClassLabel's names, not the labels seen
    coarse = load_dataset(f"parquet:{tmp_path / 'hub'}", label_column="coarse_label")
    assert coarse.classes == tuple(COARSE) and torch.equal(coarse.train_labels, torch.from_numpy(expected["train"][1] // 2))


def test_label_column_rule_and_bad_label_columns(tmp_path):
    two = {"img": {"_type": "Image"}, "animal": {"names": ["a", "b"], "_type": "ClassLabel"},
           "colour": {"names": ["r", "g", "b"], "_type": "ClassLabel"}}
    for split in ("train", "test"):
        hf_file(tmp_path / "two" / f"{split}.parquet", images(4, 0), {"animal": [0, 1, 0, 1], "colour": [2, 1, 0, 2]}, two)
        hf_file(tmp_path / "only" / f"{split}.parquet", images(4, 0), {"id": [0, 1, 2, 3], "animal": [1, 0, 1, 0]},
                {"img": {"_type": "Image"}, "animal": {"names": ["cat", "dog"], "_type": "ClassLabel"}})
        hf_file(tmp_path / "plain" / f"{split}.parquet", images(4, 0), {"idx": [7, 8, 9, 10], "label": [0, 1, 2, 0]}, None)
    with pytest.raises(DataError, match=r"several label columns \(animal, colour\); pass --label-column with one of them"):
        check_dataset(f"parquet:{tmp_path / 'two'}")
    assert load_dataset(f"parquet:{tmp_path / 'two'}", label_column="colour").classes == ("r", "g", "b")
    only = load_dataset(f"parquet:{tmp_path / 'only'}")  # the only ClassLabel wins over another integer column
    assert only.classes == ("cat", "dog") and only.train_labels.tolist() == [1, 0, 1, 0]
    plain = load_dataset(f"parquet:{tmp_path / 'plain'}")  # no metadata: the integer column named label
    assert plain.train_labels.tolist() == [0, 1, 2, 0] and plain.num_classes == 3 and plain.classes == ()
    with pytest.raises(DataError, match="--label-column fine_label: no such column; choose one of animal, colour"):
        check_dataset(f"parquet:{tmp_path / 'two'}", label_column="fine_label")
    with pytest.raises(DataError, match="--label-column img: is struct.*not class ids"):
        check_dataset(f"parquet:{tmp_path / 'two'}", label_column="img")
    with pytest.raises(DataError, match="--label-column colour applies to parquet: datasets only, not synthetic"):
        load_dataset("synthetic", label_column="colour")


def test_bad_folders_and_files_get_one_line_errors_naming_the_fix(tmp_path):
    features = {"img": {"_type": "Image"}, "label": {"names": ["a", "b"], "_type": "ClassLabel"}}
    hf_file(tmp_path / "trainonly" / "train.parquet", images(2, 0), {"label": [0, 1]}, features)
    hf_file(tmp_path / "unlabelled" / "train.parquet", images(2, 0), {"label": [0, 1]}, features)
    hf_file(tmp_path / "unlabelled" / "test.parquet", images(2, 0), {"label": [-1, -1]}, features)
    hf_file(tmp_path / "configs" / "a" / "train.parquet", images(2, 0), {"label": [0, 1]}, features)
    hf_file(tmp_path / "configs" / "b" / "test.parquet", images(2, 0), {"label": [0, 1]}, features)
    hf_file(tmp_path / "nolabel" / "train.parquet", images(2, 0), {}, features)
    hf_file(tmp_path / "nolabel" / "test.parquet", images(2, 0), {}, features)
    broken = tmp_path / "broken"
    hf_file(broken / "train.parquet", images(2, 0), {"label": [0, 1]}, features)
    pq.write_table(pa.table({"img": pa.StructArray.from_arrays([pa.array([b"not an image", None]), pa.array(["x.png"] * 2)],
                                                               names=["bytes", "path"]),
                             "label": pa.array([0, 1], pa.int64())}), broken / "test.parquet")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.parquet").write_bytes(b"")
    cases = {
        "nothing": r"nothing does not exist; point parquet: at a folder or storage URI holding train.parquet",
        "file.parquet": r"file.parquet is a file; point parquet: at the folder holding",
        "empty": r"empty: no train/test Parquet files there; expected train.parquet and test.parquet, or Hugging Face shards",
        "trainonly": r"trainonly: no test split \(found train\); the loader needs train.parquet",
        "configs": r"configs: several datasets in it \(a, b\); point parquet: at one of them, e.g. parquet:.*configs/b",
        "nolabel": r"no label column \(an integer column, Hugging Face's ClassLabel\); found img",
    }
    for folder, message in cases.items():
        with pytest.raises(DataError, match=message) as error:
            check_dataset(f"parquet:{tmp_path / folder}")
        assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=r"test labels in 'label' include -1 \(Hugging Face marks unlabelled rows -1\)"):
        load_dataset(f"parquet:{tmp_path / 'unlabelled'}")
    with pytest.raises(DataError, match=r"broken/test.parquet: 1 images \(row 1 first\) have no embedded bytes, only a path"):
        load_dataset(f"parquet:{broken}")
    pq.write_table(pa.table({"img": pa.StructArray.from_arrays([pa.array([b"not an image"]), pa.array(["x.png"])],
                                                               names=["bytes", "path"]),
                             "label": pa.array([0], pa.int64())}), broken / "test.parquet")
    with pytest.raises(DataError, match=r"broken/test.parquet: row 0 is not a decodable image"):
        load_dataset(f"parquet:{broken}")
    assert not any(cache_root().glob("broken-*")), "a failed decode must leave no cache entry"


def test_a_second_load_reads_the_node_cache_and_a_changed_source_is_decoded_again(tmp_path, monkeypatch):
    layout = {"train": ["cifar100/train-00000-of-00001.parquet"], "test": ["cifar100/test-00000-of-00001.parquet"]}
    expected = cifar100_like(tmp_path / "hub", layout)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    calls = decode_counter(monkeypatch)
    first = load_dataset(f"parquet:{tmp_path / 'hub'}")
    assert len(calls) == 2  # train and test decoded once
    [entry] = [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name != "locks"]
    assert entry.name.startswith("hub-") and (entry / "train_images.npy").is_file()
    second = load_dataset(f"parquet:{tmp_path / 'hub'}")
    assert len(calls) == 2, "the second load decoded images again instead of reading the cache"
    assert torch.equal(second.train_images, first.train_images) and second.classes == first.classes == tuple(FINE)
    assert torch.equal(second.test_labels, torch.from_numpy(expected["test"][1]))
    coarse = load_dataset(f"parquet:{tmp_path / 'hub'}", label_column="coarse_label")  # other labels: another entry
    assert len(calls) == 4 and coarse.classes == tuple(COARSE)
    time.sleep(0.01)
    hf_file(tmp_path / "hub" / layout["test"][0], images(3, 99), {"fine_label": [5, 4, 3], "coarse_label": [2, 2, 1]},
            {"img": {"_type": "Image"}, "fine_label": {"names": FINE, "_type": "ClassLabel"}})
    changed = load_dataset(f"parquet:{tmp_path / 'hub'}")
    assert len(calls) == 6 and changed.test_labels.tolist() == [5, 4, 3]


def test_the_shared_cifar10_files_are_checked_from_listings_and_footers(shared_cifar, monkeypatch):
    calls = decode_counter(monkeypatch)
    source = parquet.open_source(f"parquet:file://{shared_cifar}")  # a file:// URI goes through pyarrow.fs too
    assert (source.image_column, source.label_column) == ("img", "label")
    assert len(source.classes) == 10 and source.classes[0] == "airplane"  # the older `classes` metadata key
    assert [Path(path).name for path, _, _ in source.files["test"]] == ["test.parquet"]
    check_dataset(f"parquet:{shared_cifar}")
    assert calls == []


CONCURRENT_LOAD = """
import hashlib, sys, time
from pathlib import Path
from ray_ban.data import load_dataset, parquet
real = parquet.decode_images
def slow(blobs, where):  # slow enough that two unlocked loads would both decode
    print("decoded", where, flush=True)
    time.sleep(1.0)
    return real(blobs, where)
parquet.decode_images = slow
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
data = load_dataset(sys.argv[1])
print("digest", hashlib.sha1(data.train_images.numpy().tobytes() + data.test_labels.numpy().tobytes()).hexdigest())
"""


def test_concurrent_loads_on_one_node_decode_once(tmp_path):
    cifar100_like(tmp_path / "hub", {"train": ["cifar100/train-00000-of-00001.parquet"],
                                     "test": ["cifar100/test-00000-of-00001.parquet"]})
    go = tmp_path / "go"
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT_LOAD, f"parquet:{tmp_path / 'hub'}", str(go)], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(0.5)
    go.touch()  # both start loading at once
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
    decodes = [out.count("decoded ") for out, _ in outputs]
    assert sorted(decodes) == [0, 2], f"expected one process to decode train and test and the other none, got {decodes}"
    digests = {line for out, _ in outputs for line in out.splitlines() if line.startswith("digest")}
    assert len(digests) == 1


HOLD_OFF = """
import sys
import torchvision  # noqa: F401  (imported before "ready": what follows waits only on the lock)
from ray_ban.data import DataError, load_dataset
print("ready", flush=True)
try:
    load_dataset("cifar10", root=sys.argv[1])
except DataError as error:
    print(error, flush=True)
"""


def test_torchvision_loads_wait_for_the_node_lock_of_their_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    with cifar_lock("cifar10", str(tmp_path / "data")):  # as if another chain on this node were downloading
        waiting = subprocess.Popen([sys.executable, "-c", HOLD_OFF, str(tmp_path / "data")], cwd=ROOT, env=dict(os.environ),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiting.stdout.readline().strip() == "ready", waiting.stderr.read()[-2000:]
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=2)  # torchvision would fail at once on the empty folder; it waits for the lock
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "cifar10 not found under" in out  # it ran torchvision once the lock was free


# -- torchvision pickles and the export -------------------------------------------------------------

def write_cifar_pickles(root: Path, name: str, per_batch: int = 6) -> dict:
    """Small files in torchvision's CIFAR python format (what its tarballs hold); the arrays written."""
    rng = np.random.default_rng(0)
    written = {}

    def batch(path: Path, count: int, **labels) -> None:
        data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        with open(path, "wb") as handle:
            pickle.dump({"data": data, "filenames": [f"{path.name}_{i}.png" for i in range(count)], **labels}, handle, protocol=2)
        written.setdefault(path.name, []).append((data.reshape(-1, 3, 32, 32), labels))

    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            batch(folder / f"data_batch_{i}", per_batch, labels=[int(v) for v in rng.integers(0, 10, per_batch)])
        batch(folder / "test_batch", per_batch, labels=[int(v) for v in rng.integers(0, 10, per_batch)])
        with open(folder / "batches.meta", "wb") as handle:
            pickle.dump({"label_names": [f"c10-{i}" for i in range(10)], "num_cases_per_batch": per_batch}, handle)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            fine = rng.integers(0, 100, per_batch)
            batch(folder / split, per_batch, fine_labels=[int(v) for v in fine], coarse_labels=[int(v) // 5 for v in fine])
        with open(folder / "meta", "wb") as handle:
            pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)],
                         "coarse_label_names": [f"c{i}" for i in range(20)]}, handle)
    return written


def test_export_cifar10_pickles_round_trips_through_the_loader(tmp_path, capsys):
    written = write_cifar_pickles(tmp_path / "tv", "cifar10")
    assert export_main(["cifar10", "--data-root", str(tmp_path / "tv"), "--out", str(tmp_path / "out")]) == 0
    assert f"--dataset parquet:{tmp_path / 'out'}" in capsys.readouterr().out
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.parquet"))
    assert files == ["plain_text/test-00000-of-00001.parquet", "plain_text/train-00000-of-00001.parquet"]
    features = json.loads(pq.read_schema(tmp_path / "out" / files[1]).metadata[b"huggingface"])["info"]["features"]
    assert features["img"] == {"_type": "Image"} and features["label"]["_type"] == "ClassLabel"
    data = load_dataset(f"parquet:{tmp_path / 'out'}")
    train = np.concatenate([written[f"data_batch_{i}"][0][0] for i in range(1, 6)])
    assert torch.equal(data.train_images, torch.from_numpy(train)) and data.train_images.shape == (30, 3, 32, 32)
    assert data.test_labels.tolist() == written["test_batch"][0][1]["labels"]
    assert data.classes == tuple(f"c10-{i}" for i in range(10)) and data.num_classes == 10


def test_export_to_s3_and_workers_load_it_from_the_bucket(tmp_path, bucket, monkeypatch, capsys):
    fs, uri = bucket
    written = write_cifar_pickles(tmp_path / "tv", "cifar100")
    assert export_main(["cifar100", "--data-root", str(tmp_path / "tv"), "--out", uri]) == 0, capsys.readouterr().err
    keys = sorted(i.path for i in fs.get_file_info(pafs.FileSelector("data/cifar100", recursive=True)) if i.type == pafs.FileType.File)
    assert keys == ["data/cifar100/cifar100/test-00000-of-00001.parquet", "data/cifar100/cifar100/train-00000-of-00001.parquet"]
    spec = f"parquet:{uri}"
    calls = decode_counter(monkeypatch)
    check_dataset(spec)  # --dry-run: listings and footers from the bucket, nothing decoded
    assert calls == []
    data = load_dataset(spec)
    (train, labels), = written["train"]
    assert torch.equal(data.train_images, torch.from_numpy(train)) and data.num_classes == 100
    assert data.train_labels.tolist() == labels["fine_labels"] and data.classes[:2] == ("f0", "f1")
    # what every Train worker calls, with the data dict a trial carries (label column and subsets)
    worker = prepare_data({"dataset": spec, "label_column": "coarse_label", "train_subset": 4, "test_subset": 3,
                           "validation_size": 1})
    assert worker.num_classes == 20 and worker.train_images.shape[0] == 3 and worker.val_images.shape[0] == 1
    assert sorted(worker.train_labels.tolist() + worker.val_labels.tolist()) == sorted(labels["coarse_labels"][:4])
    assert len(calls) == 4  # fine labels once, coarse labels once (train and test each)
    with pytest.raises(DataError, match=r"^parquet:s3://data/cifar100/nope does not exist; point parquet: at a folder"):
        check_dataset(spec.replace("cifar100?", "cifar100/nope?"))


def test_export_refuses_missing_pickles_in_one_line(tmp_path, capsys):
    assert export_main(["cifar100", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ray-ban: error: cifar100: no folder {tmp_path / 'cifar-100-python'}: pass --download")
    assert "\n" not in err
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    assert export_main(["cifar100", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "cifar-100-python lacks test, meta: pass --download" in capsys.readouterr().err
    for name in ("test", "meta"):
        (tmp_path / "cifar-100-python" / name).write_bytes(b"not a pickle")
    assert export_main(["cifar100", "--data-root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a CIFAR pickle (UnpicklingError); download the files again" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out").exists()


def test_label_column_reaches_the_plan_keys_and_the_workers_data():
    plain = spaces.load("table1", "smoke")
    coarse = spaces.load("table1", "smoke", {"label_column": "coarse_label"})
    assert "label_column" not in plain.data_config()  # unchanged keys for every sweep without it
    assert coarse.data_config()["label_column"] == "coarse_label"
    assert {t.key for t in plain.trainings()}.isdisjoint(t.key for t in coarse.trainings())


def test_dry_run_checks_a_bucket_dataset_and_its_label_column(tmp_path, bucket, capsys):
    fs, uri = bucket
    write_cifar_pickles(tmp_path / "tv", "cifar100")
    assert export_main(["cifar100", "--data-root", str(tmp_path / "tv"), "--out", uri]) == 0
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps({"name": "s3data", "dataset": f"parquet:{uri}", "seeds": [0], "recipe": {"epochs": 1},
                                 "rows": [{"row": "r", "teacher": "wrn-10-1", "chains": {"ban": {"generations": 1}}}]}))
    assert sweep_main([str(space), "--dry-run", "--label-column", "coarse_label", "--out", str(tmp_path / "runs")]) == 0
    assert "dataset parquet:s3://" in capsys.readouterr().out
    assert sweep_main([str(space), "--dry-run", "--label-column", "superclass", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--label-column superclass: no such column; choose one of fine_label, coarse_label" in err
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def bucket(local_s3):
    return local_s3.fs, local_s3.uri("data/cifar100")


def test_synthetic_siblings_blend_look_alikes_with_soft_train_labels() -> None:
    from ray_ban.data.sources import synthetic

    data = load_dataset("synthetic-siblings")
    assert data.train_images.shape == (2000, 3, 32, 32) and data.num_classes == 10
    # the same draws without blending: train labels that differ name a sibling (same superclass, c % 2)
    plain = synthetic(10, 2000, 1000, ambiguity=0.0)
    assert torch.equal(plain.test_labels, data.test_labels)  # test labels are the images' own classes
    assert not torch.equal(plain.train_images, data.train_images)
    relabelled = data.train_labels != plain.train_labels
    assert 0.2 < relabelled.float().mean() < 0.3  # a sibling with probability E[U(0, 0.5)] = 0.25
    assert torch.equal(data.train_labels[relabelled] % 2, plain.train_labels[relabelled] % 2)
    with pytest.raises(ValueError, match="ambiguity"):
        synthetic(10, 10, 10, ambiguity=1.0)
