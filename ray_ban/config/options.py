"""How to run a sweep, apart from what its space file trains: the command line's options as plain data.

``python -m ray_ban.sweep`` parses its arguments into a ``SweepOptions`` (argparse takes its defaults
from here) and ``ray_ban.run`` builds one from keyword arguments, so a sweep means the same from both:
``--cpus-per-worker 0.5`` is ``cpus_per_worker=0.5``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union


@dataclass
class SweepOptions:
    """The options of one sweep; see ``python -m ray_ban.sweep --help`` for each one's meaning."""

    table: str = ""  # a shipped table's name or a search-space file
    preset: str = "paper"
    dataset: Optional[str] = None
    label_column: Optional[str] = None
    data_root: Optional[str] = None
    download: bool = False
    out: str = "./runs"
    generations: Optional[int] = None
    seeds: Optional[str] = None  # "0-4", "0-2,7"
    workers: int = 1
    cpus_per_worker: Optional[float] = None  # None: the preset's resources.cpus_per_worker, else 1
    gpus_per_worker: Union[str, float] = "auto"
    max_concurrent: Optional[int] = None
    max_failures: int = 3
    address: Optional[str] = None
    cluster_config: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    compile: bool = False
    teachers: Optional[str] = None
    search: list = field(default_factory=list)  # NAME=SPEC strings
    num_samples: Optional[int] = None
    search_alg: Optional[str] = None
    scheduler: Optional[str] = None
    # the --dry-run plan only
    dry_run: bool = False
    gpus: Optional[int] = None
    gpu_price: Optional[float] = None
    # resolved from ``teachers`` before a run (None: no bank), not set by a caller
    teacher_bank: Optional[str] = None

    @classmethod
    def names(cls) -> list[str]:
        """Every option's name (the command line's long option with underscores)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls, values: Any) -> "SweepOptions":
        """The options among ``values``' attributes (an argparse namespace); others (``list``) are not options."""
        return cls(**{name: getattr(values, name) for name in cls.names() if hasattr(values, name)})


DEFAULTS = SweepOptions()
