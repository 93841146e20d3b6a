"""The Python API: run a sweep from a notebook or a script, load a space, read results back.

``run`` takes the command line's options as keyword arguments (``--gpus-per-worker 0.25`` is
``gpus_per_worker=0.25``, ``--search lr=...`` is ``search=["lr=..."]``) into the same ``SweepOptions``
with the same defaults, and the command line is argparse -> ``SweepOptions`` -> ``sweep``, as ``run``
is: a sweep means the same thing from both. Unlike the CLI it touches nothing of the caller's process: a
Ray session the caller started is joined and left running, file descriptors, other loggers and the
matplotlib backend stay as they are (ray-ban's own logger gets a handler for the run's duration), Tune's
settings for a sweep are in the environment for the sweep only, and bad input raises (``SpaceError``,
``DataError``, ``UsageError``) instead of exiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TextIO

import pyarrow as pa

from ray_ban.config.options import SweepOptions
from ray_ban.config.spaces import SweepPlan

if TYPE_CHECKING:
    from ray_ban.orchestration.sweep import SweepOutcome


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


# the command line's own options (listing, the dry run with its plan in GPU-hours) and what a run resolves
NOT_RUN_OPTIONS = ("table", "dry_run", "gpus", "gpu_price", "teacher_bank")


def options(space: str | Path, preset: str = "paper", **values: Any) -> SweepOptions:
    """The sweep options for ``space``: the command line's defaults with ``values`` laid over them."""
    from ray_ban.cli.sweep import gpu_amount

    allowed = [n for n in SweepOptions.names() if n not in NOT_RUN_OPTIONS]
    for name in values:
        if name not in allowed:
            raise TypeError(f"run() got an unknown option {name!r}; options are the command line's long options "
                            f"with underscores: {', '.join(sorted(allowed))}")
    if isinstance(values.get("gpus_per_worker"), str):
        values["gpus_per_worker"] = gpu_amount(values["gpus_per_worker"])
    if isinstance(values.get("seeds"), (list, tuple, range)):
        values["seeds"] = ",".join(str(s) for s in values["seeds"])
    if isinstance(values.get("search"), str):
        values["search"] = [values["search"]]
    for name in ("out", "data_root", "cluster_config", "teachers"):
        if isinstance(values.get(name), Path):
            values[name] = str(values[name])
    return SweepOptions(table=str(space), preset=preset, **values)


def prepared(options: SweepOptions) -> SweepPlan:
    """The plan ``options`` ask for, validated (data, architectures, pairs, resources), with the teacher
    bank resolved into ``options.teacher_bank``: everything checked before anything is written."""
    from ray_ban.cli.bank_option import teacher_bank
    from ray_ban.cli.sweep import plan_from_args, validate_plan

    plan = plan_from_args(options)
    validate_plan(plan, options)
    options.teacher_bank = teacher_bank(options)
    return plan


def sweep(options: SweepOptions, *, own_process: bool = False,
          stream: Optional[TextIO] | bool = None) -> tuple[SweepOutcome, str]:
    """Validate, prepare the run folder and train: ``(SweepOutcome, run location)``. What ``run`` and the
    command line share; ``own_process`` (the CLI's) lets the run quiet Ray's output in this process."""
    from ray_ban.orchestration.sweep import ray_address, run_sweep, use_token_auth_if_required
    from ray_ban.results.run_folder import prepare_run_dir, run_location
    from ray_ban.store import RunStore

    plan = prepared(options)
    store = RunStore(run_location(options.out, plan.name))
    prepare_run_dir(store, plan, options.resume, options.overwrite)
    use_token_auth_if_required(ray_address(options))
    return run_sweep(plan, options, store, own_process=own_process, stream=stream), store.location


def run(space: str | Path, preset: str = "paper", *, stream: Optional[TextIO] | bool = None, **values: Any) -> Results:
    """Train a sweep (a table name or a space file) and return its results.

    Its lines (one per chain event, the table, failures) are records of the ``ray_ban`` logger, shown
    on ``stream`` (stdout when None); ``stream=False`` shows nothing and leaves them to your logging."""
    outcome, location = sweep(options(space, preset, **values), stream=stream)
    return Results(outcome.table, location, {k: v for k, v in outcome.failures.items() if v})


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
