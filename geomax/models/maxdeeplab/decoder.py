"""Decoder: an extra axial + dual-path group at stride 16, then fuse 16 -> 8 -> 4
by bilinear resize + sum, optionally stacked L times (hourglass 4 -> 8 -> 16 -> 8 -> 4),
optionally ending with one more fusion at stride 2 with the stem feature
(``output_stride=2``: masks at half the input resolution, for small objects) and
a last one at stride 1 with a full-resolution feature of the image (``output_stride=1``)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.backbone import BlockGroup
from geomax.models.maxdeeplab.layers import conv_bn


class ResizedFuse(nn.Module):
    """ReLU -> 1x1 conv + BN per input, bilinear resize to the target size, sum.

    Parameters
    ----------
    in_channels : sequence of int
        Channels of each input.
    out_channels : int
        Channels of the fused (non-activated) output.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            conv_bn(c, out_channels, 1, relu=False) for c in in_channels)

    def forward(self, inputs: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Fuse non-activated inputs into one (B, out_channels, *size) tensor."""
        out: torch.Tensor | None = None
        for x, proj in zip(inputs, self.projections):
            y = proj(torch.relu(x))
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        if out is None:
            raise ArgumentError("ResizedFuse needs at least one input.")
        return out


def decoder_strides(num_stacks: int, output_stride: int = 4) -> list[int]:
    """Output strides visited by the decoder after the stride-16 extra group.

    ``0`` stacks -> ``[8, 4]``; each stack adds ``[8, 16, 8, 4]`` after it;
    ``output_stride=2`` appends a last ``2``; ``output_stride=1`` appends ``2, 1``.
    """
    if output_stride not in (1, 2, 4):
        raise ArgumentError(f"output_stride must be 4, 2 or 1, got {output_stride!r}")
    strides = [8, 4]
    for _ in range(num_stacks):
        strides += [8, 16, 8, 4]
    if output_stride <= 2:
        strides.append(2)
    if output_stride == 1:
        strides.append(1)
    return strides


class Decoder(nn.Module):
    """Extra stride-16 group with dual-path layers, then the (stacked) fusion decoder.

    Parameters
    ----------
    channels : dict
        Backbone output channels by stride (2, 4, 8, 16).
    stride16_filters : int
        Base width of the axial blocks at stride 16 (output ``4 *`` this).
    stride8_filters, stride4_filters : int
        Base widths of the conv blocks at strides 8 and 4 (outputs ``4 *`` these).
    extra_blocks : int
        Axial + dual-path blocks of the extra group at stride 16 (1 in MaX-DeepLab-S).
    num_stacks : int
        Decoder stacks L (0 for MaX-DeepLab-S).
    blocks_per_stage : int
        Residual blocks after each fusion.
    transformer, axial : dict
        Keyword arguments of the dual-path layers and axial blocks.
    drop_path_rate : float
        Drop-path rate at stride 16 (stride 8: half, stride 4: quarter, stride 2: eighth).
    output_stride : int
        4 (MaX-DeepLab), 2 (one more conv fusion with the stem feature) or 1
        (then one more with the full-resolution feature ``channels[1]``).
    stride2_filters : int
        Base width of the conv block at stride 2 (output ``4 *`` this); used
        when ``output_stride <= 2``.
    stride1_filters : int
        Base width of the conv block at stride 1; used when ``output_stride == 1``.
    """

    def __init__(self, channels: dict, stride16_filters: int, stride8_filters: int,
                 stride4_filters: int, extra_blocks: int, num_stacks: int,
                 blocks_per_stage: int, transformer: dict, axial: dict,
                 drop_path_rate: float = 0.0, output_stride: int = 4,
                 stride2_filters: int = 8, stride1_filters: int = 4) -> None:
        super().__init__()
        self.extra = BlockGroup(channels[16], stride16_filters, extra_blocks, 1,
                                ["axial"] * extra_blocks, transformer, axial, drop_path_rate)
        filters = {16: stride16_filters, 8: stride8_filters, 4: stride4_filters,
                   2: stride2_filters, 1: stride1_filters}
        rates = {16: drop_path_rate, 8: drop_path_rate / 2, 4: drop_path_rate / 4,
                 2: drop_path_rate / 8, 1: drop_path_rate / 16}
        latest = dict(channels)
        latest[16] = self.extra.out_channels
        current = latest[16]
        self.strides = decoder_strides(num_stacks, output_stride)
        self.output_stride = output_stride
        self.fuses = nn.ModuleList()
        self.groups = nn.ModuleList()
        for s in self.strides:
            width = 4 * filters[s]
            self.fuses.append(ResizedFuse([current, latest[s]], width))
            kind = "axial" if s == 16 else "conv"
            group = BlockGroup(width, filters[s], blocks_per_stage, 1, [kind] * blocks_per_stage,
                               transformer if s == 16 else None, axial, rates[s])
            self.groups.append(group)
            current = latest[s] = group.out_channels
        self.out_channels = current
        #: channels of :meth:`forward`'s feature at each stride (the decoder's last one there)
        self.channels_by_stride = latest

    def forward(self, features: dict[int, torch.Tensor], activated: torch.Tensor,
                memory: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Return a dict stride -> the last non-activated feature at that stride (the
        output stride's is the decoder output) and the final memory."""
        pre, memory = self.extra(activated, memory)
        latest = dict(features)
        latest[16] = pre
        for s, fuse, group in zip(self.strides, self.fuses, self.groups):
            target = latest[s]
            fused = fuse([pre, target], tuple(target.shape[-2:]))
            pre, memory = group(torch.relu(fused), memory)
            latest[s] = pre
        return latest, memory
