"""The Python API: run a sweep from a notebook or a script, load a space, read results back.

``run`` takes the command line's options as keyword arguments (``--gpus-per-worker 0.25`` is
``gpus_per_worker=0.25``, ``--search lr=...`` is ``search=["lr=..."]``) with the same defaults, so a
sweep means the same thing from both. Unlike the CLI it touches nothing of the caller's process: a
Ray session the caller started is joined and left running, file descriptors, loggers and the
matplotlib backend stay as they are (only a handler on ray-ban's own logger, for the run), and bad input raises (``SpaceError``, ``DataError``,
``UsageError``) instead of exiting.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

import pyarrow as pa


@dataclass
class Results:
    """A finished sweep: its results table, where it lives, and which chains failed (chain id -> message)."""

    table: pa.Table
    location: str
    failures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_pandas(self):
        return self.table.to_pandas()


# the command line's own options: listing, and the dry run with its plan in GPU-hours
CLI_ONLY = ("table", "list", "dry_run", "gpus", "gpu_price")


def options(space: str | Path, preset: str = "paper", **values: Any):
    """The sweep options for ``space``: the command line's defaults with ``values`` laid over them."""
    from ray_ban.cli.sweep import gpu_amount, parse_args

    args = parse_args([str(space)])
    args.preset = preset
    for name, value in values.items():
        if name in CLI_ONLY or not hasattr(args, name):
            raise TypeError(f"run() got an unknown option {name!r}; options are the command line's long options "
                            f"with underscores: {', '.join(sorted(k for k in vars(args) if k not in CLI_ONLY))}")
        setattr(args, name, value)
    if isinstance(args.gpus_per_worker, str):
        args.gpus_per_worker = gpu_amount(args.gpus_per_worker)
    if isinstance(args.seeds, (list, tuple, range)):
        args.seeds = ",".join(str(s) for s in args.seeds)
    if isinstance(args.search, str):
        args.search = [args.search]
    args.out = str(args.out)
    return args


def run(space: str | Path, preset: str = "paper", *, stream: Optional[TextIO] | bool = None, **values: Any) -> Results:
    """Train a sweep (a table name or a space file) and return its results.

    Its lines (one per chain event, the table, failures) are records of the ``ray_ban`` logger, shown
    on ``stream`` (stdout when None); ``stream=False`` shows nothing and leaves them to your logging."""
    from ray_ban.cli.bank_option import teacher_bank
    from ray_ban.cli.sweep import plan_from_args, validate_plan
    from ray_ban.orchestration.sweep import ray_address, run_sweep, use_token_auth_if_available
    from ray_ban.results.run_folder import prepare_run_dir, run_location
    from ray_ban.store import RunStore

    args = options(space, preset, **values)
    plan = plan_from_args(args)
    validate_plan(plan, args)
    args.teacher_bank = teacher_bank(args)
    store = RunStore(run_location(args.out, plan.name))
    prepare_run_dir(store, plan, args.resume, args.overwrite)
    if "ray" not in sys.modules and ray_address(args) != "local":
        use_token_auth_if_available()
    outcome = run_sweep(plan, args, store, own_process=False, stream=stream)
    return Results(outcome.table, store.location, {k: v for k, v in outcome.failures.items() if v})


def init_ray(address: str = "local", **ray_init_kwargs: Any) -> None:
    """Start (or join, with an ``address``) a Ray session set up as a sweep would set up its own, and
    leave it running: successive ``run`` calls then share it instead of each starting Ray.
    ``ray_init_kwargs`` go to ``ray.init`` over ray-ban's (``_temp_dir=...``, ``num_cpus=...``)."""
    from ray_ban.orchestration.sweep import init_ray as start

    start(address, **ray_init_kwargs)


def load_space(space: str | Path, preset: str = "paper", **overrides: Any):
    """A space file or shipped table as a validated ``SweepPlan`` (plain data: no torch, no Ray)."""
    from ray_ban.config.spaces import load

    return load(str(space), preset, overrides)


def read_results(location: str | Path) -> pa.Table:
    """A sweep's results.parquet (a run folder or a storage URI) as a pyarrow table."""
    from ray_ban.results.tables import read_results as read

    return read(location)
