"""How long ending a test cluster takes: SIGTERM to the `ray start --block` head's process group, then
SIGKILL after a grace period (``tests/cluster_helpers._end_group``), with the grace it had (10 s, plus a
1 s pause) and the one it has (2 s).

Each case starts the job-submission head the cluster tests use (2 CPUs, the dashboard on loopback) and
times ``_end_group`` alone. Writes ``benchmarks/results/cluster_teardown.json``.

    python benchmarks/cluster_teardown.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import cluster_helpers  # noqa: E402

GRACES = {"before: 10 s grace, then a 1 s pause": (10.0, 1.0), "now: 2 s grace": (2.0, 0.0)}


def timed_end(grace_s: float, pause_s: float) -> float:
    """Seconds ``_end_group`` takes to end a freshly started job head with this grace (and pause after it)."""
    plain_end = cluster_helpers._end_group
    taken = []

    def end(head, grace=grace_s):
        started = time.perf_counter()
        plain_end(head, grace)
        time.sleep(pause_s)  # the pause the old helper slept between its grace and SIGKILL
        taken.append(time.perf_counter() - started)

    cluster_helpers._end_group = end
    try:
        with cluster_helpers.autoscaling_cluster({}, dashboard=True, head_cpus=2):
            pass
    finally:
        cluster_helpers._end_group = plain_end
    return taken[0]


def main() -> None:
    rows = [{"case": case, "grace_s": grace, "teardown_s": round(timed_end(grace, pause), 1)}
            for case, (grace, pause) in GRACES.items()]
    path = _common.write_result("cluster_teardown", {"cases": rows})
    print(_common.table(["case", "teardown s"], [[r["case"], r["teardown_s"]] for r in rows]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
