"""``python -m ray_ban.board``: the entry point; the code is ``ray_ban.results.board``."""

import sys

from ray_ban.results.board import main

if __name__ == "__main__":
    sys.exit(main())
