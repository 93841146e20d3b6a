"""The run folder of one sweep, on a local disk or in cloud storage, every file written whole.

``RunStore(location)`` takes a local path or a URI that ``pyarrow.fs`` understands (``s3://bucket/runs``,
``gs://...``, with options such as ``?endpoint_override=host:port&scheme=http``), so Train workers on
any node read teachers from and write models to the same place. Local files are written to a
temporary name and renamed; an object store makes an upload visible only once it is complete.

Layout of ``<out>/<sweep>/``::

    sweep.json                 the plan this folder belongs to (refuses to mix sweeps)
    models/<key>/model.pt      final weights of each trained model
    models/<key>/history.json  per-epoch reports
    models/<key>/summary.json  final metrics; its presence marks the model finished
    models/<key>/failed.json   why a model failed (NaN loss, ...)
    models/<key>/skipped.json  why a planned generation was not trained (its chain stopped by itself)
    predictions/<key>.arrow    test logits as fp16 (Arrow IPC), with the labels; for a language model
                               each test token's target log-probability and top token
    results.parquet, table.md  written by ray_ban.results.tables
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import pyarrow as pa
import pyarrow.fs as pafs

if TYPE_CHECKING:
    import torch


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (cloud storage); plain paths are local."""
    return "://" in str(location)


def split_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """A local path or a storage URI -> (pyarrow filesystem, path inside it)."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    fs, path = pafs.FileSystem.from_uri(str(location))
    return fs, path.rstrip("/")


def join(location: str | Path, *parts: str) -> str:
    """``location``/parts, keeping a URI's query (its storage options) at the end."""
    if not is_uri(location):
        return str(Path(location, *parts))
    url = urllib.parse.urlsplit(str(location))
    path = "/".join([url.path.rstrip("/"), *parts])
    return urllib.parse.urlunsplit((url.scheme, url.netloc, path, url.query, ""))


