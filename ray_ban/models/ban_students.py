"""The paper's students of a DenseNet teacher: Table 4 (reshaped DenseNets), Table 5 (BAN-ResNets).

Table 4 students keep the teacher's stem and the size of the hidden state after every transition;
Table 5 students replace every dense block by N residual units, end at the width of the teacher's
fc and take the teacher's stem and fc (copied and frozen by ``inherit_from_teacher``), with nothing
trainable but BatchNorm between their last unit and that fc. docs/models.md gives the derivations.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from ray_ban.models.common import conv3x3, head, he_init
from ray_ban.models.densenet import DenseNet, DenseSpec, paper_spec, transition
from ray_ban.models.preresnet import Bottleneck
from ray_ban.models.registry import register, whole
from ray_ban.models.wide_resnet import BasicBlock

TEACHER = "densenet-90-60"


def teacher_spec(teacher: str) -> DenseSpec:
    """Parse a ``densenet-{L}-{k}`` teacher name into its spec (students are derived from it)."""
    match = re.fullmatch(r"densenet-(\d+)-(\d+)", teacher)
    if not match:
        raise ValueError(f"teacher must be a densenet-{{L}}-{{k}} name, got {teacher!r}")
    return paper_spec(int(match[1]), int(match[2]))


def _exact(value: float, what: str) -> int:
    """Round a derived size, refusing factors that do not divide it (e.g. 0.5x of 15 layers)."""
    if abs(value - round(value)) > 1e-6 or round(value) < 1:
        raise ValueError(f"{what} would be {value:g}, not a positive whole number; pick another factor")
    return int(round(value))


def depth_variant(spec: DenseSpec, f: float) -> DenseSpec:
    """Table 4 'fxDepth': f times the layers per block, growth / f, same stem (block outputs unchanged)."""
    split = tuple(_exact(n * f, f"layers per block ({n} x {f})") for n in spec.layers_per_stage)
    growth = _exact(spec.growth / f, f"growth ({spec.growth} / {f})")
    return dataclasses.replace(spec, layers_per_stage=split, growth=growth)


def compression_variant(spec: DenseSpec, f: float) -> DenseSpec:
    """Table 4 'fxCompr': reduction factor 1/theta times f, one growth rate, the teacher's hidden states.

    The growth is the one that makes the first transition compress by the new theta while writing the
    teacher's size (480 for 90-60); every transition then writes the teacher's size exactly, so the
    second one compresses by whatever that growth leaves (docs/models.md: 0.78, 0.61, 0.37 for 90-60)."""
    theta = spec.compression / f
    if not 0 < theta <= 1:
        raise ValueError(f"compression factor {f} gives theta = {theta:g}; theta must lie in (0, 1]")
    kept = spec.transition_outputs()  # (480, 660) for 90-60
    growth = max(1, round((kept[0] / theta - spec.stem_channels) / spec.layers_per_stage[0]))
    if spec.stem_channels + spec.layers_per_stage[0] * growth < kept[0]:
        growth += 1  # rounded down below the kept size (theta = 1, tiny nets): the transition must not widen
    student = dataclasses.replace(spec, compression=theta, growth=growth, transition_channels=kept)
    for (_, out, _), teacher_after in zip(student.channels()[:-1], kept):
        if out < teacher_after:  # a transition may compress, never widen
            raise ValueError(f"compression factor {f}: a block would output {out} channels, fewer than the "
                             f"{teacher_after} its transition must keep; pick a larger factor")
    return student


@register("densenet-{L}-{k}-depth{f}x", examples=tuple(f"densenet-90-60-depth{f}x" for f in ("0.5", "2", "3", "4")))
def densenet_depth(num_classes: int, L: int, k: int, f: float, memory_efficient: bool = False) -> DenseNet:
    """Table 4 depth student of DenseNet-L-k: f x layers, growth / f."""
    return DenseNet(depth_variant(paper_spec(whole(L, "L"), whole(k, "k")), f), num_classes, memory_efficient)


@register("densenet-{L}-{k}-compr{f}x", examples=tuple(f"densenet-90-60-compr{f}x" for f in ("0.5", "0.75", "1.5")))
def densenet_compression(num_classes: int, L: int, k: int, f: float, memory_efficient: bool = False) -> DenseNet:
    """Table 4 compression student of DenseNet-L-k: theta = 0.5 / f, the teacher's channels after every transition."""
    return DenseNet(compression_variant(paper_spec(whole(L, "L"), whole(k, "k")), f), num_classes, memory_efficient)


