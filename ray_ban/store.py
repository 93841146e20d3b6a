"""The run folder of one sweep on disk, with every file written atomically (temp name, then rename).

Layout of ``<out>/<sweep>/``::

    sweep.json                 the plan this folder belongs to (refuses to mix sweeps)
    models/<key>/model.pt      final weights of each trained model
    models/<key>/history.json  per-epoch reports
    models/<key>/summary.json  final metrics; its presence marks the model finished
    models/<key>/failed.json   why a model failed (NaN loss, ...)
    predictions/<key>.arrow    test logits as fp16 (Arrow IPC), with the labels; for a language model
                               each test token's target log-probability and top token
    results.parquet, table.md  written by ray_ban.results
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import torch


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


def atomic_write_json(path: Path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=True, default=str) + "\n").encode())


class RunStore:
    """Reads and writes the files of one sweep's run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def model_dir(self, key: str) -> Path:
        return self.root / "models" / key

    def prediction_path(self, key: str) -> Path:
        return self.root / "predictions" / f"{key}.arrow"

    def is_done(self, key: str) -> bool:
        return (self.model_dir(key) / "summary.json").is_file()

    def failure(self, key: str) -> Optional[str]:
        path = self.model_dir(key) / "failed.json"
        return json.loads(path.read_text())["message"] if path.is_file() else None

    def summary(self, key: str) -> dict:
        return json.loads((self.model_dir(key) / "summary.json").read_text())

    def history(self, key: str) -> list[dict]:
        path = self.model_dir(key) / "history.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def save_model(self, key: str, state_dict: dict, predictions: dict, history: list[dict], summary: dict) -> None:
        """Store a finished model; summary.json goes last, so a crash leaves it unfinished, not corrupt.

        ``predictions`` is the generation's ``test_predictions()``: ``logits`` and ``label`` for an
        image model, per-token ``target_logprob``, ``argmax`` and ``label`` for a language model."""
        folder = self.model_dir(key)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        atomic_write_bytes(folder / "model.pt", buffer.getvalue())
        if "logits" in predictions:
            self.save_predictions(key, predictions["logits"], predictions["label"])
        else:
            self.save_token_predictions(key, predictions)
        atomic_write_json(folder / "history.json", history)
        (folder / "failed.json").unlink(missing_ok=True)
        atomic_write_json(folder / "summary.json", summary)

    def save_failure(self, key: str, message: str) -> None:
        atomic_write_json(self.model_dir(key) / "failed.json", {"message": message})

    def clear_failure(self, key: str) -> None:
        (self.model_dir(key) / "failed.json").unlink(missing_ok=True)

    def load_state(self, key: str) -> dict:
        return torch.load(self.model_dir(key) / "model.pt", map_location="cpu", weights_only=True)

    def save_predictions(self, key: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Test logits as an fp16 fixed-size-list column plus the int labels, as an Arrow IPC file."""
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
        def write(temp: Path) -> None:
            with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)

        atomic_write_with(self.prediction_path(key), write)

    def prediction_table(self, key: str) -> pa.Table:
        """The stored prediction file of a model as an Arrow table."""
        with pa.memory_map(str(self.prediction_path(key))) as source:
            return pa.ipc.open_file(source).read_all()

    def load_predictions(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits as float32 (N, C), labels (N,)) of a stored model."""
        table = self.prediction_table(key)
        column = table.column("logits").combine_chunks()
        classes = column.type.list_size
        logits = torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).astype("float32")).view(-1, classes)
        return logits, torch.from_numpy(table.column("label").to_numpy().copy())
