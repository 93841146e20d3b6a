"""The project's one bad-input error outside space files and data, and how every such error is shown."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input found before anything is trained; reported as one line with exit code 2."""


def one_line(error: object) -> str:
    """A message as one terminal line: control characters and line breaks inside it (from a user's YAML
    keys, say) are shown escaped, as Python would write them."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in str(error))
