"""Image datasets in Hugging Face's Parquet layout, read from a local folder or a storage URI through ``pyarrow.fs``.

``open_source(spec)`` finds the files and columns from listings and Parquet footers alone (what
``--dry-run`` checks); ``read_split`` decodes one split. Layouts found under the folder:
``train.parquet``/``test.parquet``; the Hub's shards ``<config>/train-00000-of-00001.parquet`` and
``data/train-*.parquet``; the Hub's converted ``<config>/train/0000.parquet``. A file belongs to a
split when its name holds ``train`` or ``test`` as a word, else when its folder is named so.

Columns: the image column is the struct column with a binary ``bytes`` field (Hugging Face's
``Image``; of several, the one named ``img`` or ``image``). The label column is ``label_column``
when given; else, among the ``ClassLabel`` features of the schema's ``huggingface`` metadata (or,
without that metadata, among the integer columns), the one named ``label``, else ``fine_label``,
else the only one; several others are a DataError asking for ``--label-column``. Class names come
from that ``ClassLabel`` (or the older ``classes`` metadata key, comma-separated).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_ban.store import is_uri, join, split_location
from ray_ban.data.splits import DataError

SPLITS = ("train", "test")
PREFERRED_LABELS = ("label", "fine_label")
IMAGE_NAMES = ("img", "image")
LAYOUTS = "train.parquet and test.parquet, or Hugging Face shards such as <config>/train-00000-of-00001.parquet"


@dataclass(frozen=True)
class ParquetSource:
    """Where a Parquet image dataset's splits are and which columns hold its images and labels."""

    spec: str
    location: str
    fs: pafs.FileSystem
    files: dict  # split -> tuple of (path inside fs, size, mtime in ns or None), sorted by path
    image_column: str
    label_column: str
    classes: tuple[str, ...]

    def cache_material(self) -> dict:
        """Everything the decoded arrays depend on: the files (with size and modification time) and the columns."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.location).query) if is_uri(self.location) else {}
        return {"format": 1, "filesystem": self.fs.type_name, "endpoint": query.get("endpoint_override"),
                "files": self.files, "image": self.image_column, "label": self.label_column}

    def name(self) -> str:
        """A short readable name: the folder's last path component."""
        _, path = split_location(self.location)
        return path.rstrip("/").rsplit("/", 1)[-1] or "parquet"


def open_source(spec: str, label_column: Optional[str] = None) -> ParquetSource:
    """The files and columns of ``parquet:<folder or URI>``, from listings and footers only (nothing decoded)."""
    location = spec.split(":", 1)[1].strip()
    if not location:
        raise DataError(f"{spec}: name a folder or storage URI, e.g. parquet:/data/cifar100 or parquet:s3://bucket/cifar100")
    spec = f"parquet:{_plain(location)}"  # messages name the dataset without the URI's options (they may hold keys)
    fs, base, infos = _list(spec, location)
    files = _split_files(spec, location, base, infos)
    first = files["train"][0][0]
    schema = _read_schema(fs, first, _shown(location, base, first))
    image_column = _image_column(spec, schema)
    label_column, classes = _label_column(spec, schema, label_column)
    for split in SPLITS:  # every shard must carry both columns with the same types
        for path, _, _ in files[split]:
            other = schema if path == first else _read_schema(fs, path, _shown(location, base, path))
            for column in (image_column, label_column):
                if column not in other.names or other.field(column).type != schema.field(column).type:
                    raise DataError(f"{_shown(location, base, path)}: column '{column}' is missing or of another type "
                                    f"than in {_shown(location, base, first)}; every shard needs the same columns")
    return ParquetSource(spec, location, fs, files, image_column, label_column, classes)


