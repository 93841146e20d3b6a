"""Model registry: parameter counts against the papers, forward shapes, stem/fc inheritance, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ray_ban import models
from ray_ban.models.densenet import PAPER_SPLITS

# (name, classes, published params in millions as printed, our exact count, within 3% of the paper?)
# Table 1 / external reference nets are CIFAR-10; the Table 4/5 students are CIFAR-100.
ARCHITECTURES = [
    ("wrn-28-1", 10, "0.38", 369_498, True),
    ("wrn-28-2", 10, "1.48", 1_467_610, True),
    ("wrn-28-5", 10, "9.16", 9_132_634, True),
    ("wrn-28-10", 10, "36.5", 36_479_194, True),
    ("preresnet-164", 10, "1.7", 1_703_258, True),
    ("preresnet-1001", 10, "10.2", 10_327_706, True),
    ("densenet-100-12", 10, "0.8", 769_162, True),
    ("densenet-250-24", 10, "15.3", 15_324_406, True),
    ("densenet-190-40", 10, "25.6", 25_624_430, True),
    ("densenet-112-33", 10, "6.3", 6_270_851, True),
    ("densenet-90-60", 10, "16.1", 16_056_130, True),
    ("densenet-80-80", 10, "22.4", 22_546_730, True),
    ("densenet-80-120", 10, "50.4", 50_632_090, True),
    ("densenet-90-60-depth0.5x", 100, "21.2", 21_549_220, True),
    ("densenet-90-60-depth2x", 100, "13.7", 13_586_020, True),
    ("densenet-90-60-depth3x", 100, "12.9", 12_765_220, True),
    ("densenet-90-60-depth4x", 100, "12.6", 12_393_220, True),
    ("densenet-90-60-compr0.5x", 100, "5.1", 5_335_084, False),  # +4.6%
    ("densenet-90-60-compr0.75x", 100, "10.1", 9_957_578, True),
    ("densenet-90-60-compr1.5x", 100, "80.5", 33_524_720, False),  # no sensible reading reaches 80.5M
    ("ban-preresnet-14-0.5", 100, "7.3", 5_974_453, False),  # -18%
    ("ban-preresnet-14-1", 100, "17.7", 21_994_866, False),  # +24%
    ("ban-wrn-1-1", 100, "20.9", 22_474_480, False),  # +7.5%
    ("ban-match-wrn-2-1", 100, "43.1", 42_357_220, True),
    ("ban-wrn-4-0.5", 100, "24.3", 24_076_855, True),
    ("ban-wrn-4-1", 100, "87.3", 93_891_280, False),  # +7.6%
]

# Cheap members of every family (name, build kwargs), run for real on CPU.
TINY = [
    ("densenet-22-8", {}),
    ("densenet-22-8", {"layers_per_stage": (1, 2, 3), "compression": 0.75}),
    ("densenet-22-8-depth2x", {}),
    ("densenet-22-8-compr0.5x", {}),
    ("wrn-10-1", {"dropout": 0.3}),
    ("preresnet-11", {}),
    ("ban-preresnet-1-0.5", {"teacher": "densenet-22-8"}),
    ("ban-wrn-1-0.5", {"teacher": "densenet-22-8"}),
    ("ban-match-wrn-1-1", {"teacher": "densenet-22-8"}),
]


def meta_build(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build with shapes only: big nets cost no memory or init time."""
    with torch.device("meta"):
        return models.build(name, num_classes, **kwargs)


def test_every_example_is_counted_here() -> None:
    images = [name for name in models.examples() if not models.is_language_model(name)]  # LMs: test_language.py
    assert sorted(images) == sorted(name for name, *_ in ARCHITECTURES)


@pytest.mark.parametrize("name,classes,paper,ours,matched", ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_parameter_count_and_shape(name: str, classes: int, paper: str, ours: int, matched: bool) -> None:
    model = meta_build(name, classes)
    count = models.parameter_count(model)
    assert count == ours, f"{name}: {count:,} parameters, docs/models.md says {ours:,}"
    published = float(paper) * 1e6
    rounding = 0.5 * 10 ** (6 - len(paper.split(".")[1]))  # "0.8" means 0.75M..0.85M
    within = abs(count - published) <= max(0.03 * published, rounding)
    assert within == matched, f"{name}: {count / 1e6:.2f}M vs paper {paper}M"
    with torch.no_grad():
        out = model.eval()(torch.empty(2, 3, 32, 32, device="meta"))
    assert out.shape == (2, classes)
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.fc, nn.Linear)


