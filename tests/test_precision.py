"""Recipe precision: what each setting runs on CPU and CUDA, and the teacher's soft targets always from fp32 logits."""

import pytest
import torch

from ray_ban import models
from ray_ban.data import synthetic
from ray_ban.core.engine import Generation
from ray_ban.core.precision import Precision, resolve
from ray_ban.config.recipe import Recipe

DATA = synthetic(10, 128, 40)
FAST = "resnet9-8"  # under CPU fp16 autocast, far faster than wrn-10-1: what these tests check does not need the larger net


def net(seed: int, name: str = "wrn-10-1") -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build(name, 10)


@pytest.mark.parametrize("name,device,runs", [
    ("auto", "cpu", "fp32"), ("auto", "cuda", "bf16"), ("bf16", "cpu", "bf16"), ("fp16", "cpu", "fp16"),
    ("tf32", "cpu", "fp32"), ("tf32", "cuda", "tf32"), ("fp32", "cuda", "fp32"),
])
def test_each_setting_resolves_to_what_runs_on_the_device(name, device, runs):
    precision = resolve(name, device)
    assert precision.name == runs
    assert precision.autocast_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}.get(runs)
    assert precision.grad_scaler().is_enabled() == (runs == "fp16")


def test_cuda_math_flags_follow_the_precision_and_are_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with Precision("fp32", "cuda").math():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        with Precision("bf16", "cuda").math():
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize("precision,student_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_the_loss_gets_the_teachers_fp32_logits_under_every_precision(precision, student_dtype):
    teacher = net(1, FAST).eval()
    generation = Generation(net(0, FAST), DATA, Recipe(epochs=1, batch_size=64, lr=0.05, precision=precision),
                            loss="ban", teacher=teacher, seed=0)
    seen = []
    loss_fn = generation.loss_fn

    def recording(student_logits, teacher_logits, labels, **params):
        seen.append((student_logits.dtype, teacher_logits.detach().clone()))
        return loss_fn(student_logits, teacher_logits, labels, **params)

    generation.loss_fn = recording
    loader = generation.train_loader
    loader.set_epoch(0)
    batches = [images for images, _ in loader]
    report = generation.train_epoch()
    assert len(seen) == len(batches) == 2 and torch.isfinite(torch.tensor(report.train_loss))
    with torch.no_grad():  # the same teacher, forward in plain fp32, no autocast anywhere
        reference = [teacher(images) for images in batches]
    for (dtype, teacher_logits), expected in zip(seen, reference):
        assert dtype == student_dtype  # the student did run under the precision's autocast
        assert teacher_logits.dtype == torch.float32 and torch.equal(teacher_logits, expected)
    assert generation.teacher_test_logits.dtype == torch.float32


def test_under_cpu_bf16_autocast_a_teacher_forward_would_round_its_logits():
    """What the fp32 teacher avoids: the same forward under bf16 autocast returns coarser logits."""
    teacher = net(1).eval()
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        exact = teacher(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = teacher(images)
    assert rounded.dtype == torch.bfloat16 and not torch.equal(rounded.float(), exact)


def test_fp16_on_cpu_trains_with_a_gradient_scaler_that_checkpoints():
    generation = Generation(net(0, FAST), DATA, Recipe(epochs=2, batch_size=64, lr=0.05, precision="fp16"), seed=0)
    first = generation.train_epoch()
    state = generation.state_dict()
    assert generation.scaler.is_enabled() and state["scaler"]["scale"] > 0
    resumed = Generation(net(5, FAST), DATA, Recipe(epochs=2, batch_size=64, lr=0.05, precision="fp16"), seed=0)
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == generation.scaler.get_scale()
    second = resumed.train_epoch()
    assert all(torch.isfinite(torch.tensor(r.train_loss)) for r in (first, second)) and second.epoch == 2
