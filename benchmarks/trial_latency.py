"""How long a sweep of two sequential trials takes, this checkout against an earlier commit (A/B, one machine).

The sweep is the smallest real one: a ``wrn-10-1`` teacher on 256 generated images for one epoch, then
its BAN-1 (two Tune trials, each a Train run), run ``--rounds`` times in one Ray session through
``ray_ban.run``, as a notebook would. Each source (this checkout, and ``--against``'s commit checked out
in a temporary git worktree) runs in a process of its own with its ``ray_ban`` first on ``PYTHONPATH``;
the two alternate round by round so that a busy spell of the machine hits both. The first sweep of a
session (relay start, first imports) is reported apart from the rest; ``ray.timeline()`` counts the
processes that ran each later sweep's trials.
Writes ``benchmarks/results/trial_latency.json``.

    python benchmarks/trial_latency.py --against a89f3e0 --rounds 4 --sessions 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SPACE = {
    "name": "latency", "dataset": "synthetic", "seeds": [0], "train_subset": 256, "test_subset": 100,
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "columns": {"Teacher": "teacher", "BAN-1": "ban/1"},
    "rows": [{"row": "A", "teacher": "wrn-10-1", "chains": {"ban": {"loss": "ban", "generations": 1}}}],
}

SESSION = r'''
import json, sys, tempfile, time
from pathlib import Path
import ray, yaml
import ray_ban
space, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
folder = Path(tempfile.mkdtemp(prefix="rb-lat-", dir="/tmp"))
(folder / "space.yaml").write_text(yaml.safe_dump(space))
ray_ban.init_ray(num_cpus=2, _temp_dir=str(folder / "ray"))
sweeps = []
for index in range(rounds):
    started = time.time()
    results = ray_ban.run(folder / "space.yaml", out=folder / f"out{index}", stream=False)
    sweeps.append({"started": started, "wall_s": time.time() - started, "ok": results.ok})
# Tune's calls of the trial actors' "train" (tid names the worker process that ran it)
events = [{"start": e["ts"] / 1e6, "worker": e["tid"]} for e in ray.timeline() if e.get("ph") == "X" and e.get("name") == "train"]
ray.shutdown()
print("RESULT " + json.dumps({"module": ray_ban.__file__, "sweeps": sweeps, "events": events}))
'''


def session(source: Path, rounds: int) -> dict:
    """One Ray session of ``rounds`` sweeps with ``source``'s ray_ban, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(source), "RAY_ADDRESS": "", "RAY_BAN_TEACHERS": "none"}
    done = subprocess.run([sys.executable, "-c", SESSION, json.dumps(SPACE), str(rounds)], capture_output=True,
                          text=True, cwd=source, env=env, timeout=1800)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    found = json.loads(line[len("RESULT "):])
    if not found["module"].startswith(str(source)):
        raise RuntimeError(f"ran {found['module']}, not the ray_ban of {source}")
    return found


def trial_processes(found: dict) -> list[int]:
    """Per later sweep: how many worker processes ran its trials (Tune's ``train`` calls in the timeline)."""
    counts = []
    for sweep in found["sweeps"][1:]:
        start, end = sweep["started"], sweep["started"] + sweep["wall_s"]
        counts.append(len({e["worker"] for e in found["events"] if start <= e["start"] <= end}))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="a89f3e0", help="the commit to compare with (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="sweeps per Ray session (the first is reported apart)")
    parser.add_argument("--sessions", type=int, default=2, help="Ray sessions per source, alternating")
    args = parser.parse_args()
    with _common.worktree(args.against) as worktree:
        sources = {"this checkout": ROOT, f"commit {args.against}": worktree}
        runs = {name: [] for name in sources}
        for _ in range(args.sessions):
            for name, source in sources.items():
                runs[name].append(session(source, args.rounds))
    entries = []
    for name, found in runs.items():
        first = [f["sweeps"][0]["wall_s"] for f in found]
        later = [s["wall_s"] for f in found for s in f["sweeps"][1:]]
        entries.append({
            "source": name,
            "first_sweep_s": _common.summarise(first),
            "later_sweeps_s": _common.summarise(later),
            "trial_processes_per_later_sweep": sorted({n for f in found for n in trial_processes(f)}),
            "all_ok": all(s["ok"] for f in found for s in f["sweeps"]),
        })
    path = _common.write_result("trial_latency", {"against": args.against, "rounds": args.rounds,
                                                  "sessions": args.sessions, "space": SPACE, "entries": entries})
    print(_common.table(["source", "first sweep s (median)", "later sweeps s (median)", "trial processes per sweep"],
                        [[e["source"], round(e["first_sweep_s"]["median"], 1), round(e["later_sweeps_s"]["median"], 1),
                          e["trial_processes_per_later_sweep"]] for e in entries]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
