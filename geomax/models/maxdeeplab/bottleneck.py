"""Convolutional bottleneck residual block (1x1 -> 3x3 -> 1x1, ResNet style)."""
from __future__ import annotations

import torch
from torch import nn

from geomax.models.maxdeeplab.layers import DropPath, conv_bn


class ConvBottleneck(nn.Module):
    """ResNet bottleneck: 1x1 (filters) -> 3x3 (filters, stride) -> 1x1 (4 * filters).

    Takes an *activated* input and returns the *non-activated* sum of branch and
    shortcut (the caller applies the ReLU; the decoder may read the sum).
    The last BN starts at zero so the block starts as the identity.

    Parameters
    ----------
    in_channels : int
        Input channels.
    filters : int
        Bottleneck width; the output has ``4 * filters`` channels.
    stride : int
        Stride of the 3x3 convolution (and of the projection shortcut).
    drop_path : float
        Drop-path rate of the residual branch.
    """

    def __init__(self, in_channels: int, filters: int, stride: int = 1,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        out_channels = 4 * filters
        self.conv1 = conv_bn(in_channels, filters, 1)
        self.conv2 = conv_bn(filters, filters, 3, stride=stride)
        self.conv3 = conv_bn(filters, out_channels, 1, relu=False, zero_gamma=True)
        self.drop_path = DropPath(drop_path)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride=stride, relu=False)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Activated (B, C_in, H, W) -> non-activated (B, 4 * filters, H / stride, W / stride)."""
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return shortcut + self.drop_path(self.conv3(self.conv2(self.conv1(x))))
