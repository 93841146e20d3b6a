"""The project's bad-input errors outside space files, and how every such error is shown (no torch here: the CLI
catches them before it imports any)."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input found before anything is trained; reported as one line with exit code 2."""


class DataError(ValueError):
    """A dataset that cannot be loaded; the message is one line that says how to fix it."""


def one_line(error: object) -> str:
    """A message as one terminal line: control characters and line breaks inside it (from a user's YAML
    keys, say) are shown escaped, as Python would write them."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in str(error))
