"""Inception-style stem (three 3x3 convolutions, the first strided, no max-pool)
and the rule that adapts a pretrained first convolution to any band count."""
from __future__ import annotations

from typing import Sequence, cast

import torch
from torch import nn

from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.layers import conv_bn


class InceptionStem(nn.Module):
    """Three 3x3 conv + BN layers (stride 2, 1, 1), ReLU between them; output stride 2.

    The output is returned *before* the last ReLU: the first stage applies it,
    and the decoder may read the non-activated feature (deeplab2 habit).

    Parameters
    ----------
    in_channels : int
        Number of image bands.
    channels : sequence of 3 ints
        Output channels of the three convolutions (MaX-DeepLab-S: 64, 64, 128).
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (64, 64, 128)) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ArgumentError(f"stem_channels must have 3 entries, got {list(channels)}; pass three channel "
                                "counts, e.g. (64, 64, 128)")
        c0, c1, c2 = (int(c) for c in channels)
        self.conv1 = conv_bn(in_channels, c0, 3, stride=2)
        self.conv2 = conv_bn(c0, c1, 3)
        self.conv3 = conv_bn(c1, c2, 3, relu=False)
        self.out_channels = c2

    @property
    def first_conv(self) -> nn.Conv2d:
        """The convolution that reads the image bands."""
        return cast(nn.Conv2d, self.conv1[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> non-activated (B, C, H/2, W/2)."""
        return self.conv3(self.conv2(self.conv1(x)))


def adapt_first_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution kernel trained on ``k`` bands to ``in_channels`` bands.

    The rule (documented for users loading RGB checkpoints into multispectral models):

    * ``in_channels == k``: unchanged.
    * ``in_channels > k``: the ``k`` trained kernels are kept for the first ``k``
      bands; every extra band gets the mean of the ``k`` kernels; then the whole
      kernel is scaled by ``k / in_channels`` so that, for bands with similar
      normalised statistics, the response keeps its magnitude.
    * ``in_channels < k``: the first ``in_channels`` kernels are kept and scaled by
      ``k / in_channels`` (same magnitude argument).

    Parameters
    ----------
    weight : torch.Tensor
        (out, k, kh, kw) kernel from a checkpoint.
    in_channels : int
        Band count of the model being built.

    Returns
    -------
    torch.Tensor
        (out, in_channels, kh, kw) kernel.
    """
    if weight.ndim != 4:
        raise ArgumentError(f"expected a 4-D convolution kernel, got shape {tuple(weight.shape)}")
    k = weight.shape[1]
    if in_channels < 1:
        raise ArgumentError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == k:
        return weight.clone()
    if in_channels > k:
        extra = weight.mean(dim=1, keepdim=True).expand(-1, in_channels - k, -1, -1)
        out = torch.cat([weight, extra], dim=1)
    else:
        out = weight[:, :in_channels]
    return out * (k / in_channels)
