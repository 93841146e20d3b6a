"""Dataset sources: torchvision CIFAR files, Hugging Face image Parquet, and generated synthetic data.

``load_dataset(spec, root)`` is the one entry point; ``spec`` is ``cifar10``, ``cifar100``,
``parquet:<dir or storage URI>`` (Hugging Face image Parquet, see ``ray_ban.data.parquet``; decoded
once per node into ``ray_ban.data.cache``), ``synthetic`` (10 classes), ``synthetic-100`` (100
classes in 20 superclasses) or ``synthetic-siblings`` (10 classes, ambiguous look-alikes, the demo's) for images, and ``ptb:<dir>`` (word-level Penn Treebank) or ``synthetic-text`` (generated) for text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ray_ban.config.dataset_names import SYNTHETIC_TEXT, is_text  # noqa: F401 (is_text re-exported)
from ray_ban.data import parquet
from ray_ban.data.cache import cached_arrays, content_key, node_lock
from ray_ban.data.splits import DataError, ImageSplits
from ray_ban.data.text import SYNTHETIC_TEXT_SIZES, TextSplits, generated_corpus, load_ptb, missing_ptb, ptb_error, ptb_vocab

SYNTHETIC_SIZES = {"synthetic": (10, 5000, 1000), "synthetic-100": (100, 10000, 2000), "synthetic-siblings": (10, 2000, 1000)}
# How far an image may lean towards a sibling class (see ``synthetic``); 0: no blending, no label draws.
SYNTHETIC_AMBIGUITY = {"synthetic-siblings": 0.5}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def dataset_names() -> list[str]:
    """The dataset specs this module understands."""
    return ["cifar10", "cifar100", "parquet:<dir or URI>", *SYNTHETIC_SIZES, "ptb:<dir>", SYNTHETIC_TEXT]


def num_classes_of(spec: str) -> Optional[int]:
    """The class count (vocabulary size for text) a spec implies without decoding images; None if unknown here."""
    if spec in SYNTHETIC_SIZES:
        return SYNTHETIC_SIZES[spec][0]
    if spec == SYNTHETIC_TEXT:
        return SYNTHETIC_TEXT_SIZES["vocab_size"]
    if spec.startswith("ptb:"):
        folder = spec.split(":", 1)[1]
        return None if missing_ptb(folder) else len(ptb_vocab(folder))
    return {"cifar10": 10, "cifar100": 100}.get(spec)


def check_dataset(spec: str, root: Optional[str] = None, download: bool = False, label_column: Optional[str] = None) -> None:
    """Raise DataError if the dataset cannot be loaded, without decoding it (for --dry-run)."""
    _check_label_column(spec, label_column)
    if spec in SYNTHETIC_SIZES or spec == SYNTHETIC_TEXT:
        return
    if spec.startswith("ptb:"):
        folder = spec.split(":", 1)[1]
        missing = missing_ptb(folder)
        if missing:
            raise ptb_error(folder, missing)
        return
    if spec in CIFAR_FOLDERS:
        if not download and not (Path(root or default_root()) / CIFAR_FOLDERS[spec]).is_dir():
            raise DataError(_missing_cifar(spec, root))
        return
    if spec.startswith("parquet:"):
        parquet.open_source(spec, label_column)  # listings and footers: no image is decoded
        return
    raise DataError(f"unknown dataset '{spec}': use one of {', '.join(dataset_names())}")


def load_dataset(spec: str, root: Optional[str] = None, download: bool = False,
                 label_column: Optional[str] = None) -> Union[ImageSplits, TextSplits]:
    """Load the named dataset (uint8 image splits, or token streams for text); a one-line DataError when it is missing or malformed.

    ``label_column`` picks the label column of a ``parquet:`` dataset (see ``ray_ban.data.parquet``)."""
    _check_label_column(spec, label_column)
    if spec == SYNTHETIC_TEXT:
        return generated_corpus(**SYNTHETIC_TEXT_SIZES, name=spec)
    if spec.startswith("ptb:"):
        return load_ptb(spec.split(":", 1)[1])
    if spec in SYNTHETIC_SIZES:
        return generate(spec)
    if spec in CIFAR_FOLDERS:
        return _load_cifar(spec, root, download)
    if spec.startswith("parquet:"):
        return _load_parquet(spec, label_column)
    raise DataError(f"unknown dataset '{spec}': use one of {', '.join(dataset_names())}")


def _check_label_column(spec: str, label_column: Optional[str]) -> None:
    if label_column and not spec.startswith("parquet:"):
        raise DataError(f"--label-column {label_column} applies to parquet: datasets only, not {spec}; drop it")


def cifar_lock(spec: str, root: Optional[str]):
    """The node-wide lock of one torchvision dataset folder: concurrent --download on one node cannot race."""
    where = str(Path(root or default_root()).expanduser().resolve())
    return node_lock(content_key(f"torchvision-{spec}", where))


def default_root() -> str:
    """Where torchvision files live unless --data-root says otherwise."""
    return os.environ.get("RAY_BAN_DATA", str(Path.home() / ".cache" / "ray_ban" / "data"))


def _missing_cifar(spec: str, root: Optional[str]) -> str:
    where = root or default_root()
    return (
        f"{spec} not found under {where}: rerun with --download (needs internet), copy "
        f"{CIFAR_FOLDERS[spec]}/ there with --data-root, or use --dataset synthetic"
    )


def _load_cifar(spec: str, root: Optional[str], download: bool) -> ImageSplits:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if spec == "cifar10" else torchvision.datasets.CIFAR100
    where = root or default_root()
    try:
        with cifar_lock(spec, root):  # one process downloads and extracts; the others wait, then find the files
            train = cls(where, train=True, download=download)
            test = cls(where, train=False, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DataError(_missing_cifar(spec, root)) from error
    except OSError as error:  # download attempted without a network
        raise DataError(f"{spec}: download failed ({error.__class__.__name__}); copy the files under --data-root instead") from error

    def as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(ds.targets, dtype=torch.int64)

    (train_x, train_y), (test_x, test_y) = as_tensors(train), as_tensors(test)
    return ImageSplits(spec, train_x, train_y, test_x, test_y, len(train.classes), tuple(train.classes))


def _load_parquet(spec: str, label_column: Optional[str]) -> ImageSplits:
    """A Parquet image dataset (folder or storage URI), decoded once per node and then read from the node's cache."""
    source = parquet.open_source(spec, label_column)

    def decode() -> tuple[dict[str, np.ndarray], dict]:
        (train_x, train_y), (test_x, test_y) = parquet.read_split(source, "train"), parquet.read_split(source, "test")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(f"{spec}: train images are {tuple(train_x.shape[1:])} but test images {tuple(test_x.shape[1:])}")
        num_classes = len(source.classes) or int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
        arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
        return arrays, {"num_classes": num_classes, "classes": list(source.classes), "label_column": source.label_column}

    arrays, meta = cached_arrays(content_key(source.name(), source.cache_material()), decode)
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    return ImageSplits(spec, tensors["train_images"], tensors["train_labels"], tensors["test_images"],
                       tensors["test_labels"], meta["num_classes"], tuple(meta["classes"]))


