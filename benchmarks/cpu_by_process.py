"""Where a command's CPU time goes, by kind of process: Ray's workers by the actor they run, Ray's own
daemons, the test or sweep process itself.

Runs COMMAND and samples /proc every ``--interval`` seconds: each process's user+system time is added to
the kind its command line names at that moment (a Ray worker's title changes from its start-up, to
``ray::IDLE``, to ``ray::<Actor>``). Only processes that are this script's descendants count, and the
time a process spends after its last sample is lost (at most one interval each), so short-lived
processes are undercounted. Writes ``benchmarks/results/cpu_by_process.json``.

    python benchmarks/cpu_by_process.py -- python -m pytest -n 0 -q tests/test_board.py -k tensorboard_serves
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
DAEMONS = {"raylet/raylet": "raylet", "gcs_server": "gcs_server", "dashboard/agent.py": "dashboard agent",
           "runtime_env/agent": "runtime env agent", "log_monitor.py": "log monitor", "monitor.py": "autoscaler monitor",
           "dashboard/dashboard.py": "dashboard"}


def kind(command_line: str) -> str:
    """What a process is, from its command line (a Ray worker's is its title)."""
    if command_line.startswith("ray::"):
        return "ray::" + re.match(r"ray::([A-Za-z_]*)", command_line).group(1)
    for marker, name in DAEMONS.items():  # before the workers: the raylet's own command line names default_worker.py
        if marker in command_line:
            return name
    if "default_worker.py" in command_line:
        return "ray worker starting"
    if "pytest" in command_line or "sys.stdin.readline" in command_line:  # pytest and its xdist workers
        return "test process"
    if "ray_ban" in command_line:
        return "ray-ban CLI"
    return "other: " + Path(command_line.split(" ")[0]).name


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (CPU ticks so far, command line) of ``root`` and every process below it."""
    parent, info = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        parent[int(entry)] = int(stat[1])
        info[int(entry)] = (int(stat[11]) + int(stat[12]), command)
    below = {root}
    changed = True
    while changed:
        grown = {pid for pid, ppid in parent.items() if ppid in below} - below
        below |= grown
        changed = bool(grown)
    return {pid: info[pid] for pid in below if pid in info and info[pid][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default: %(default)s)")
    parser.add_argument("--label", default="", help="the name of this measurement in the JSON (default: the command)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    started = time.perf_counter()
    process = subprocess.Popen(command)
    seconds, processes = defaultdict(float), defaultdict(set)
    last: dict[int, int] = {}
    while True:
        running = process.poll() is None
        for pid, (ticks, command_line) in descendants(process.pid).items():
            name = kind(command_line)
            seconds[name] += (ticks - last.get(pid, 0)) / TICKS
            processes[name].add(pid)
            last[pid] = ticks
        if not running:
            break
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    rows = sorted(({"kind": k, "cpu_s": round(v, 2), "processes": len(processes[k])} for k, v in seconds.items()),
                  key=lambda row: -row["cpu_s"])
    total = sum(row["cpu_s"] for row in rows)
    label = args.label or " ".join(command)
    path = _common.update_result("cpu_by_process", "measurements",
                                 [{"label": label, "command": command, "exit_code": process.returncode, "wall_s": round(wall, 1),
                                   "cpu_s": round(total, 1), "by_kind": rows}], key="label")
    print(_common.table(["kind", "CPU s", "processes"], [[r["kind"], r["cpu_s"], r["processes"]] for r in rows]))
    print(f"{total:.1f} CPU s in {wall:.1f} s; exit code {process.returncode}; written to {path}")


if __name__ == "__main__":
    main()
