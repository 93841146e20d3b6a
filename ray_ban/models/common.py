"""Pieces every family shares: He initialisation and the pre-activation head."""

from __future__ import annotations

from torch import nn


def he_init(model: nn.Module) -> None:
    """Standard He init (kaiming normal, fan_out) for convs; BN weight 1 bias 0; linear bias 0."""
    if any(p.is_meta for p in model.parameters()):
        return  # shape-only models (parameter counts, check_pair): nothing to initialise, and it is slow
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN always follows or precedes it)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias, for bottlenecks, transitions and projection shortcuts."""
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def head(channels: int) -> nn.Sequential:
    """Final BN-ReLU-global-average-pool-flatten of a pre-activation network (fc follows)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def stage(block: type[nn.Module], n: int, cin: int, cout: int, stride: int, **kwargs: float) -> nn.Sequential:
    """n residual units; the first changes channels/resolution, the rest keep them."""
    return nn.Sequential(*(block(cin if i == 0 else cout, cout, stride if i == 0 else 1, **kwargs) for i in range(n)))
