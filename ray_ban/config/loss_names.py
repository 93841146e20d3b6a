"""The losses a space file may name and the parameters each takes: plain data, so validating a space
needs no torch (``ray_ban.core.losses`` holds the functions, one per name here)."""

from __future__ import annotations

# The keyword parameters each loss accepts; search spaces are validated against these.
LOSS_PARAMS: dict[str, frozenset[str]] = {
    "label": frozenset(),
    "ban": frozenset(),
    "ban+l": frozenset({"label_weight"}),
    "cwtm": frozenset(),
    "dkpp": frozenset(),
    "kd": frozenset({"alpha", "temperature"}),
}
LOSS_NAMES = tuple(LOSS_PARAMS)
NEEDS_TEACHER = frozenset(name for name in LOSS_NAMES if name != "label")


def check_loss_params(name: str, params: dict) -> None:
    """Reject an unknown loss, and parameters the named loss does not take, so typos fail before training."""
    if name not in LOSS_PARAMS:
        raise ValueError(f"unknown loss '{name}': use one of {', '.join(LOSS_NAMES)}")
    unknown = set(params) - LOSS_PARAMS[name]
    if unknown:
        allowed = ", ".join(sorted(LOSS_PARAMS[name])) or "none"
        raise ValueError(f"loss '{name}' takes no parameter {', '.join(sorted(unknown))} (allowed: {allowed})")
