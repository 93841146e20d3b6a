"""The test process's own descendants, read from /proc (no psutil): Ray's raylet and workers run in
sessions of their own, so a process group does not reach them, but their parent links do."""

import contextlib
import os
import signal
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (each /proc/PID/stat names its parent after the command)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def command_line(pid: int) -> str:
    """The process's command line as it shows itself (Ray's workers retitle theirs ``ray::Actor.method``); '' once gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until_gone(pid: int, timeout_s: float) -> None:
    """Return once ``pid`` has exited; TimeoutError naming it if it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} ({command_line(pid)}) still running after {timeout_s} s")
        time.sleep(0.05)


def own_processes_titled(title: str, timeout_s: float = 60.0) -> list[int]:
    """This test process's descendants whose command line starts with ``title`` (waiting up to ``timeout_s``
    for at least one, as an actor restarted by Ray comes up in a new process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [pid for pid in descendants(os.getpid()) if command_line(pid).startswith(title) and alive(pid)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant at once."""
    doomed = descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    for child in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
