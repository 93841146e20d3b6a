"""``python -m ray_ban.sweep``: the entry point; the code is ``ray_ban.cli.sweep``."""

import sys

from ray_ban.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
