"""Datasets as uint8 image splits or token-id streams, and the device-resident loaders that batch them (no Ray here)."""

from ray_ban.data.loader import DeviceLoader
from ray_ban.data.sources import check_dataset, dataset_names, default_root, is_text, load_dataset, num_classes_of, synthetic
from ray_ban.data.splits import DataError, ImageSplits
from ray_ban.data.text import BPTTLoader, TextSplits, generated_corpus, load_ptb

__all__ = [
    "BPTTLoader",
    "DataError",
    "DeviceLoader",
    "ImageSplits",
    "TextSplits",
    "check_dataset",
    "dataset_names",
    "default_root",
    "generated_corpus",
    "is_text",
    "load_dataset",
    "load_ptb",
    "num_classes_of",
    "synthetic",
]