def read_split(source: ParquetSource, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split: (N, 3, H, W) uint8 RGB images and (N,) int64 labels, shards in name order."""
    images, labels = [], []
    for path, _, _ in source.files[split]:
        shown = _shown(source.location, split_location(source.location)[1], path)
        try:
            table = pq.read_table(path, filesystem=source.fs, columns=[source.image_column, source.label_column])
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{shown}: cannot read ({_first_line(error)}); check the file and the storage URI") from None
        blobs = []
        for chunk in table.column(source.image_column).chunks:
            blobs.extend(chunk.field("bytes").to_pylist())
        missing = [i for i, blob in enumerate(blobs) if blob is None]
        if missing:
            raise DataError(f"{shown}: {len(missing)} images (row {missing[0]} first) have no embedded bytes, only a path; "
                            "export the dataset with the images embedded (Hugging Face's push_to_hub/to_parquet do)")
        column = table.column(source.label_column)
        if column.null_count:
            raise DataError(f"{shown}: {column.null_count} rows have no '{source.label_column}'; every image needs a label")
        images.append(decode_images(blobs, shown))
        labels.append(column.to_numpy().astype(np.int64))
    shapes = {im.shape[1:] for im in images if len(im)}
    if len(shapes) > 1:
        raise DataError(f"{source.spec}: {split} shards hold images of different sizes {sorted(shapes)}; images must be equal-sized")
    label_array = np.concatenate(labels)
    if label_array.size and label_array.min() < 0:
        raise DataError(f"{source.spec}: {split} labels in '{source.label_column}' include {label_array.min()} (Hugging Face "
                        "marks unlabelled rows -1); drop those rows or use a labelled split")
    if source.classes and label_array.size and label_array.max() >= len(source.classes):
        raise DataError(f"{source.spec}: {split} label {label_array.max()} in '{source.label_column}' is outside its "
                        f"{len(source.classes)} class names; fix the labels or the ClassLabel names")
    return np.concatenate(images), label_array


def decode_images(blobs: list, where: str) -> np.ndarray:
    """Encoded images (JPEG, PNG, ...) -> (N, 3, H, W) uint8 RGB; a DataError names the first bad row."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    decoded = []
    with warnings.catch_warnings():  # torchvision 0.29 warns on every decode that TorchCodec will replace it
        warnings.simplefilter("ignore", DeprecationWarning)
        for row, blob in enumerate(blobs):
            try:
                image = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except (RuntimeError, ValueError) as error:
                raise DataError(f"{where}: row {row} is not a decodable image ({_first_line(error)})") from None
            if decoded and image.shape != decoded[0].shape:
                raise DataError(f"{where}: row {row} is {tuple(image.shape[1:])} but row 0 is {tuple(decoded[0].shape[1:])}; "
                                "images must be equal-sized")
            decoded.append(image)
    if not decoded:
        return np.zeros((0, 3, 0, 0), dtype=np.uint8)
    return torch.stack(decoded).numpy()


def _list(spec: str, location: str) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    try:
        fs, base = split_location(location)
        kind = fs.get_file_info(base).type
        if kind == pafs.FileType.NotFound:
            raise DataError(f"{spec} does not exist; point parquet: at a folder or storage URI holding {LAYOUTS}")
        if kind == pafs.FileType.File:
            raise DataError(f"{spec} is a file; point parquet: at the folder holding {LAYOUTS}")
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{spec}: cannot list it ({_first_line(error)}); check the URI, its ?endpoint_override "
                        "and the storage credentials") from None
    return fs, base, infos


def _split_of(parts: list[str]) -> tuple[Optional[str], str]:
    """(split, config folder) of a file at relative ``parts``; split None for files of no train/test split."""
    words = set(re.split(r"[-_.]", parts[-1][: -len(".parquet")].lower()))
    named = [s for s in SPLITS if s in words]
    if len(named) == 1:
        return named[0], "/".join(parts[:-1])
    if not named and len(parts) > 1 and parts[-2].lower() in SPLITS:  # <config>/train/0000.parquet
        return parts[-2].lower(), "/".join(parts[:-2])
    return None, ""


