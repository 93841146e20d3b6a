"""A per-node cache of decoded datasets and per-node locks, so chains packed on one node decode and download once.

Each entry is a folder ``<cache root>/<key>/`` of ``.npy`` arrays and a ``meta.json``, built in a
temporary folder beside it and renamed into place whole: a folder that exists is complete. Building
runs under a file lock (``filelock``, an ``flock`` released by the kernel if its holder dies), so of
several processes asking at once one builds and the others wait and read what it wrote. The root is
``$RAY_BAN_DATA_CACHE``, else ``<system temp dir>/ray-ban-data``; delete it at any time to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

CACHE_ENV = "RAY_BAN_DATA_CACHE"
META = "meta.json"


def cache_root() -> Path:
    """The node's cache folder: ``$RAY_BAN_DATA_CACHE``, else ``<tmp>/ray-ban-data``."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "ray-ban-data").expanduser()


def content_key(label: str, material: object) -> str:
    """A folder name for cached content: a readable ``label`` and a digest of everything the content depends on."""
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", label).strip("._")[:40] or "data"
    return f"{readable}-{digest}"


def node_lock(name: str) -> FileLock:
    """An exclusive lock shared by every process of this node (a file under the cache root's ``locks/``)."""
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name}.lock"))


def cached_arrays(key: str, build: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata stored under ``key``; ``build()`` makes them once per node if they are not there yet."""
    folder = cache_root() / key
    if folder.is_dir():  # renamed into place only once complete: no lock needed to read it
        found = _read(folder)
        if found is not None:
            return found
    with node_lock(key):
        if folder.is_dir():  # another process built it while this one waited
            found = _read(folder)
            if found is not None:
                return found
            shutil.rmtree(folder, ignore_errors=True)  # unreadable (a disk error, a foreign edit): rebuild it
        arrays, meta = build()
        _write(folder, arrays, meta)
        return arrays, meta


def _read(folder: Path):
    try:
        meta = json.loads((folder / META).read_text())
        return {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in meta["arrays"]}, meta["meta"]
    except (OSError, ValueError, KeyError):
        return None


def _write(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Fill a temporary folder beside ``folder``, then rename it into place in one step."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    temp.mkdir()
    try:
        for name, array in arrays.items():
            with open(temp / f"{name}.npy", "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        (temp / META).write_text(json.dumps({"arrays": sorted(arrays), "meta": meta}, sort_keys=True))
        os.replace(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
