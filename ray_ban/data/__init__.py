"""Datasets as uint8 tensor splits, and the device-resident loader that batches them (no Ray here)."""

from .loader import DeviceLoader
from .sources import check_dataset, dataset_names, default_root, load_dataset, num_classes_of, synthetic
from .splits import DataError, ImageSplits

__all__ = [
    "DataError",
    "DeviceLoader",
    "ImageSplits",
    "check_dataset",
    "dataset_names",
    "default_root",
    "load_dataset",
    "num_classes_of",
    "synthetic",
]