def generate(spec: str, train: Optional[int] = None, test: Optional[int] = None) -> ImageSplits:
    """A named synthetic dataset (``SYNTHETIC_SIZES``), optionally with fewer images than its default."""
    classes, default_train, default_test = SYNTHETIC_SIZES[spec]
    return synthetic(classes, train or default_train, test or default_test, name=spec,
                     ambiguity=SYNTHETIC_AMBIGUITY.get(spec, 0.0))


def synthetic(num_classes: int = 10, train: int = 5000, test: int = 1000, seed: int = 0, name: str = "synthetic",
              ambiguity: float = 0.0) -> ImageSplits:
    """Learnable 32x32 images whose classes come in superclasses of five similar classes.

    Each superclass has a smooth random base pattern; each class adds its own smaller pattern, so
    classes of one superclass are confused more often than others and a teacher's wrong-class
    probabilities carry information, as on CIFAR-100. Samples add shifts, contrast and noise.

    ``ambiguity`` a > 0 makes look-alikes ambiguous, as CIFAR's are: each image blends its class's
    prototype with a random sibling's (same superclass) at a weight drawn from U(0, a), a < 1 keeping its
    own class the larger part; a train label names the sibling with probability equal to that weight
    (a test label always names the image's own class, the Bayes decision). The best answer on a train
    image is then a soft, image-dependent distribution that a hard label only samples and a teacher's
    softmax can estimate: the information born-again students learn from.
    """
    gen = torch.Generator().manual_seed(seed)
    superclasses = max(1, num_classes // 5)

    def smooth(count: int, scale: int) -> torch.Tensor:
        coarse = torch.randn(count, 3, scale, scale, generator=gen)
        return F.interpolate(coarse, size=32, mode="bicubic", align_corners=False)

    bases = smooth(superclasses, 4)
    prototypes = bases[torch.arange(num_classes) % superclasses] + 0.55 * smooth(num_classes, 6)

    if not 0 <= ambiguity < 1:
        raise ValueError(f"ambiguity must be in [0, 1), got {ambiguity}")
    blend = torch.Generator().manual_seed(seed + 1)  # its own stream: the classes and noise stay those of ambiguity 0

    def sample(count: int, train_split: bool) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=gen)]
        images = prototypes[labels]
        if ambiguity > 0:  # lean towards a sibling; train labels drawn from the blend
            others = max(1, num_classes // superclasses)  # classes per superclass
            siblings = (labels + superclasses * torch.randint(1, max(2, others), (count,), generator=blend)) % num_classes
            weight = ambiguity * torch.rand(count, generator=blend)
            images = (1 - weight)[:, None, None, None] * images + weight[:, None, None, None] * prototypes[siblings]
            if train_split:
                drawn = torch.where(torch.rand(count, generator=blend) < weight, siblings, labels)
            else:
                drawn = labels
        contrast = 0.7 + 0.6 * torch.rand(count, 1, 1, 1, generator=gen)
        brightness = 0.3 * torch.randn(count, 3, 1, 1, generator=gen)
        images = images * contrast + brightness + 0.6 * smooth(count, 8) + 0.25 * torch.randn(count, 3, 32, 32, generator=gen)
        shifts = torch.randint(-3, 4, (count, 2, 1), generator=gen)
        rows, cols = (torch.arange(32) - shifts[:, 0]) % 32, (torch.arange(32) - shifts[:, 1]) % 32  # circular shift
        images = images.gather(2, rows[:, None, :, None].expand(-1, 3, 32, 32))
        images = images.gather(3, cols[:, None, None, :].expand(-1, 3, 32, 32))
        if ambiguity > 0:
            labels = drawn
        return (128 + 45 * images).round().clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = sample(train, True)
    test_x, test_y = sample(test, False)
    classes = tuple(f"class{c}-super{c % superclasses}" for c in range(num_classes))
    return ImageSplits(name, train_x, train_y, test_x, test_y, num_classes, classes)
