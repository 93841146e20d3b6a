"""CPU cost of the imports each per-chain Ray process pays (why chains avoid torch outside workers), and the CLI's.

Every chain starts a Tune trial actor, a Train controller and its workers as fresh Python processes.
Each line imports one module in a fresh interpreter, 3 rounds, and reports the median user+system CPU
seconds over the bare interpreter's start.

    .venv/bin/python benchmarks/import_costs.py
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys

import _common

MODULES = {
    "ray": "import ray",
    "ray.train.torch (a TorchTrainer's trial and controller)": "import ray.train.torch",
    "ray_ban.chain (the trial and controller now)": "import ray_ban.orchestration.chain",
    "ray_ban.chain_worker (a Train worker)": "import ray_ban.orchestration.chain_worker",
    "torch": "import torch",
    "ray_ban.cli.sweep (what --list, --schema and a broken space file import)": "import ray_ban.cli.sweep",
}


def cpu_seconds(code: str) -> float:
    """User + system CPU of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    bare = statistics.median(cpu_seconds("pass") for _ in range(3))
    rows = []
    for label, code in MODULES.items():
        seconds = statistics.median(cpu_seconds(code) for _ in range(3)) - bare
        rows.append({"import": label, "cpu_s": round(seconds, 2)})
        print(f"  {label}: {seconds:.2f} s", flush=True)
    print(_common.table(["import", "CPU s (median of 3)"], [[r["import"], r["cpu_s"]] for r in rows]))
    _common.write_result("import_costs", {"bare_interpreter_cpu_s": round(bare, 2), "imports": rows})


if __name__ == "__main__":
    main()
