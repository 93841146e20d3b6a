"""A test hook shared by every layer: with RAY_BAN_AUDIT_DIR set, processes record what they did as JSON.

Workers record the shard each rank trained on, final weight digests and where Ray placed them; chain
trials record the process they ran in. Without the variable nothing is computed. Plain standard library,
so the torch-free trial and the pure-PyTorch core can both use it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

AUDIT_ENV = "RAY_BAN_AUDIT_DIR"


def audit(name: str, value_fn: Callable[[], object]) -> None:
    """With RAY_BAN_AUDIT_DIR set, write ``value_fn()`` as JSON to that folder's ``name``; without it, nothing."""
    folder = os.environ.get(AUDIT_ENV)
    if folder:
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value_fn()))