def _split_files(spec: str, location: str, base: str, infos: list[pafs.FileInfo]) -> dict:
    configs: dict[str, dict[str, list]] = {}
    for info in infos:
        parts = info.path[len(base):].strip("/").split("/")
        if info.type != pafs.FileType.File or not parts[-1].endswith(".parquet") or any(p.startswith((".", "_")) for p in parts):
            continue  # hidden and temporary files (.x.tmp, _SUCCESS) are not data
        split, config = _split_of(parts)
        if split:
            configs.setdefault(config, {}).setdefault(split, []).append((info.path, info.size, info.mtime_ns))
    if not configs:
        raise DataError(f"{spec}: no train/test Parquet files there; expected {LAYOUTS}")
    if len(configs) > 1:
        names = sorted(configs)
        raise DataError(f"{spec}: several datasets in it ({', '.join(n or '.' for n in names)}); point parquet: "
                        f"at one of them, e.g. parquet:{join(location, names[-1]) if names[-1] else location}")
    (config, splits), = configs.items()
    for split in SPLITS:
        if split not in splits:
            found = ", ".join(sorted(splits))
            raise DataError(f"{spec}: no {split} split{f' in {config}/' if config else ''} (found {found}); "
                            f"the loader needs {LAYOUTS}")
    return {split: tuple(sorted(splits[split])) for split in SPLITS}


def _read_schema(fs: pafs.FileSystem, path: str, shown: str) -> pa.Schema:
    try:
        return pq.read_schema(path, filesystem=fs)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{shown}: not a readable Parquet file ({_first_line(error)}); replace or remove it") from None


def hf_features(schema: pa.Schema) -> dict:
    """The ``features`` of a schema's ``huggingface`` metadata (what ``datasets`` writes); {} without it."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _image_column(spec: str, schema: pa.Schema) -> str:
    def is_image(field: pa.Field) -> bool:
        kind = field.type
        if not pa.types.is_struct(kind) or kind.get_field_index("bytes") < 0:
            return False
        inner = kind.field(kind.get_field_index("bytes")).type
        return pa.types.is_binary(inner) or pa.types.is_large_binary(inner)

    found = [field.name for field in schema if is_image(field)]
    if len(found) > 1:
        found = [name for name in found if name in IMAGE_NAMES][:1] or found
    if len(found) != 1:
        columns = ", ".join(f"{f.name} ({f.type})" for f in schema)
        problem = "no image column" if not found else f"several image columns ({', '.join(found)})"
        raise DataError(f"{spec}: {problem}: needs one struct column with a binary 'bytes' field (Hugging Face's Image "
                        f"feature, e.g. 'img'); found {columns}")
    return found[0]


def _label_column(spec: str, schema: pa.Schema, requested: Optional[str]) -> tuple[str, tuple[str, ...]]:
    features = hf_features(schema)
    integer = [f.name for f in schema if pa.types.is_integer(f.type)]
    class_labels = [name for name, feature in features.items()
                    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and name in integer]
    candidates = class_labels or integer
    if requested:
        if requested not in integer:
            problem = "no such column" if requested not in schema.names else f"is {schema.field(requested).type}, not class ids"
            raise DataError(f"{spec}: --label-column {requested}: {problem}; choose one of {', '.join(candidates) or '(none)'}")
        chosen = requested
    else:
        preferred = [name for name in PREFERRED_LABELS if name in candidates]
        if preferred:
            chosen = preferred[0]
        elif len(candidates) == 1:
            chosen = candidates[0]
        elif not candidates:
            raise DataError(f"{spec}: no label column (an integer column, Hugging Face's ClassLabel); found "
                            f"{', '.join(f'{f.name} ({f.type})' for f in schema)}")
        else:
            raise DataError(f"{spec}: several label columns ({', '.join(candidates)}); pass --label-column with one of them")
    names = (features.get(chosen) or {}).get("names") if isinstance(features.get(chosen), dict) else None
    if not names:
        legacy = (schema.metadata or {}).get(b"classes", b"").decode(errors="replace")
        names = [c.strip() for c in legacy.split(",") if c.strip()]
    return chosen, tuple(str(n) for n in names)


def _plain(location: str) -> str:
    """A folder or URI as shown in messages: a URI without its query (its options may hold credentials)."""
    if not is_uri(location):
        return location
    url = urllib.parse.urlsplit(location)
    return f"{url.scheme}://{url.netloc}{url.path}"


def _shown(location: str, base: str, path: str) -> str:
    """A file as the user named its folder (``s3://bucket/x/train.parquet``, query dropped), for messages."""
    relative = path[len(base):].strip("/")
    return f"{base}/{relative}" if not is_uri(location) else f"{_plain(location).rstrip('/')}/{relative}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
