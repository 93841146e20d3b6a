"""DenseNet-BC (Huang et al. 2017) for 32x32 inputs: 3 dense blocks, bottlenecks, compression."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from ray_ban.models.common import conv1x1, conv3x3, head, he_init
from ray_ban.models.registry import register, whole

# Layers per dense block for the BAN paper's DenseNets, whose depths do not follow L = 6n + 4.
# Chosen as the (near-)even split whose parameter count reproduces Table 1 (CIFAR-10), extra
# layers going to the last block (the same rule gives exactly L = 80 for the 80-k nets):
#   112-33: 17/17/17 -> 6.27M (paper 6.3M; the rule would give 18/18/18 = 6.89M)
#   90-60 : 14/14/16 -> 16.06M (paper 16.1M; 14/14/15 = 15.55M is 3.4% short)
#   80-80 : 12/12/14 -> 22.55M (paper 22.4M), 80-120: 12/12/14 -> 50.63M (paper 50.4M)
PAPER_SPLITS: dict[tuple[int, int], tuple[int, int, int]] = {
    (112, 33): (17, 17, 17),
    (90, 60): (14, 14, 16),
    (80, 80): (12, 12, 14),
    (80, 120): (12, 12, 14),
}


@dataclass(frozen=True)
class DenseSpec:
    """Everything that fixes a DenseNet-BC's shape; Table 4/5 students are derived from it."""

    growth: int
    layers_per_stage: tuple[int, ...]
    stem_channels: int
    compression: float = 0.5
    bottleneck: int = 4
    # channels each transition writes; None: floor(compression x block output), as in DenseNet-BC.
    # Table 4's compression students set the teacher's sizes here (their hidden states must match).
    transition_channels: tuple[int, ...] | None = None

    def channels(self) -> list[tuple[int, int, int]]:
        """Per block: (channels in, channels out, channels after its transition; last = out)."""
        rows, c = [], self.stem_channels
        for i, n in enumerate(self.layers_per_stage):
            out = c + n * self.growth
            if i == len(self.layers_per_stage) - 1:
                after = out
            elif self.transition_channels is not None:
                after = self.transition_channels[i]
            else:
                after = int(math.floor(out * self.compression))
            rows.append((c, out, after))
            c = after
        return rows

    def transition_outputs(self) -> tuple[int, ...]:
        """Channels after each transition: the hidden states Table 4's students share with their teacher."""
        return tuple(after for _, _, after in self.channels()[:-1])

    @property
    def features(self) -> int:
        """Channels entering the final fc."""
        return self.channels()[-1][1]


def paper_spec(depth: int, growth: int, layers_per_stage: tuple[int, ...] | None = None,
               compression: float = 0.5) -> DenseSpec:
    """Spec for ``densenet-{L}-{k}``: explicit split, else PAPER_SPLITS, else (L-4)/6 per block."""
    if layers_per_stage is None:
        if (depth, growth) in PAPER_SPLITS:
            layers_per_stage = PAPER_SPLITS[(depth, growth)]
        elif depth > 4 and (depth - 4) % 6 == 0:
            layers_per_stage = ((depth - 4) // 6,) * 3
        else:
            raise ValueError(
                f"densenet-{depth}-{growth}: DenseNet-BC needs (L-4) divisible by 6 ((L-4)/6 layers per block); "
                f"pass layers_per_stage=(a, b, c) or use one of {sorted(PAPER_SPLITS)}")
    split = tuple(int(n) for n in layers_per_stage)
    if len(split) != 3 or min(split) < 1 or growth < 1:
        raise ValueError(f"densenet-{depth}-{growth}: need three positive layer counts and growth, got {split}")
    if not 0 < compression <= 1:
        raise ValueError(f"densenet-{depth}-{growth}: compression must lie in (0, 1], got {compression}")
    return DenseSpec(growth, split, stem_channels=2 * growth, compression=compression)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck x growth) then BN-ReLU-3x3 conv (growth new channels)."""

    def __init__(self, cin: int, growth: int, bottleneck: int, memory_efficient: bool) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, bottleneck * growth)
        self.norm2, self.conv2 = nn.BatchNorm2d(bottleneck * growth), conv3x3(bottleneck * growth, growth)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        """Concatenate earlier features and squeeze them: the memory hog that checkpointing recomputes."""
        return self.conv1(F.relu(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return only the growth new feature maps; the block keeps the list."""
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            x = cp.checkpoint(self.bottleneck, *features, use_reentrant=False)
        else:
            x = self.bottleneck(*features)
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    """n dense layers, each seeing the concatenation of the block input and all earlier outputs."""

    def __init__(self, n: int, cin: int, growth: int, bottleneck: int, memory_efficient: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(cin + i * growth, growth, bottleneck, memory_efficient) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grow the feature list layer by layer and return it concatenated."""
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


def transition(cin: int, cout: int) -> nn.Sequential:
    """BN-ReLU-1x1 conv-2x2 average pool: compress channels and halve the resolution."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), conv1x1(cin, cout), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    """DenseNet-BC for CIFAR: 3x3 stem, dense blocks with transitions, BN-ReLU-pool-fc."""

    inherits_stem_and_fc = False

    def __init__(self, spec: DenseSpec, num_classes: int, memory_efficient: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.stem = conv3x3(3, spec.stem_channels)
        stages: list[nn.Module] = []
        rows = spec.channels()
        for i, (n, (cin, cout, after)) in enumerate(zip(spec.layers_per_stage, rows)):
            stages.append(DenseBlock(n, cin, spec.growth, spec.bottleneck, memory_efficient))
            if i < len(rows) - 1:
                stages.append(transition(cout, after))
        self.features = nn.Sequential(*stages)
        self.head = head(spec.features)
        self.fc = nn.Linear(spec.features, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) images -> (B, num_classes) logits."""
        return self.fc(self.head(self.features(self.stem(x))))


@register("densenet-{L}-{k}", examples=("densenet-100-12", "densenet-250-24", "densenet-190-40",
                                         "densenet-112-33", "densenet-90-60", "densenet-80-80", "densenet-80-120"))
def densenet(num_classes: int, L: int, k: int, layers_per_stage: tuple[int, ...] | None = None,
             compression: float = 0.5, memory_efficient: bool = False) -> DenseNet:
    """DenseNet-BC of depth L and growth k (layers per block from PAPER_SPLITS or (L-4)/6)."""
    spec = paper_spec(whole(L, "L"), whole(k, "k"), layers_per_stage, compression)
    return DenseNet(spec, num_classes, memory_efficient)