class BanResNet(nn.Module):
    """Table 5 student: the teacher's stem, N residual units per dense block, the teacher's fc.

    The last unit writes the fc's width (``features``), so the head is BN-ReLU-pool and the fc, with
    no trainable map between them: the frozen fc sees the student's own features, as it saw the
    teacher's."""

    inherits_stem_and_fc = True

    def __init__(self, unit: type[nn.Module], n: int, widths: tuple[int, ...], stem_channels: int, features: int,
                 num_classes: int, transition_theta: float | None = None, **unit_kwargs: float) -> None:
        super().__init__()
        self.stem = conv3x3(3, stem_channels)
        stages: list[nn.Module] = []
        c = stem_channels
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            if i and transition_theta is not None:  # "match": the teacher's own transitions
                stages.append(transition(c, int(c * transition_theta)))
                c, stride = int(c * transition_theta), 1
            stage_out = features if i == len(widths) - 1 else w  # the last stage ends at the fc's width
            stages.append(nn.Sequential(*(
                unit(c if j == 0 else w, stage_out if j == n - 1 else w, stride if j == 0 else 1, width=w,
                     **unit_kwargs)
                for j in range(n))))
            c = stage_out
        self.features = nn.Sequential(*stages)
        self.head = head(features)
        self.fc = nn.Linear(features, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) images -> (B, num_classes) logits."""
        return self.fc(self.head(self.features(self.stem(x))))


def ban_resnet(unit: type[nn.Module], num_classes: int, N: int, r: float, teacher: str, match: bool = False,
               **unit_kwargs: float) -> BanResNet:
    """BAN-X-N-r: stage i has width r * theta * (teacher block i output), i.e. r x the state the block hands on;
    the last unit of the last stage writes the teacher's feature width (1620 for 90-60)."""
    spec = teacher_spec(teacher)
    if r <= 0:
        raise ValueError(f"width ratio r must be positive, got {r}")
    widths = tuple(max(4, round(r * spec.compression * out)) for _, out, _ in spec.channels())
    return BanResNet(unit, whole(N, "units per block N"), widths, spec.stem_channels, spec.features, num_classes,
                     spec.compression if match else None, **unit_kwargs)


@register("ban-preresnet-{N}-{r}", examples=("ban-preresnet-14-0.5", "ban-preresnet-14-1"))
def ban_preresnet(num_classes: int, N: int, r: float, teacher: str = TEACHER) -> BanResNet:
    """BAN-Pre-ResNet-N-r: N bottleneck units per dense block of the teacher."""
    return ban_resnet(Bottleneck, num_classes, N, r, teacher)


@register("ban-wrn-{N}-{r}", examples=("ban-wrn-1-1", "ban-wrn-4-0.5", "ban-wrn-4-1"))
def ban_wrn(num_classes: int, N: int, r: float, teacher: str = TEACHER, dropout: float = 0.0) -> BanResNet:
    """BAN-Wide-ResNet-N-r: N basic units per dense block, strided first unit between stages."""
    return ban_resnet(BasicBlock, num_classes, N, r, teacher, dropout=dropout)


@register("ban-match-wrn-{N}-{r}", examples=("ban-match-wrn-2-1",))
def ban_match_wrn(num_classes: int, N: int, r: float, teacher: str = TEACHER, dropout: float = 0.0) -> BanResNet:
    """BAN-Match-Wide-ResNet-N-r (our reading): ban-wrn with the teacher's DenseNet transitions between stages."""
    return ban_resnet(BasicBlock, num_classes, N, r, teacher, match=True, dropout=dropout)
