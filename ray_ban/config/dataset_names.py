"""What a dataset spec names, read from the spec alone (no files, no torch): the configuration's view of
``ray_ban.data``, which loads them."""

from __future__ import annotations

SYNTHETIC_TEXT = "synthetic-text"


def is_text(spec: str) -> bool:
    """Whether ``spec`` names a text corpus (token streams for language models) rather than images."""
    return spec == SYNTHETIC_TEXT or spec.startswith("ptb:")
