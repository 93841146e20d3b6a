"""Pre-activation ResNet (He et al. 2016, "Identity mappings") with bottleneck units, for CIFAR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ray_ban.models.common import conv1x1, conv3x3, head, he_init, stage
from ray_ban.models.registry import register, whole


class Bottleneck(nn.Module):
    """BN-ReLU-1x1 (width/4), BN-ReLU-3x3 (width/4, strided), BN-ReLU-1x1 (cout), plus shortcut.

    ``width`` defaults to ``cout`` (the usual expansion 4); a Table 5 student's last unit keeps its
    stage's bottleneck and writes the teacher fc's width with its last 1x1 conv."""

    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int = 1, width: int | None = None) -> None:
        super().__init__()
        mid = max(1, (width or cout) // self.expansion)
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), conv1x1(cin, mid)
        self.norm2, self.conv2 = nn.BatchNorm2d(mid), conv3x3(mid, mid, stride)
        self.norm3, self.conv3 = nn.BatchNorm2d(mid), conv1x1(mid, cout)
        self.shortcut = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update; the projection shortcut takes the pre-activated input."""
        o = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv2(F.relu(self.norm2(self.conv1(o))))
        return self.conv3(F.relu(self.norm3(o))) + skip


class PreResNet(nn.Module):
    """Pre-ResNet-d: 16-channel stem, 3 stages of (d-2)/9 bottlenecks (outputs 64/128/256), BN-ReLU-pool-fc."""

    inherits_stem_and_fc = False

    def __init__(self, depth: int, num_classes: int) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"preresnet-{depth}: bottleneck Pre-ResNet depth must be 9n+2, n >= 1 (11, 164, 1001)")
        n, widths = (depth - 2) // 9, [64, 128, 256]
        self.stem = conv3x3(3, 16)
        self.features = nn.Sequential(
            stage(Bottleneck, n, 16, widths[0], 1),
            stage(Bottleneck, n, widths[0], widths[1], 2),
            stage(Bottleneck, n, widths[1], widths[2], 2))
        self.head = head(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) images -> (B, num_classes) logits."""
        return self.fc(self.head(self.features(self.stem(x))))


@register("preresnet-{d}", examples=("preresnet-164", "preresnet-1001"))
def preresnet(num_classes: int, d: int) -> PreResNet:
    """Pre-activation bottleneck ResNet of depth d (164: 1.7M params, 1001: 10.2M)."""
    return PreResNet(whole(d, "depth d"), num_classes)
