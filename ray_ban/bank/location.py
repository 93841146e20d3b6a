"""Where the teacher bank is (``--teachers``, ``$RAY_BAN_TEACHERS`` or the per-user default) and what an
entry is called there."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

from ray_ban.store import RunStore, is_uri

DEFAULT_LOCATION = "~/.cache/ray-ban/teachers"
ENV = "RAY_BAN_TEACHERS"  # the default when --teachers is not given (tests and benchmarks set it to none)
OFF = ("none", "off", "")


def resolve_location(option: Optional[str], joined_cluster: bool) -> Optional[str]:
    """The bank ``--teachers`` names: ``none`` (or ``off``) turns it off; unset, ``$RAY_BAN_TEACHERS``,
    else the per-user default ``~/.cache/ray-ban/teachers`` for a local run and off on a joined cluster,
    whose trials may run on nodes that cannot see this machine's home folder (name a shared folder or a
    bucket there)."""
    option = option if option is not None else os.environ.get(ENV)
    if option is None:
        return None if joined_cluster else str(Path(DEFAULT_LOCATION).expanduser())
    if option.strip().lower() in OFF:
        return None
    return option if is_uri(option) else str(Path(option).expanduser().resolve())


def check_writable(location: str) -> None:
    """Create the bank and write a file there; raises OSError (or a pyarrow error) when it cannot."""
    bank = RunStore(location)
    bank.fs.create_dir(bank.base, recursive=True)
    probe = f".write-test-{uuid.uuid4().hex[:8]}"
    bank.write_bytes(probe, b"ok")
    bank.delete(probe)


def entry_name(key: str, precision: str) -> str:
    """The folder of a model in the bank: its key and the precision it ran in."""
    return f"{key}.{precision}"
