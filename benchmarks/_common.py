"""Helpers shared by the benchmark scripts: machine info, result files, small tables."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# every benchmark sweep trains its own models: a teacher bank would turn a repeated round into a copy
os.environ.setdefault("RAY_BAN_TEACHERS", "none")
CIFAR_DIR = Path("/work/shared/data/cifar10-jpeg")


def machine_info() -> dict:
    """What the numbers were measured on (the 2-core CPU machine is usually shared with other work)."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "loadavg_at_end": load,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cifar_spec_or_synthetic() -> str:
    """The real CIFAR-10 Parquet folder when present, else the generated synthetic set."""
    if (CIFAR_DIR / "train.parquet").is_file() and (CIFAR_DIR / "test.parquet").is_file():
        return f"parquet:{CIFAR_DIR}"
    return "synthetic"


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A temporary git worktree of this repository at ``revision`` (for A/B runs against an earlier commit)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="rb-worktree-") as folder:
        tree = Path(folder) / revision
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=root, check=True,
                       capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False)


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, **payload, "machine": machine_info()}
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def update_result(name: str, list_key: str, entries: list[dict], key: str) -> Path:
    """Merge ``entries`` into the ``list_key`` list of results/<name>.json, replacing those with the same
    ``key``: a script run for some cases keeps the others' figures. Each entry records when and how it
    was measured, since the file may then hold entries from several runs."""
    path = RESULTS / f"{name}.json"
    kept = json.loads(path.read_text()).get(list_key, []) if path.is_file() else []
    machine = machine_info()
    stamped = [{**e, "measured": {"date": machine["date"], "command": machine["command"], "cpu_model": machine["cpu_model"],
                                  "loadavg_at_end": machine["loadavg_at_end"]}} for e in entries]
    new_keys = {e[key] for e in entries}
    merged = [e for e in kept if e.get(key) not in new_keys] + stamped
    return write_result(name, {list_key: merged})


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summarise(values: Sequence[float]) -> dict:
    values = list(values)
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    rows = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3f}"
    return str(value)
