"""How many images a plan trains and evaluates per epoch, from the dataset's spec (Parquet footers only,
no decoding): the --dry-run plan's and the report's estimates are priced per image."""

from __future__ import annotations

from typing import Optional

from ray_ban.config.spaces import SweepPlan
from ray_ban.data.sources import SYNTHETIC_SIZES, is_text


def dataset_sizes(dataset: str, label_column: Optional[str] = None) -> Optional[tuple[int, int]]:
    """(train, test) images of a dataset before subsets; None for a language corpus."""
    if is_text(dataset):
        return None
    if dataset in SYNTHETIC_SIZES:
        return SYNTHETIC_SIZES[dataset][1:]
    if dataset in ("cifar10", "cifar100"):
        return 50_000, 10_000
    import pyarrow.parquet as pq

    from ray_ban.data.parquet import open_source

    source = open_source(dataset, label_column)  # footers only
    return tuple(sum(pq.read_metadata(path, filesystem=source.fs).num_rows for path, _, _ in source.files[split])
                 for split in ("train", "test"))


def image_counts(plan: SweepPlan) -> Optional[tuple[int, int, int]]:
    """(train images per epoch, evaluated images per epoch, test images) of a plan; None for text."""
    sizes = dataset_sizes(plan.dataset, plan.label_column)
    if sizes is None:
        return None
    train = min(sizes[0], plan.train_subset or sizes[0])
    test = min(sizes[1], plan.test_subset or sizes[1])
    validation = plan.validation_size or 0
    return train - validation, test + validation, test
