"""Two gloo workers train the weights one process trains on the same global batches (image models).

BatchNorm statistics over the global batch (``recipe.sync_batchnorm``, ``AllReduceBatchNorm`` on CPU),
CWTM's weights normalised over the global batch, DDP's gradient average and the loader's shards with
their crops and flips must all agree for that; without synchronised BatchNorm the weights differ.

A small conv-BN net on 8x8 images: a conv right before a BatchNorm gets a weight gradient that is a
sum over every pixel of terms that cancel (BN removes the mean), so on 32x32 batches of wrn-10-1 its
stem's gradient moves by 1% between one and two CPU threads of the same single process, and no
reduction order (DDP's included) could match it to 1e-5. Here float noise stays below 1e-6.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch import nn

from ray_ban.data import ImageSplits, synthetic
from ray_ban.core.engine import Generation
from ray_ban.config.recipe import Recipe
from ray_ban.core.sync_batchnorm import AllReduceBatchNorm

RECIPE = Recipe(epochs=1, batch_size=64, lr=0.1, schedule="constant", eval_batch_size=40, crop_padding=2)  # 4 steps
RUNS = {"label": RECIPE, "ban": RECIPE, "cwtm": RECIPE, "label-unsynced": RECIPE.replace(sync_batchnorm=False)}


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _data() -> ImageSplits:
    """The generated classes at 8x8 (every fourth pixel): 256 train images, 40 test."""
    full = synthetic(10, 256, 40, seed=2)
    small = lambda images: images[:, :, ::4, ::4].contiguous()
    return ImageSplits("tiny", small(full.train_images), full.train_labels, small(full.test_images), full.test_labels, 10)


def _train(run: str) -> dict:
    """One epoch of ``run`` from fixed initial weights (student seed 0, teacher seed 1); the student's state."""
    loss = run.split("-")[0]
    student, teacher = _net(0), None
    if loss != "label":
        teacher = _net(1)
        with torch.no_grad():
            teacher[-1].weight.mul_(30)  # a confident teacher: CWTM's weights vary from sample to sample
    generation = Generation(student, _data(), RUNS[run], loss=loss, teacher=teacher, seed=3)
    report = generation.train_epoch()
    synced = any(isinstance(m, AllReduceBatchNorm) for m in generation.student.modules())
    return {"state": {k: v.detach().clone() for k, v in generation.student.state_dict().items()},
            "loss": report.train_loss, "synced": synced}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.save({run: _train(run) for run in RUNS}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(folder / "rank")), nprocs=2)
    return [torch.load(folder / f"rank.{r}") for r in range(2)]


@pytest.mark.parametrize("loss", ["label", "ban", "cwtm"])
def test_two_workers_train_what_one_process_trains(two_workers, loss):
    single = _train(loss)
    ranks = [w[loss] for w in two_workers]
    assert ranks[0]["synced"] and not single["synced"]
    assert ranks[0]["loss"] == pytest.approx(single["loss"], abs=1e-5)
    for name, weights in single["state"].items():
        assert torch.allclose(ranks[0]["state"][name].double(), weights.double(), atol=1e-5, rtol=0), name
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name


def test_without_synchronised_batchnorm_two_workers_train_something_else(two_workers):
    single = _train("label")["state"]
    unsynced = two_workers[0]["label-unsynced"]
    assert not unsynced["synced"]
    gap = max((unsynced["state"][k].double() - v.double()).abs().max().item()
              for k, v in single.items() if v.is_floating_point())
    assert gap > 1e-3
