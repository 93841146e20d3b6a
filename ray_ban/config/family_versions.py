"""The code version of every model family, as plain data: part of every model's identity (``spaces._training``).

Bump a family's version when what its module in ``ray_ban/models/`` builds changes (layers, initialisation,
defaults): its models, and those of every family that builds on it, get new keys, so no run folder or
teacher bank hands out a model of the old code. Version 1 is implicit (it adds nothing to a key), so the
keys of models trained before versions existed stay as they were. ``tests/test_family_versions.py``
holds this table to the registry: every registered name pattern has its family here, and every family
lists the families whose code it imports.
"""

from __future__ import annotations

import re

# family (a module of ray_ban/models/) -> (its version, the families whose code it builds with)
FAMILIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "common": (1, ()),
    "densenet": (1, ("common",)),
    "wide_resnet": (1, ("common",)),
    "preresnet": (1, ("common",)),
    "ban_students": (1, ("common", "densenet", "preresnet", "wide_resnet")),
    "language": (1, ()),
    "resnet9": (1, ("common",)),
}

# every name pattern the model registry knows -> the family whose module registers it
PATTERNS: dict[str, str] = {
    "densenet-{L}-{k}": "densenet",
    "densenet-{L}-{k}-depth{f}x": "ban_students",
    "densenet-{L}-{k}-compr{f}x": "ban_students",
    "ban-preresnet-{N}-{r}": "ban_students",
    "ban-wrn-{N}-{r}": "ban_students",
    "ban-match-wrn-{N}-{r}": "ban_students",
    "wrn-{d}-{k}": "wide_resnet",
    "preresnet-{d}": "preresnet",
    "lstm-{layers}x{units}": "language",
    "cnn-lstm-{layers}x{units}": "language",
    "resnet9-{w}": "resnet9",
}

_NUMBER = r"(?P<{}>[0-9]+(?:\.[0-9]+)?)"


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Turn ``wrn-{d}-{k}`` into a regex whose named groups capture numbers (ints or decimals)."""
    parts = re.split(r"\{(\w+)\}", pattern)
    return re.compile("".join(_NUMBER.format(p) if i % 2 else re.escape(p) for i, p in enumerate(parts)))


_REGEXES = {pattern: pattern_regex(pattern) for pattern in PATTERNS}


def family_of(architecture: str) -> str:
    """The family whose module builds ``architecture``; ValueError for a name no pattern matches."""
    for pattern, regex in _REGEXES.items():
        if regex.fullmatch(architecture):
            return PATTERNS[pattern]
    raise ValueError(f"unknown model name {architecture!r}")


def family_versions(architecture: str) -> dict[str, int]:
    """The code versions a model is built with: its family's and those it builds on, transitively,
    e.g. ``{"common": 1, "densenet": 1}``."""
    versions: dict[str, int] = {}
    pending = [family_of(architecture)]
    while pending:
        family = pending.pop()
        if family not in versions:
            version, builds_on = FAMILIES[family]
            versions[family] = version
            pending.extend(builds_on)
    return dict(sorted(versions.items()))


def bumped_versions(architecture: str) -> dict[str, int]:
    """The family versions above 1 of a model (what its identity adds); {} for an unknown name, which
    the CLI's validation reports with its close matches."""
    try:
        return {family: v for family, v in family_versions(architecture).items() if v > 1}
    except ValueError:
        return {}
