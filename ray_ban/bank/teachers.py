"""Entries of the teacher bank: found by key and identity digest, copied into a run folder, published whole,
and the protocol that trains a missing one once however many sweeps want it at the same time.

Publishing writes a fresh version folder, then ``complete.json`` (one atomic write) naming it, so a reader
sees a whole entry or none, and two publishers of the same model cannot mix their files. Two sweeps that
need the same missing model at once train it once: the first takes the lease (local folders: an atomic
``link``, which fails if the lease exists; object stores: write, wait ``settle_s``, read back and keep it
only if it still names this owner), trains, publishes and lets go; the other waits, polling, then copies
the published entry. While it trains, the owner rewrites the lease every ``heartbeat_s`` with a higher
count; a dead owner's lease is taken over (``lease``). If the owner fails, it releases the lease and the
waiter trains the model itself; a failed model is never published.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from ray_ban.bank.lease import LEASE, Lease, Sighting, default_owner, expired
from ray_ban.store import RunStore

ENTRY = "complete.json"
FILES = ("model.pt", "history.json")  # then predictions.arrow, and summary.json last

log = logging.getLogger("ray_ban.bank")


class TeacherBank:
    """Reuse, train-once leases and publishing of generation-0 models at ``location``."""

    def __init__(self, location: str, *, ttl_s: float = 600.0, heartbeat_s: float = 30.0, poll_s: float = 5.0,
                 settle_s: float = 2.0, owner: Optional[dict] = None):
        self.location = location
        self.store = RunStore(location)
        self.ttl_s, self.heartbeat_s, self.poll_s, self.settle_s = ttl_s, heartbeat_s, poll_s, settle_s
        self.me = owner or default_owner()

    # -- entries ---------------------------------------------------------------------------------
    def find(self, name: str, digest: str) -> Optional[dict]:
        """The complete entry ``name`` if its identity digest is ``digest``, else None."""
        try:
            record = self.store.read_json(f"{name}/{ENTRY}")
        except (OSError, ValueError):
            return None
        if record.get("digest") != digest:
            log.warning("teacher bank entry %s was made for another identity; not reused", self.store.uri(name))
            return None
        return record

    def copy_to(self, name: str, record: dict, run: RunStore, key: str) -> str:
        """Put entry ``name`` into the run folder as model ``key`` (hard links between local folders, else
        copies), its summary last and marked ``reused_from``; returns the entry's location."""
        where = self.store.uri(name)
        folder = f"{name}/{record['version']}"
        for file, target in [*((f, run.model_file(key, f)) for f in FILES),
                             ("predictions.arrow", run.prediction_file(key))]:
            transfer(self.store, f"{folder}/{file}", run, target)
        summary = {**self.store.read_json(f"{folder}/summary.json"), "reused_from": where}
        run.clear_failure(key)
        run.write_json(run.model_file(key, "summary.json"), summary)
        return where

    def publish(self, run: RunStore, key: str, name: str, digest: str) -> str:
        """Copy finished model ``key`` from the run folder into a new version of entry ``name``, then
        mark the entry complete (one atomic write); returns the entry's location."""
        version = f"v-{uuid.uuid4().hex[:12]}"
        folder = f"{name}/{version}"
        for file in FILES:
            transfer(run, run.model_file(key, file), self.store, f"{folder}/{file}")
        transfer(run, run.prediction_file(key), self.store, f"{folder}/predictions.arrow")
        summary = run.summary(key)
        summary.pop("reused_from", None)
        self.store.write_json(f"{folder}/summary.json", summary)
        self.store.write_json(f"{name}/{ENTRY}", {"digest": digest, "key": key, "version": version,
                                                  "published_at": time.time(), "trained_in": run.location})
        return self.store.uri(name)

    # -- leases ----------------------------------------------------------------------------------
    def read_lease(self, name: str) -> Optional[dict]:
        """The lease of ``name`` as written, None without one ({} while unreadable: being replaced)."""
        try:
            return json.loads(self.store.read_bytes(f"{name}/{LEASE}"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {} if self.store.exists(f"{name}/{LEASE}") else None

    def try_lease(self, name: str) -> Optional["Lease"]:
        """Take the lease of ``name`` if nobody holds it; None if someone does."""
        record = {**self.me, "beat": 0, "heartbeat_at": time.time(), "started_at": time.time()}
        data = (json.dumps(record) + "\n").encode()
        path = f"{name}/{LEASE}"
        if not self.store.remote:
            target = Path(self.store.path(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{LEASE}.{uuid.uuid4().hex[:8]}")
            temp.write_bytes(data)
            try:
                os.link(temp, target)  # atomic: fails if a lease is there, and a lease is never seen half-written
            except FileExistsError:
                return None
            finally:
                temp.unlink(missing_ok=True)
        else:
            if self.store.exists(path):
                return None
            self.store.write_bytes(path, data)
            time.sleep(self.settle_s)  # a rival that wrote after us wins; we see its owner on reading back
            if (self.read_lease(name) or {}).get("owner") != self.me["owner"]:
                return None
        return Lease(self, name, record)

    def expired(self, lease: dict, seen: Sighting) -> bool:
        """Whether a lease's owner is dead (``lease.expired`` at this bank's ttl); updates ``seen``."""
        return expired(lease, seen, self.ttl_s)

    def break_lease(self, name: str, stale: dict) -> None:
        """Delete a dead lease, unless it changed since it was judged dead (its owner came back, or a
        rival took it over first)."""
        if self.read_lease(name) == stale:
            self.store.delete(f"{name}/{LEASE}")

    # -- the whole protocol ----------------------------------------------------------------------
    def provide(self, name: str, digest: str, run: RunStore, key: str, train: Callable[[], None],
                on_wait: Callable[[dict], None] = lambda lease: None) -> Optional[str]:
        """Make model ``key`` finished in ``run``: copied from the bank (returns the entry's location), or
        trained by ``train()`` under this bank's lease and then published (returns None). Waits while
        another owner trains it; takes over a dead owner's lease; ``train`` raising releases the lease."""
        seen = Sighting()
        while True:
            record = self.find(name, digest)
            if record is not None:
                return self.copy_to(name, record, run, key)
            lease = self.try_lease(name)
            if lease is not None:
                with lease:
                    record = self.find(name, digest)  # published between our look and our lease
                    if record is not None:
                        return self.copy_to(name, record, run, key)
                    train()
                    if run.is_done(key):
                        try:
                            self.publish(run, key, name, digest)
                        except Exception as error:  # noqa: BLE001 - the run has its model; the bank is a cache
                            log.warning("model %s not published to the teacher bank %s: %s", key, self.location, error)
                return None
            held = self.read_lease(name)
            if held is None:
                continue  # let go just now: look again
            if self.expired(held, seen):  # an unreadable lease ({}) too, once it stays so for ttl_s
                log.warning("teacher bank: lease of %s by %s is dead; taking it over", name, held.get("owner"))
                self.break_lease(name, held)
                continue
            on_wait(held)
            time.sleep(self.poll_s)


def transfer(source: RunStore, name: str, target: RunStore, target_name: str) -> None:
    """Put a file of one store into another: a hard link between local folders (a run folder's files are
    only ever replaced by renames, never changed in place, so sharing the data is safe, and a 64 MB
    teacher is stored once), else a copy."""
    if not source.remote and not target.remote:
        destination = Path(target.path(target_name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = destination.with_name(f".{destination.name}.link-{uuid.uuid4().hex[:8]}")
        try:
            os.link(source.path(name), temp)
            os.replace(temp, destination)
            return
        except OSError:  # another filesystem, or one without hard links: copy
            temp.unlink(missing_ok=True)
    target.write_bytes(target_name, source.read_bytes(name))
