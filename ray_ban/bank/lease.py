"""A teacher-bank lease: who trains a missing entry now, renewed by a heartbeat while they do.

A lease is dead, and taken over, when its owner's process is gone (same host), when a waiter has seen
its heartbeat count unchanged for ``ttl_s`` by the waiter's own clock (no comparison of two machines'
clocks), or when its last heartbeat is over twice ``ttl_s`` old. Should a lease ever be taken twice,
both train and the last ``complete.json`` wins: work is wasted, nothing is corrupted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ray_ban.bank.teachers import TeacherBank

LEASE = "lease.json"

log = logging.getLogger("ray_ban.bank")


def default_owner() -> dict:
    """This process as a lease owner: host and pid (a dead pid on this host frees the lease at once)."""
    return {"owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", "host": socket.gethostname(),
            "pid": os.getpid()}


@dataclass
class Sighting:
    """What a waiter last saw of a lease, and when by its own (monotonic) clock."""

    owner: Optional[str] = None
    beat: Optional[int] = None
    since: float = field(default_factory=time.monotonic)


def expired(lease: dict, seen: Sighting, ttl_s: float) -> bool:
    """Whether a lease's owner is dead (see the module docstring); updates ``seen``."""
    if lease.get("owner") != seen.owner or lease.get("beat") != seen.beat:
        seen.owner, seen.beat, seen.since = lease.get("owner"), lease.get("beat"), time.monotonic()
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int) and not alive(lease["pid"]):
        return True
    if time.time() - float(lease.get("heartbeat_at", time.time())) > 2 * ttl_s:
        return True
    return time.monotonic() - seen.since > ttl_s


class Lease:
    """A held lease: a daemon thread renews its heartbeat until the ``with`` block ends, then it is deleted."""

    def __init__(self, bank: "TeacherBank", name: str, record: dict):
        self.bank, self.name, self.record = bank, name, dict(record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"bank-lease-{name}")
        self.lost = False

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.bank.heartbeat_s + 5)
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.bank.heartbeat_s):
            current = self.bank.read_lease(self.name)
            if not current or current.get("owner") != self.record["owner"]:
                self.lost = True  # judged dead and taken over: keep training, publishing stays safe
                log.warning("teacher bank: lease of %s was taken over by %s", self.name, (current or {}).get("owner"))
                return
            self.record.update(beat=self.record["beat"] + 1, heartbeat_at=time.time())
            self.bank.store.write_json(f"{self.name}/{LEASE}", self.record)

    def release(self) -> None:
        """Delete the lease if it is still this owner's."""
        try:
            if (self.bank.read_lease(self.name) or {}).get("owner") == self.record["owner"]:
                self.bank.store.delete(f"{self.name}/{LEASE}")
        except OSError as error:  # the waiter will see it die instead
            log.warning("teacher bank: lease of %s not released: %s", self.name, error)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
