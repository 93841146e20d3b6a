"""Whether a Ray cluster's GCS refuses a driver that sends no auth token: ``python -m
ray_ban.orchestration.auth_probe HOST:PORT`` exits 3 when it does, 0 when it does not.

Run in a process of its own by ``sweep.use_token_auth_if_required``: Ray's C++ client logs the refusal
to stderr, and a sweep's bad-input error must stay one line."""

from __future__ import annotations

import sys

REFUSED = 3


def main(address: str) -> int:
    import ray
    from ray._raylet import GcsClient

    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        return REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
