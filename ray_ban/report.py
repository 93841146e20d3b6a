"""``python -m ray_ban.report``: the entry point; the code is ``ray_ban.results.report``."""

import sys

from ray_ban.results.report import main

if __name__ == "__main__":
    sys.exit(main())
