"""A ResNet-9-style fast family (airbench / DAWNBench lineage): conv-BN-ReLU stages, max-pooling, two
residual pairs, widths w/2w/4w. ``resnet9-16`` is the 0.12M-parameter network of the bare anchor script
(``/work/shared/anchors/bare_ban_cifar10.py``): a CPU trains it to ~20% CIFAR-10 error in six epochs."""

from __future__ import annotations

import torch
from torch import nn

from ray_ban.models.common import conv3x3
from ray_ban.models.registry import register, whole


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv (no bias) - BatchNorm - ReLU, post-activation as in the anchor."""
    return nn.Sequential(conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + conv_bn(conv_bn(x)): the residual pair after each pooled stage."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.a, self.b = conv_bn(channels, channels), conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class ResNet9(nn.Module):
    """stem conv_bn(3, w) - conv_bn(w, 2w) - pool - Res(2w) - conv_bn(2w, 4w) - pool - Res(4w) - global max pool - fc.

    Initialised with PyTorch's layer defaults, not He init: the anchor trains from those, and its
    six-epoch error is what this family is held to."""

    inherits_stem_and_fc = False

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn(3, w)
        self.features = nn.Sequential(
            conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2), Residual(4 * w))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, num_classes) logits."""
        return self.fc(self.head(self.features(self.stem(x))))


@register("resnet9-{w}", examples=())
def resnet9(num_classes: int, w: int) -> ResNet9:
    """resnet9-w: widths w/2w/4w; 4 (8k params) to 64 (1.9M); 16 is the anchor's 0.12M network."""
    return ResNet9(whole(w, "width w"), num_classes)
