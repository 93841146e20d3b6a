"""``--teachers``: the teacher bank a sweep reuses generation-0 models from, checked before anything runs."""

from __future__ import annotations

import os
from typing import Optional

from ray_ban import bank, log
from ray_ban.config.options import SweepOptions
from ray_ban.errors import UsageError
from ray_ban.orchestration.sweep import ray_address
from ray_ban.results.run_folder import _first_line


def teacher_bank(args: SweepOptions) -> Optional[str]:
    """The teacher bank's location (None: off); one named with --teachers (or $RAY_BAN_TEACHERS) must be
    writable, the default one is turned off with a warning if it is not."""
    location = bank.resolve_location(args.teachers, joined_cluster=ray_address(args) != "local")
    if location is None or args.dry_run:
        return location
    try:
        bank.check_writable(location)
    except Exception as error:  # noqa: BLE001 - OSError or a storage error: one line either way
        if args.teachers is not None or bank.ENV in os.environ:  # named, not the default
            raise UsageError(f"cannot write to the teacher bank {location} ({_first_line(error)}): choose a writable "
                             "--teachers, or --teachers none") from None
        log.get("bank").warning(f"ray-ban: warning: teacher bank {location} not writable ({_first_line(error)}); "
                                "training every model (--teachers none silences this)")
        return None
    return location
