"""``python -m ray_ban.data.export cifar10|cifar100 --data-root DIR --out DIR_OR_URI [--download]``.

Turns torchvision's CIFAR python-pickle files into the Hugging Face Hub's Parquet layout, so data is
staged in a bucket once and every node reads it with ``--dataset parquet:<out>``. The files are the
Hub's: ``<out>/plain_text/`` (CIFAR-10: ``img``, ``label``) or ``<out>/cifar100/`` (CIFAR-100:
``img``, ``fine_label``, ``coarse_label``), each holding ``train-00000-of-00001.parquet`` and
``test-00000-of-00001.parquet`` with PNG images and the ``huggingface`` schema metadata naming
every ``ClassLabel``'s classes. Exit codes: 0 written, 2 bad input (one line naming the fix).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ray_ban.store import atomic_write_with, join, split_location
from ray_ban.data.sources import CIFAR_FOLDERS, cifar_lock, default_root
from ray_ban.data.splits import DataError

CONFIGS = {"cifar10": "plain_text", "cifar100": "cifar100"}  # the Hub's config folders (uoft-cs/cifar10, uoft-cs/cifar100)
BATCHES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}
LABELS = {  # column -> (key in each batch, key of its names in the meta file)
    "cifar10": {"label": ("labels", "label_names")},
    "cifar100": {"fine_label": ("fine_labels", "fine_label_names"), "coarse_label": ("coarse_labels", "coarse_label_names")},
}


def read_cifar(name: str, root: str) -> dict:
    """torchvision's pickles under ``root`` -> {split: {"images": (N, 3, 32, 32) uint8, "filenames", column: labels}, "names"}."""
    folder = Path(root).expanduser() / CIFAR_FOLDERS[name]
    layout = BATCHES[name]
    needed = [*layout["train"], *layout["test"], layout["meta"]]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        what = f"no folder {folder}" if not folder.is_dir() else f"{folder} lacks {', '.join(missing)}"
        raise DataError(f"{name}: {what}: pass --download (needs internet) or --data-root a folder holding torchvision's "
                        f"{CIFAR_FOLDERS[name]}/")
    meta = _unpickle(folder / layout["meta"])
    out: dict = {"names": {column: [_text(n) for n in meta[names]] for column, (_, names) in LABELS[name].items()}}
    for split in ("train", "test"):
        batches = [_unpickle(folder / n) for n in layout[split]]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        out[split] = {"images": images,
                      "filenames": [_text(f) for b in batches for f in b.get("filenames", [])] or [None] * len(images)}
        for column, (key, _) in LABELS[name].items():
            out[split][column] = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])
            if len(out[split][column]) != len(images):
                raise DataError(f"{name}: {split} has {len(images)} images but {len(out[split][column])} {key}; the files are damaged")
    return out


def hf_table(images: np.ndarray, filenames: list, labels: dict[str, np.ndarray], names: dict[str, list[str]]) -> pa.Table:
    """PNG-encoded images and their label columns as a table in the Hub's layout, ClassLabel names in its metadata."""
    import torch
    from torchvision.io import encode_png

    blobs = [encode_png(torch.from_numpy(np.ascontiguousarray(image))).numpy().tobytes() for image in images]
    img = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), pa.array(filenames, pa.string())], names=["bytes", "path"])
    features = {"img": {"_type": "Image"}, **{column: {"names": names[column], "_type": "ClassLabel"} for column in labels}}
    schema = pa.schema([pa.field("img", img.type), *[pa.field(column, pa.int64()) for column in labels]],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    return pa.Table.from_arrays([img, *[pa.array(values, pa.int64()) for values in labels.values()]], schema=schema)


def export(name: str, root: str, out: str, download: bool = False) -> list[str]:
    """Write dataset ``name`` from the torchvision files under ``root`` to ``out`` (a folder or storage URI); the written files."""
    if name not in CONFIGS:
        raise DataError(f"unknown dataset '{name}': export one of {', '.join(CONFIGS)}")
    if download:
        _download(name, root)
    data = read_cifar(name, root)
    fs, base = split_location(out)
    written = []
    for split in ("train", "test"):
        part = data[split]
        table = hf_table(part["images"], part["filenames"], {c: part[c] for c in LABELS[name]}, data["names"])
        relative = f"{CONFIGS[name]}/{split}-00000-of-00001.parquet"
        if fs.type_name == "local":  # a temporary file renamed into place: readers never see a part
            atomic_write_with(Path(base) / relative, lambda temp, table=table: pq.write_table(table, temp))
        else:
            fs.create_dir(f"{base}/{CONFIGS[name]}", recursive=True)
            pq.write_table(table, f"{base}/{relative}", filesystem=fs)  # an upload becomes visible only once complete
        written.append(join(out, relative))
    return written


def _download(name: str, root: str) -> None:
    """torchvision's download (checksummed), under the node's lock for that folder."""
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        with cifar_lock(name, root):
            cls(root, train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DataError(f"{name}: download failed ({error.__class__.__name__}); copy {CIFAR_FOLDERS[name]}/ under "
                        "--data-root instead") from None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            raw = pickle.load(handle, encoding="latin1")  # the CIFAR pickles were written by Python 2
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: not a CIFAR pickle ({type(error).__name__}); download the files again") from None
    return {_text(key): value for key, value in raw.items()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_ban.data.export",
                                     description="Write torchvision's CIFAR files as Hugging Face Hub Parquet to a folder or bucket.")
    parser.add_argument("dataset", choices=sorted(CONFIGS), help="the torchvision dataset to export")
    parser.add_argument("--data-root", default=None, help="folder holding torchvision's files (default $RAY_BAN_DATA)")
    parser.add_argument("--out", required=True, help="a folder or storage URI (s3://bucket/cifar100?endpoint_override=...)")
    parser.add_argument("--download", action="store_true", help="download the torchvision files first (needs internet)")
    args = parser.parse_args(argv)
    try:
        written = export(args.dataset, args.data_root or default_root(), args.out, args.download)
    except DataError as error:
        print(f"ray-ban: error: {error}", file=sys.stderr)
        return 2
    except (OSError, pa.ArrowException) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ray-ban: error: cannot write to {args.out} ({reason}); choose a writable --out or check the storage URI "
              "and its credentials", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"train on it with --dataset parquet:{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