def test_paper_splits_are_used() -> None:
    for (depth, growth), split in PAPER_SPLITS.items():
        assert meta_build(f"densenet-{depth}-{growth}", 10).spec.layers_per_stage == split
    assert meta_build("densenet-100-12", 10).spec.layers_per_stage == (16, 16, 16)
    assert meta_build("densenet-90-60", 10, layers_per_stage=(14, 14, 15)).spec.layers_per_stage == (14, 14, 15)


@pytest.mark.parametrize("name,kwargs", TINY, ids=[f"{n}{'+' if k else ''}{'-'.join(k)}" for n, k in TINY])
def test_tiny_forward(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = models.build(name, 7, **kwargs)
    assert models.parameter_count(model) < 200_000
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_memory_efficient_densenet_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = models.build("densenet-22-8", 5)
    lean = models.build("densenet-22-8", 5, memory_efficient=True)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, lean):
        model(x).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), lean.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_wrn_dropout_is_in_the_modules() -> None:
    rates = [m.p for m in models.build("wrn-10-1", 10, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert rates and all(p == 0.3 for p in rates)


def test_he_init() -> None:
    model = models.build("wrn-10-1", 10)
    conv = model.features[0][0].conv1
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5  # fan_out
    assert abs(conv.weight.std().item() - expected) / expected < 0.2
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert (model.fc.bias == 0).all()


def test_inherit_from_teacher_copies_and_freezes() -> None:
    teacher = models.build("densenet-22-8", 10)
    student = models.build("ban-wrn-1-0.5", 10, teacher="densenet-22-8")
    assert student.inherits_stem_and_fc and not getattr(teacher, "inherits_stem_and_fc", False)
    models.inherit_from_teacher(student, teacher)
    for mine, theirs in ((student.stem, teacher.stem), (student.fc, teacher.fc)):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            assert torch.equal(a, b) and not a.requires_grad and a.data_ptr() != b.data_ptr()
    frozen = {id(p) for m in (student.stem, student.fc) for p in m.parameters()}
    rest = [p for p in student.parameters() if id(p) not in frozen]
    assert rest and all(p.requires_grad for p in rest)
    assert all(p.requires_grad for p in teacher.parameters())


def test_inherit_from_teacher_rejects_other_shapes() -> None:
    student = models.build("ban-wrn-1-0.5", 10, teacher="densenet-22-8")
    before = student.stem.weight.clone()
    with pytest.raises(ValueError, match=r"fc\.weight: student has \(10, 46\), teacher \(10, 64\)"):
        models.inherit_from_teacher(student, models.build("wrn-10-1", 10))  # same stem shape, other fc
    assert torch.equal(student.stem.weight, before) and student.stem.weight.requires_grad  # nothing half-done


def test_check_pair() -> None:
    models.check_pair("densenet-90-60", "ban-wrn-4-1", 100)  # 87M params, on meta: instant
    models.check_pair("densenet-80-80", "wrn-28-10", 100)  # ordinary students inherit nothing
    models.check_pair("densenet-80-80", "ban-wrn-1-1", 100, teacher="densenet-80-80")
    with pytest.raises(ValueError, match="cannot inherit from teacher 'densenet-80-80'") as err:
        models.check_pair("densenet-80-80", "ban-wrn-1-1", 100)
    assert "\n" not in str(err.value)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"'densnet-90-60'.*'densenet-90-60'.*available\(\)"):
        models.build("densnet-90-60", 10)
    with pytest.raises(ValueError, match="'wrn-28-10'"):
        models.build("wrn-28-10x", 10)


@pytest.mark.parametrize("name,message", [
    ("densenet-91-60", "divisible by 6"),
    ("wrn-27-2", "6n\\+4"),
    ("preresnet-100", "9n\\+2"),
    ("densenet-90-60-depth0.3x", "whole number"),
    ("ban-wrn-1.5-1", "whole number"),
])
def test_invalid_fields_are_explained(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        meta_build(name, 10)


def test_available_lists_the_patterns() -> None:
    names = models.available()
    for pattern in ("densenet-{L}-{k}", "wrn-{d}-{k}", "preresnet-{d}", "ban-wrn-{N}-{r}", "ban-preresnet-{N}-{r}"):
        assert pattern in names
