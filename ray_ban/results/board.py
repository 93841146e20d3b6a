"""``python -m ray_ban.board <out>/<sweep>``: TensorBoard on a sweep's runs, on a free port.

The same as ``tensorboard --logdir <out>/<sweep>/tensorboard``, with the port chosen for you and the
URL printed first, so it can be started from scripts and over SSH tunnels alike.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from ray_ban.store import RunStore, is_uri
from ray_ban.results.tensorboard_runs import board_root


def free_port(host: str) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_ban.board", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a sweep's folder, <out>/<sweep> (or its tensorboard/ folder), or its storage URI")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    if is_uri(args.sweep_dir):  # a sweep in cloud storage: serve a snapshot of its runs (rerun to refresh)
        logdir = Path(tempfile.mkdtemp(prefix="ray-ban-board-"))
        try:
            RunStore(args.sweep_dir).download_folder("tensorboard", logdir)
        except (OSError, ValueError) as error:  # pyarrow's errors derive from these
            print(f"ray-ban board: error: cannot read {args.sweep_dir}/tensorboard ({type(error).__name__}); check the "
                  "URI and its credentials", file=sys.stderr)
            return 2
    else:
        folder = Path(args.sweep_dir)
        logdir = folder if folder.name == "tensorboard" else Path(board_root(folder))
    if not logdir.is_dir():
        print(f"ray-ban board: error: {logdir} not found: point at a sweep folder (<out>/<sweep>) that has trained "
              "at least one model", file=sys.stderr)
        return 2
    from tensorboard import program

    board = program.TensorBoard()
    port = args.port or free_port(args.host)
    board.configure(argv=[None, "--logdir", str(logdir), "--host", args.host, "--port", str(port), "--reload_interval", "5"])
    url = board.launch()
    print(f"TensorBoard for {logdir} at {url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
