"""``ray-ban sweep|report|board|export ...``: the installed command, one word per ``python -m`` entry point."""

from __future__ import annotations

import sys
from typing import Optional

COMMANDS = {
    "sweep": ("ray_ban.sweep", "train a table's generation chains (python -m ray_ban.sweep)"),
    "report": ("ray_ban.report", "write report.md and figures from results.parquet (python -m ray_ban.report)"),
    "board": ("ray_ban.board", "serve a sweep's TensorBoard runs (python -m ray_ban.board)"),
    "export": ("ray_ban.data.export", "stage CIFAR-10/100 as Hugging Face Parquet (python -m ray_ban.data.export)"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ray-ban {" + ",".join(COMMANDS) + "} ...\n")
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:7} {what}")
        return 0 if argv else 2
    if argv[0] == "--version":
        from ray_ban import __version__

        print(f"ray-ban {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"ray-ban: error: unknown command '{argv[0]}'; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from importlib import import_module

    return import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
