"""search.json: every trial of a hyperparameter search, as the search phase wrote it (read by the results)."""

from __future__ import annotations

from typing import Optional

from ray_ban.store import RunStore

SEARCH_FILE = "search.json"


def read_outcome(store: RunStore) -> Optional[dict]:
    """search.json of a run folder, or None for a sweep without a search."""
    return store.read_json(SEARCH_FILE) if store.exists(SEARCH_FILE) else None
