"""Axial-attention bottleneck block: 1x1 conv -> axial attention (H then W) -> 1x1 conv."""
from __future__ import annotations

import torch
from torch import nn

from geomax.models.maxdeeplab.axial_attention import AxialAttention2D
from geomax.models.maxdeeplab.layers import DropPath, conv_bn


class AxialBlock(nn.Module):
    """Residual block whose 3x3 convolution is replaced by 2-D axial attention (P2P).

    Channel plan of deeplab2's axial blocks: 1x1 conv to ``expansion * filters``,
    axial attention with keys of ``filters`` and values of ``2 * filters``
    channels, 1x1 conv (zero-initialised BN) to ``4 * filters``.
    Activated input, non-activated output (caller applies the ReLU).

    Parameters
    ----------
    in_channels : int
        Input channels.
    filters : int
        Base width; output has ``4 * filters`` channels.
    num_heads, max_span : int
        Attention heads and positional-table span.
    bottleneck_expansion : float
        Width of the first 1x1 conv relative to ``filters`` (2 in MaX-DeepLab).
    key_expansion, value_expansion : float
        Attention channel ratios (1 and 2).
    drop_path : float
        Drop-path rate of the residual branch.
    """

    def __init__(self, in_channels: int, filters: int, num_heads: int = 8, max_span: int = 255,
                 bottleneck_expansion: float = 2.0, key_expansion: float = 1.0,
                 value_expansion: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__()
        out_channels = 4 * filters
        mid = int(round(filters * bottleneck_expansion))
        self.conv1 = conv_bn(in_channels, mid, 1)
        self.attention = AxialAttention2D(mid, filters, num_heads, max_span,
                                          key_expansion, value_expansion)
        self.conv3 = conv_bn(self.attention.out_channels, out_channels, 1, relu=False,
                             zero_gamma=True)
        self.drop_path = DropPath(drop_path)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, 1, relu=False)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Activated (B, C_in, H, W) -> non-activated (B, 4 * filters, H, W)."""
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = torch.relu(self.attention(self.conv1(x)))
        return shortcut + self.drop_path(self.conv3(y))
