"""Name-pattern registry: each family registers builders under patterns like ``wrn-{d}-{k}``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ray_ban.config.family_versions import pattern_regex

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Entry:
    """One registered pattern: its text, compiled regex, builder and concrete example names."""

    pattern: str
    regex: re.Pattern[str]
    builder: Builder
    examples: tuple[str, ...]


_ENTRIES: dict[str, Entry] = {}


def _number(text: str) -> int | float:
    """Parse a captured field: ``"28"`` -> 28, ``"0.5"`` -> 0.5, so builders get numbers, not strings."""
    return float(text) if "." in text else int(text)


def whole(value: int | float, what: str) -> int:
    """Insist that a name field is a positive whole number (depths, widths, unit counts)."""
    if isinstance(value, float) or value < 1:
        raise ValueError(f"{what} must be a positive whole number, got {value}")
    return int(value)


def register(pattern: str, examples: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes, **fields, **kwargs)`` under a name pattern."""

    def wrap(builder: Builder) -> Builder:
        if pattern in _ENTRIES:
            raise ValueError(f"model pattern {pattern!r} is registered twice")
        _ENTRIES[pattern] = Entry(pattern, pattern_regex(pattern), builder, tuple(examples))
        return builder

    return wrap


# The tiny members used by smoke presets and CPU tests, offered as close matches too.
TINY_MEMBERS = ["resnet9-8", "wrn-10-1", "wrn-10-2", "densenet-10-4", "densenet-16-12", "densenet-22-8", "preresnet-11", "lstm-1x64"]


def patterns() -> list[str]:
    """All registered name patterns, in registration order."""
    return list(_ENTRIES)


def examples() -> list[str]:
    """Concrete example names (the paper's architectures), in registration order."""
    return [name for entry in _ENTRIES.values() for name in entry.examples]


def lookup(name: str) -> tuple[Builder, dict[str, int | float]]:
    """Find the builder whose pattern matches ``name`` exactly; ValueError with close matches if none."""
    for entry in _ENTRIES.values():
        match = entry.regex.fullmatch(name)
        if match:
            return entry.builder, {k: _number(v) for k, v in match.groupdict().items()}
    close = difflib.get_close_matches(name, TINY_MEMBERS + examples() + patterns(), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(f"unknown model name {name!r}; {hint}ray_ban.models.available() lists the name patterns")
