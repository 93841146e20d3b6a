"""The test suite against an earlier one on the same machine: the whole suites, and the same tests.

The earlier suite is ``--against``'s commit (default 26452ad, the suite when issue 18 was filed: 161
tests) checked out in a temporary git worktree and run with this venv and its own ``ray_ban`` first on
``PYTHONPATH``. "The same tests" are this checkout's tests whose ids the earlier suite also collects (a
test that has since been parametrized counts with all its cases). Each run is ``python -m pytest -q``
with nothing else on the machine; the times are pytest's own. The earlier suite and the same tests run
serially, as the earlier suite did; this checkout's whole suite and fast tier run as the README runs them
(pytest-xdist, ``-n auto``: one worker per core) and, for comparison, serially (``-n 0``). Writes
``benchmarks/results/suite_like_for_like.json``.

    python benchmarks/suite_like_for_like.py                          # every run below
    python benchmarks/suite_like_for_like.py --runs earlier whole fast  # some of them
    python benchmarks/suite_like_for_like.py --runs whole earlier --rounds 2  # in turn, twice

The machine's speed moves by the hour, so ``--rounds N`` runs the chosen runs in turn N times (entries
"<run>, round k"), and compares only figures of one invocation.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"earlier": "earlier suite", "same": "the same tests now", "whole": "whole suite now",
        "whole-serial": "whole suite now, serial (-n 0)", "fast": "fast tier now",
        "fast-serial": "fast tier now, serial (-n 0)"}


def collected(tree: Path) -> list[str]:
    """The test ids pytest collects in ``tree`` (with that tree's ray_ban first on the path)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    return [line.strip() for line in done.stdout.splitlines() if "::" in line]


def timed_pytest(tree: Path, ids: list[str]) -> dict:
    """``pytest -q -rfE`` of ``ids`` in ``tree``: pytest's summary line, its seconds, the wall time, and the ids of
    the tests that failed or errored (from pytest's short summary)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *ids], capture_output=True,
                          text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.perf_counter() - started
    summary = next((line for line in reversed(done.stdout.splitlines()) if re.search(r"\d+ (passed|failed)", line)), "")
    seconds = re.search(r"in ([\d.]+)s", summary)
    passed = re.search(r"(\d+) passed", summary)
    failed = [line.split(" ", 1)[1].split(" - ")[0] for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"summary": summary.strip("= "), "pytest_s": float(seconds.group(1)) if seconds else None, "wall_s": wall,
            "exit_code": done.returncode, "passed": int(passed.group(1)) if passed else 0, "failed_tests": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="26452ad", help="the earlier commit (default: %(default)s)")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS), help="default: all")
    parser.add_argument("--rounds", type=int, default=1, help="run them in turn this many times (default: %(default)s)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    with _common.worktree(args.against) as earlier_tree:
        earlier_ids = collected(earlier_tree)
        now_ids = collected(ROOT)
        plain = {i.split("[")[0] for i in earlier_ids}
        same = [i for i in now_ids if i in earlier_ids or (i.split("[")[0] in plain and "[" in i)]
        arguments = {"earlier": (earlier_tree, ["-n", "0", "tests"]), "same": (ROOT, ["-n", "0", *same]),
                     "whole": (ROOT, ["tests"]), "whole-serial": (ROOT, ["-n", "0", "tests"]),
                     "fast": (ROOT, ["-m", "not ray", "tests"]), "fast-serial": (ROOT, ["-n", "0", "-m", "not ray", "tests"])}
        runs = {(RUNS[run] if args.rounds == 1 else f"{RUNS[run]}, round {round_}"): timed_pytest(*arguments[run])
                for round_ in range(1, args.rounds + 1) for run in args.runs}
    unmatched = sorted({i.split("[")[0] for i in earlier_ids} - {i.split("[")[0] for i in same})
    path = _common.update_result("suite_like_for_like", "runs",
                                 [{"run": name, "commit": commit, "against": args.against, "earlier_tests": len(earlier_ids),
                                   "same_tests": len(same), "unmatched_earlier_tests": unmatched, **result}
                                  for name, result in runs.items()], key="run")
    print(_common.table(["run", "passed", "pytest s", "summary"],
                        [[name, r["passed"], r["pytest_s"], r["summary"]] for name, r in runs.items()]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