def sync_folder(local_dir: str | Path, location: str) -> None:
    """Copy a local folder's files to ``location`` (a storage URI), replacing what is there."""
    fs, path = split_location(location)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either its old content or all of the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` fill a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        writer(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class RunStore:
    """Reads and writes the files of one sweep's run folder (local path or storage URI)."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.fs, self.base = split_location(self.location)
        self.remote = not isinstance(self.fs, pafs.LocalFileSystem)  # file:// URIs stay local and atomic

    def path(self, relative: str) -> str:
        """The path of ``relative`` inside the store's filesystem (a local path for a local store)."""
        return f"{self.base}/{relative}"

    def uri(self, relative: str) -> str:
        """``relative`` as a location other processes can open (a path, or a URI with the store's options)."""
        return join(self.location, relative)

    # -- plain files ----------------------------------------------------------------------------
    def exists(self, relative: str) -> bool:
        return self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as stream:
            return stream.read()

    def write_bytes(self, relative: str, data: bytes) -> None:
        """The file holds either its old content or all of the new, never a part."""
        if not self.remote:
            atomic_write_bytes(Path(self.path(relative)), data)
            return
        with self.fs.open_output_stream(self.path(relative)) as stream:  # visible once the upload completes
            stream.write(data)

    def write_with(self, relative: str, writer: Callable[[Path], None]) -> None:
        """Let ``writer`` fill a local temporary file, then put it in place whole."""
        if not self.remote:
            atomic_write_with(Path(self.path(relative)), writer)
            return
        with tempfile.TemporaryDirectory() as folder:
            temp = Path(folder) / Path(relative).name
            writer(temp)
            self.write_bytes(relative, temp.read_bytes())

    def read_json(self, relative: str):
        return json.loads(self.read_bytes(relative))

    def write_json(self, relative: str, value) -> None:
        self.write_bytes(relative, (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode())

    def delete(self, relative: str) -> None:
        if self.exists(relative):
            self.fs.delete_file(self.path(relative))

    def is_empty(self) -> bool:
        """True if the folder does not exist or holds nothing."""
        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            return True
        return not self.fs.get_file_info(pafs.FileSelector(self.base, recursive=False))

    def clear(self) -> None:
        """Delete the whole run folder (``--overwrite``)."""
        if self.fs.get_file_info(self.base).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.base)

    def download_folder(self, relative: str, local_dir: str | Path) -> None:
        pafs.copy_files(self.path(relative), str(local_dir), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())

    # -- models ---------------------------------------------------------------------------------
    def model_file(self, key: str, name: str) -> str:
        return f"models/{key}/{name}"

    def prediction_file(self, key: str) -> str:
        return f"predictions/{key}.arrow"

    def prediction_path(self, key: str) -> str:
        return self.path(self.prediction_file(key))

    def is_done(self, key: str) -> bool:
        return self.exists(self.model_file(key, "summary.json"))

    def failure(self, key: str) -> Optional[str]:
        name = self.model_file(key, "failed.json")
        return self.read_json(name)["message"] if self.exists(name) else None

    def summary(self, key: str) -> dict:
        return self.read_json(self.model_file(key, "summary.json"))

    def history(self, key: str) -> list[dict]:
        name = self.model_file(key, "history.json")
        return self.read_json(name) if self.exists(name) else []

    def save_model(self, key: str, state_dict: dict, predictions: dict, history: list[dict], summary: dict) -> None:
        """Store a finished model; summary.json goes last, so a crash leaves it unfinished, not corrupt.

        ``predictions`` is the generation's ``test_predictions()``: ``logits`` and ``label`` for an
        image model, per-token ``target_logprob``, ``argmax`` and ``label`` for a language model."""
        import torch  # imported where needed: the CLI validates input without loading torch

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        self.write_bytes(self.model_file(key, "model.pt"), buffer.getvalue())
        if "logits" in predictions:
            self.save_predictions(key, predictions["logits"], predictions["label"])
        else:
            self.save_token_predictions(key, predictions)
        self.write_json(self.model_file(key, "history.json"), history)
        self.delete(self.model_file(key, "failed.json"))
        self.write_json(self.model_file(key, "summary.json"), summary)

    def save_failure(self, key: str, message: str, details: Optional[str] = None) -> None:
        """Mark ``key`` failed: ``message`` is one line; ``details`` the worker's whole traceback, if any."""
        self.write_json(self.model_file(key, "failed.json"), {"message": message, "details": details})

    def failure_details(self, key: str) -> Optional[str]:
        """The whole traceback stored with a failure (None without one)."""
        name = self.model_file(key, "failed.json")
        return self.read_json(name).get("details") if self.exists(name) else None

    def skipped(self, key: str) -> Optional[dict]:
        """Why a planned generation was not trained (its chain stopped by itself), or None."""
        name = self.model_file(key, "skipped.json")
        return self.read_json(name) if self.exists(name) else None

    def save_skipped(self, key: str, record: dict) -> None:
        """Mark ``key`` skipped: its chain stopped before it (``record`` says after which generation, why)."""
        self.write_json(self.model_file(key, "skipped.json"), record)

    def is_settled(self, key: str) -> bool:
        """Finished, or skipped by its chain's stopping rule: nothing left to train."""
        return self.is_done(key) or self.skipped(key) is not None

    def clear_failure(self, key: str) -> None:
        self.delete(self.model_file(key, "failed.json"))

    def load_state(self, key: str) -> dict:
        import torch

        return torch.load(io.BytesIO(self.read_bytes(self.model_file(key, "model.pt"))), map_location="cpu",
                          weights_only=True)

    def save_predictions(self, key: str, logits: "torch.Tensor", labels: "torch.Tensor") -> None:
        """Test logits as an fp16 fixed-size-list column plus the int labels, as an Arrow IPC file."""
        import torch

        logits = logits.detach().to(torch.float16).cpu()
        classes = logits.shape[1]
        values = pa.array(logits.flatten().numpy(), type=pa.float16())
        table = pa.table({
            "logits": pa.FixedSizeListArray.from_arrays(values, classes),
            "label": pa.array(labels.cpu().numpy().astype("int64")),
        })
        self._write_arrow(key, table)

    def save_token_predictions(self, key: str, predictions: dict) -> None:
        """A language model's test stream: each target token's log-probability (float32), the model's
        top token and the target. Full distributions over a 10k vocabulary would be 100x larger; the
        target's probability is all an ensemble's perplexity needs."""
        table = pa.table({
            "target_logprob": pa.array(predictions["target_logprob"].float().cpu().numpy()),
            "argmax": pa.array(predictions["argmax"].cpu().numpy().astype("int32")),
            "label": pa.array(predictions["label"].cpu().numpy().astype("int64")),
        })
        self._write_arrow(key, table)

    def _write_arrow(self, key: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.write_bytes(self.prediction_file(key), sink.getvalue().to_pybytes())

    def prediction_columns(self, key: str) -> list[str]:
        """The column names of a model's prediction file, read from its schema alone (no data)."""
        with self.fs.open_input_file(self.prediction_path(key)) as source:
            return pa.ipc.open_file(source).schema.names

    def prediction_table(self, key: str) -> pa.Table:
        """The stored prediction file of a model as an Arrow table."""
        with self.fs.open_input_file(self.prediction_path(key)) as source:
            return pa.ipc.open_file(source).read_all()

    def load_predictions(self, key: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(logits as float32 (N, C), labels (N,)) of a stored model."""
        import torch

        table = self.prediction_table(key)
        column = table.column("logits").combine_chunks()
        classes = column.type.list_size
        logits = torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).astype("float32")).view(-1, classes)
        return logits, torch.from_numpy(table.column("label").to_numpy().copy())
