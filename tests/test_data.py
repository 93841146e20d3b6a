"""Datasets and the device-resident loader, on generated and real images."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import encode_jpeg

from ray_ban.data import DataError, DeviceLoader, check_dataset, load_dataset, synthetic


def test_synthetic_is_deterministic_balanced_and_superclass_structured():
    a, b = synthetic(10, 500, 100), synthetic(10, 500, 100)
    assert torch.equal(a.train_images, b.train_images) and a.train_images.dtype == torch.uint8
    assert a.train_images.shape == (500, 3, 32, 32) and a.test_images.shape == (100, 3, 32, 32)
    assert torch.bincount(a.train_labels).tolist() == [50] * 10
    means = torch.stack([a.train_images[a.train_labels == c].float().mean(0).flatten() for c in range(10)])
    distance = torch.cdist(means, means)
    same_super = (torch.arange(10)[:, None] % 2) == (torch.arange(10)[None, :] % 2)
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    assert distance[same_super & off_diagonal].mean() < 0.8 * distance[~same_super].mean()


def test_loader_shards_are_disjoint_equal_and_reshuffled_per_epoch():
    data = synthetic(10, 203, 10)
    loaders = [DeviceLoader(data.train_images, data.train_labels, 16, rank=r, world_size=2, seed=5) for r in range(2)]
    for loader in loaders:
        loader.set_epoch(3)
    shards = [set(l.shard_indices().tolist()) for l in loaders]
    assert len(shards[0]) == len(shards[1]) == 101 and not shards[0] & shards[1]
    first = loaders[0].shard_indices()
    loaders[0].set_epoch(4)
    assert not torch.equal(first, loaders[0].shard_indices())
    loaders[0].set_epoch(3)
    assert torch.equal(first, loaders[0].shard_indices())  # resuming an epoch repeats its shuffle
    assert len(loaders[0]) == 6 and sum(x.shape[0] for x, _ in loaders[0]) == 96


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_and_flip_are_windows_of_the_padded_image(mode):
    data = synthetic(10, 64, 10)
    loader = DeviceLoader(data.train_images, data.train_labels, 64, seed=1, padding_mode=mode)
    padded = torch.nn.functional.pad(data.train_images, (4, 4, 4, 4), mode="reflect" if mode == "reflect" else "constant").float()
    images, labels = next(iter(loader))
    order = loader.shard_indices()
    assert torch.equal(labels, data.train_labels[order])
    flipped = 0
    for image, index in zip(images, order):
        source = padded[index]
        windows = {(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if torch.equal((source.flip(-1) if f else source)[:, dy:dy + 32, dx:dx + 32], image)}
        assert windows, "every augmented image must be a (possibly flipped) 32x32 window of the padded image"
        flipped += all(f for *_, f in windows)
    assert 5 < flipped < 59


def test_reflect_padding_mirrors_the_border_and_zeros_pads_black():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(1, 3, 4, 4).contiguous()
    corners = {}
    for mode in ("reflect", "zeros"):
        loader = DeviceLoader(image, torch.zeros(1, dtype=torch.long), 1, crop_padding=2, padding_mode=mode, flip=False)
        assert loader.padded.shape == (1, 3, 8, 8)
        corners[mode] = loader.padded[0, 0, :3, :3].tolist()
    # reflect: row -2 is row 2, column -2 is column 2 (the edge pixel is not repeated), as Wide-ResNet pads
    assert corners["reflect"] == [[10, 9, 8], [6, 5, 4], [2, 1, 0]]
    assert corners["zeros"] == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="reflect padding of 4 pixels needs images larger"):
        DeviceLoader(image, torch.zeros(1, dtype=torch.long), 1, crop_padding=4)


def test_ranks_batches_together_are_the_single_process_batch_augmented_alike():
    data = synthetic(10, 96, 10)
    single = DeviceLoader(data.train_images, data.train_labels, 32, seed=7)
    ranks = [DeviceLoader(data.train_images, data.train_labels, 16, seed=7, rank=r, world_size=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    for (images, labels), *shards in zip(single, *ranks):
        key = lambda pairs: sorted((int(y), x.sum().item(), x.flatten()[:50].tolist()) for x, y in pairs)
        merged = [(x, y) for shard_x, shard_y in shards for x, y in zip(shard_x, shard_y)]
        assert key(zip(images, labels)) == key(merged)


def test_eval_loader_is_ordered_normalised_and_complete():
    data = synthetic(10, 10, 37)
    mean, std = data.channel_stats()
    loader = DeviceLoader(data.test_images, data.test_labels, 10, train=False, mean=mean, std=std)
    images = torch.cat([x for x, _ in loader])
    expected = (data.test_images.float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(images, expected, atol=1e-5) and len(loader) == 4


def test_validation_split_is_held_out_of_train():
    data = synthetic(10, 300, 50).with_validation(60, seed=2)
    assert data.train_images.shape[0] == 240 and data.val_images.shape[0] == 60
    train_rows = {tuple(x.flatten()[:64].tolist()) for x in data.train_images}
    assert not any(tuple(x.flatten()[:64].tolist()) in train_rows for x in data.val_images)


def write_parquet(folder, images, labels, column="img"):
    rows = [{"bytes": encode_jpeg(img, quality=95).numpy().tobytes(), "path": f"{i}.jpg"} for i, img in enumerate(images)]
    table = pa.table({column: rows, "label": pa.array(labels.tolist(), pa.int64())})
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        pq.write_table(table, folder / f"{split}.parquet")


def test_parquet_round_trip_decodes_jpeg_bytes(tmp_path):
    data = synthetic(10, 20, 10)
    write_parquet(tmp_path / "ds", data.train_images, data.train_labels)
    loaded = load_dataset(f"parquet:{tmp_path / 'ds'}")
    assert loaded.train_images.shape == (20, 3, 32, 32) and loaded.num_classes == 10
    assert torch.equal(loaded.train_labels, data.train_labels)
    # JPEG is lossy: each decoded image must be nearest to its own source image
    distance = torch.cdist(loaded.train_images.flatten(1).float(), data.train_images.flatten(1).float())
    assert torch.equal(distance.argmin(1), torch.arange(20))


def test_bad_datasets_get_one_line_errors_with_the_fix(tmp_path):
    data = synthetic(10, 4, 4)
    (tmp_path / "wrong").mkdir()
    for split in ("train", "test"):  # JPEG bytes as a plain binary column: not Hugging Face's Image struct
        blobs = [encode_jpeg(img).numpy().tobytes() for img in data.train_images]
        pq.write_table(pa.table({"img": pa.array(blobs, pa.binary()), "label": data.train_labels.numpy()}),
                       tmp_path / "wrong" / f"{split}.parquet")
    with pytest.raises(DataError, match="no image column: needs one struct column with a binary 'bytes' field.*found img \\(binary\\)"):
        check_dataset(f"parquet:{tmp_path / 'wrong'}")
    with pytest.raises(DataError, match="nothing does not exist; point parquet: at a folder"):
        load_dataset(f"parquet:{tmp_path / 'nothing'}")
    with pytest.raises(DataError, match="cifar100 not found under .*--download"):
        load_dataset("cifar100", root=str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        check_dataset("imagenet")
    for error in (DataError, ):
        assert issubclass(error, ValueError)


def test_real_cifar10_jpeg_parquet(shared_cifar):
    data = load_dataset(f"parquet:{shared_cifar}")
    assert data.train_images.shape == (50000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert data.num_classes == 10 and data.classes[0] == "airplane"
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    mean, _ = data.channel_stats()
    assert 110 < mean[0] < 135  # CIFAR-10's red-channel mean is about 125
