"""Wide-ResNet (Zagoruyko & Komodakis 2016): pre-activation basic blocks, widths 16k/32k/64k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ray_ban.models.common import conv1x1, conv3x3, head, he_init, stage
from ray_ban.models.registry import register, whole


class BasicBlock(nn.Module):
    """BN-ReLU-3x3 conv-BN-ReLU-dropout-3x3 conv plus a (projected when shapes change) shortcut.

    ``width``: channels between the two convs (default ``cout``, as in WRN); a Table 5 student's last
    unit keeps its stage's width there and writes the teacher fc's width with its second conv."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0, width: int | None = None) -> None:
        super().__init__()
        width = width or cout
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, width, stride)
        self.norm2, self.conv2 = nn.BatchNorm2d(width), conv3x3(width, cout)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update; the projection shortcut takes the pre-activated input, as in WRN."""
        o = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv2(self.dropout(F.relu(self.norm2(self.conv1(o)))))
        return o + skip


class WideResNet(nn.Module):
    """WRN-d-k for 32x32 inputs: 16-channel stem, 3 stages of (d-4)/6 blocks, BN-ReLU-pool-fc."""

    inherits_stem_and_fc = False

    def __init__(self, depth: int, widen: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"wrn-{depth}-{widen}: Wide-ResNet depth must be 6n+4, n >= 1 (10, 16, 22, 28, 40)")
        n, widths = (depth - 4) // 6, [16 * widen, 32 * widen, 64 * widen]
        self.stem = conv3x3(3, 16)
        self.features = nn.Sequential(
            stage(BasicBlock, n, 16, widths[0], 1, dropout=dropout),
            stage(BasicBlock, n, widths[0], widths[1], 2, dropout=dropout),
            stage(BasicBlock, n, widths[1], widths[2], 2, dropout=dropout))
        self.head = head(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) images -> (B, num_classes) logits."""
        return self.fc(self.head(self.features(self.stem(x))))


@register("wrn-{d}-{k}", examples=("wrn-28-1", "wrn-28-2", "wrn-28-5", "wrn-28-10"))
def wide_resnet(num_classes: int, d: int, k: int, dropout: float = 0.0) -> WideResNet:
    """WRN-d-k; ``dropout`` between the two convs of each block (0.3 in the WRN paper's best runs)."""
    return WideResNet(whole(d, "depth d"), whole(k, "widen factor k"), num_classes, dropout)
