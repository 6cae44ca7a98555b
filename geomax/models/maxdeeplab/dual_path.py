"""Dual-path transformer layer: the bridge between the 2-D pixel path and the 1-D memory.

Following MaX-DeepLab / deeplab2's ``DualPathTransformerLayer``:

* memory-to-pixel (M2P) and memory-to-memory (M2M) attention share ONE softmax
  over the concatenation of pixel keys and memory keys;
* pixel-to-memory (P2M) feedback attention lets every pixel read the memory;
* pixel-to-pixel (P2P) attention is the axial block that precedes the layer
  (see :mod:`geomax.models.maxdeeplab.axial_block`), not part of this module;
* a feed-forward network on the memory;
* BN on the attention logits (one channel per head) and on the retrieved values,
  zero-initialised last BN on each residual branch, drop path.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.layers import DropPath, LinearBN, conv_bn


class _AttentionOp(nn.Module):
    """softmax(BN(q k^T)) v followed by BN + ReLU on the retrieved value."""

    def __init__(self, num_heads: int, value_channels: int) -> None:
        super().__init__()
        self.logit_bn = nn.BatchNorm2d(num_heads)
        self.value_bn = nn.BatchNorm2d(value_channels)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q (B, h, Lq, dk), k (B, h, Lk, dk), v (B, h, Lk, dv) -> (B, Lq, h * dv)
        logits = self.logit_bn(torch.matmul(q, k.transpose(2, 3)))
        out = torch.matmul(torch.softmax(logits, dim=-1), v)  # (B, h, Lq, dv)
        b, h, lq, dv = out.shape
        # BN over the h * dv value channels, treating queries as the spatial axis.
        out = out.permute(0, 1, 3, 2).reshape(b, h * dv, lq, 1)
        out = torch.relu(self.value_bn(out))
        return out.reshape(b, h * dv, lq).transpose(1, 2)


class DualPathTransformerLayer(nn.Module):
    """M2P + M2M (one softmax), P2M feedback and memory FFN, with residual connections.

    Parameters
    ----------
    pixel_channels : int
        Channels of the pixel path (e.g. 2048 in stage 5 of MaX-DeepLab-S).
    memory_channels : int
        Channels of the memory (256 in the paper).
    filters : int
        Base width: bottleneck ``2 * filters``, keys ``filters``, values ``2 * filters``
        (deeplab2: 128 for MaX-DeepLab-S).
    num_heads : int
        Attention heads (8).
    ffn_channels : int
        Hidden width of the memory feed-forward network (2048); 0 disables it.
    drop_path : float
        Drop-path rate applied to each residual branch.
    """

    def __init__(self, pixel_channels: int, memory_channels: int, filters: int = 128,
                 num_heads: int = 8, ffn_channels: int = 2048, drop_path: float = 0.0,
                 bottleneck_expansion: float = 2.0, key_expansion: float = 1.0,
                 value_expansion: float = 2.0) -> None:
        super().__init__()
        bottleneck = int(round(filters * bottleneck_expansion))
        key_channels = int(round(filters * key_expansion))
        value_channels = int(round(filters * value_expansion))
        if key_channels % num_heads or value_channels % num_heads:
            raise ArgumentError(
                f"transformer key/value widths ({key_channels}/{value_channels}) must be "
                f"divisible by num_heads ({num_heads}); change transformer_filters or num_heads")
        self.num_heads = num_heads
        self.key_channels = key_channels
        self.value_channels = value_channels
        std = bottleneck ** -0.5
        self.memory_conv1 = LinearBN(memory_channels, bottleneck)
        self.pixel_conv1 = conv_bn(pixel_channels, bottleneck, 1)
        self.memory_qkv = LinearBN(bottleneck, 2 * key_channels + value_channels, relu=False,
                                   init_std=std)
        self.pixel_qkv = conv_bn(bottleneck, 2 * key_channels + value_channels, 1, relu=False)
        nn.init.trunc_normal_(cast(nn.Conv2d, self.pixel_qkv[0]).weight, std=std)
        self.memory_attention = _AttentionOp(num_heads, value_channels)   # M2P + M2M
        self.pixel_attention = _AttentionOp(num_heads, value_channels)    # P2M
        self.memory_conv3 = LinearBN(value_channels, memory_channels, relu=False, zero_gamma=True)
        self.pixel_conv3 = conv_bn(value_channels, pixel_channels, 1, relu=False, zero_gamma=True)
        self.ffn_channels = int(ffn_channels)
        if self.ffn_channels > 0:
            self.ffn1 = LinearBN(memory_channels, self.ffn_channels)
            self.ffn2 = LinearBN(self.ffn_channels, memory_channels, relu=False, zero_gamma=True)
        self.drop_pixel = DropPath(drop_path)
        self.drop_memory = DropPath(drop_path)
        self.drop_ffn = DropPath(drop_path)

    def _split_heads(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        # (B, L, h * d) -> (B, h, L, d)
        b, length, _ = x.shape
        return x.reshape(b, length, self.num_heads, channels // self.num_heads).transpose(1, 2)

    def forward(self, pixel: torch.Tensor, memory: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update both paths.

        Parameters
        ----------
        pixel : torch.Tensor
            Non-activated (B, C, H, W) pixel features.
        memory : torch.Tensor
            Activated (B, N, Dm) memory.

        Returns
        -------
        (pixel, memory)
            Non-activated pixel features (same shape) and activated memory.
        """
        b, c, h, w = pixel.shape
        kc, vc = self.key_channels, self.value_channels
        mem = self.memory_conv1(memory)
        pix = self.pixel_conv1(torch.relu(pixel))

        m_q, m_k, m_v = torch.split(self.memory_qkv(mem), [kc, kc, vc], dim=-1)
        p_qkv = self.pixel_qkv(pix).flatten(2).transpose(1, 2)  # (B, HW, 2kc + vc)
        p_q, p_k, p_v = torch.split(p_qkv, [kc, kc, vc], dim=-1)
        m_q, m_k, m_v = (self._split_heads(m_q, kc), self._split_heads(m_k, kc),
                         self._split_heads(m_v, vc))
        p_q, p_k, p_v = (self._split_heads(p_q, kc), self._split_heads(p_k, kc),
                         self._split_heads(p_v, vc))

        # M2P + M2M: memory queries attend to [pixel keys, memory keys] in one softmax.
        keys = torch.cat([p_k, m_k], dim=2)
        values = torch.cat([p_v, m_v], dim=2)
        m_out = self.memory_conv3(self.memory_attention(m_q, keys, values))
        memory_out = torch.relu(memory + self.drop_memory(m_out))
        if self.ffn_channels > 0:
            f = self.ffn2(self.ffn1(memory_out))
            memory_out = torch.relu(memory_out + self.drop_ffn(f))

        # P2M: pixel queries attend to the memory (keys/values of the layer input memory).
        p_out = self.pixel_attention(p_q, m_k, m_v)  # (B, HW, vc)
        p_out = p_out.transpose(1, 2).reshape(b, vc, h, w)
        pixel_out = pixel + self.drop_pixel(self.pixel_conv3(p_out))
        return pixel_out, memory_out
