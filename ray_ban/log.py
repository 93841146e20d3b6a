"""ray-ban's logger: every line a sweep says (chain progress, the table, warnings, failures) is a record
of the ``ray_ban`` logger, so a script or notebook can route, filter or silence it with ``logging``.

A run shows those lines on a terminal stream by attaching one handler to that logger for the run's
duration (``for_run``); nothing of the caller's other loggers or the root logger is touched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional, TextIO

ROOT = "ray_ban"
FILE_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def get(name: str = "") -> logging.Logger:
    """The ``ray_ban`` logger, or its child ``ray_ban.<name>`` (progress, sweep, search, bank, ...)."""
    return logging.getLogger(f"{ROOT}.{name}" if name else ROOT)


class TerminalHandler(logging.Handler):
    """Writes each record's message as it is (one line per chain event); warnings and errors go to
    ``errors`` when one is given (stderr beside stdout), the rest to ``out``. Both can be swapped."""

    def __init__(self, out: TextIO, errors: Optional[TextIO] = None):
        super().__init__(logging.INFO)
        self.out, self.errors = out, errors
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.errors if self.errors is not None and record.levelno >= logging.WARNING else self.out
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: a broken stream never fails the caller
            self.handleError(record)


@contextlib.contextmanager
def for_run(stream: Optional[TextIO] | bool, log_path) -> Iterator[Optional[TerminalHandler]]:
    """For one run (the ``with`` block): the ``ray_ban`` logger's records, INFO and above unless its
    level was set, go timestamped to ``log_path`` (the run's ray.log) and, as bare lines, to ``stream``
    (warnings and errors to stderr when ``stream`` is stdout), not also to the root logger's handlers,
    which would show them twice. ``None``/``False``: no stream; the records propagate to the caller's
    own logging set-up. The logger's level, handlers and propagation are restored afterwards."""
    logger = get()
    saved = logger.level, logger.propagate
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    logger.addHandler(file_handler)
    terminal = None
    if stream is not None and stream is not False:
        terminal = TerminalHandler(stream, sys.stderr if stream is sys.stdout else None)
        logger.addHandler(terminal)
        logger.propagate = False
    try:
        yield terminal
    finally:
        for handler in (file_handler, terminal):
            if handler is not None:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
