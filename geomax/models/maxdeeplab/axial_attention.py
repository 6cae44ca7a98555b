"""Axial (1-D) multi-head self-attention with relative positional encodings.

One :class:`AxialAttention` layer attends along a single spatial axis (height or
width); the other axis is folded into the batch dimension so the whole layer is
a few batched matrix products. Following deeplab2's ``axial_layers``:

* query, key and value come from one 1x1 convolution + BN;
* similarity = BN(q . k) + BN(q . r_q) + BN(k . r_k), with r_q and r_k relative
  positional encodings looked up in a table of fixed size;
* the output is BN(sum_j a_ij v_j) + BN(sum_j a_ij r_v(i, j)), i.e. the
  positional table also contributes to the retrieved value.

Input-size independence: the table has ``2 * max_span - 1`` entries (relative
distances ``-(max_span - 1) .. max_span - 1``, default ``max_span = 255``).
For an axis longer than ``max_span`` at the attention resolution (more than
``255 * 16 = 4080`` input pixels at output stride 16) relative distances are
clamped to the table's range, so any input size still runs; positions farther
apart than the span share the encoding of the largest distance.
"""
from __future__ import annotations

import torch
from torch import nn

from geomax.errors import ArgumentError


def relative_index(length: int, max_span: int, device: torch.device) -> torch.Tensor:
    """(length, length) table row index of the relative distance ``j - i``, clamped to the span."""
    pos = torch.arange(length, device=device)
    rel = (pos[None, :] - pos[:, None]).clamp_(-(max_span - 1), max_span - 1)
    return rel + (max_span - 1)


class AxialAttention(nn.Module):
    """Multi-head self-attention along one axis of a (B, C, H, W) feature map.

    Parameters
    ----------
    in_channels : int
        Input channels.
    key_channels : int
        Total query/key channels (split over the heads).
    value_channels : int
        Total value channels (split over the heads); the output has this many channels.
    axis : {"height", "width"}
        Axis attended along.
    num_heads : int
        Number of heads (8 in MaX-DeepLab).
    max_span : int
        Largest relative distance + 1 covered by the positional table.
    """

    def __init__(self, in_channels: int, key_channels: int, value_channels: int,
                 axis: str = "height", num_heads: int = 8, max_span: int = 255) -> None:
        super().__init__()
        if axis not in ("height", "width"):
            raise ArgumentError(f"axis must be 'height' or 'width', got {axis!r}")
        if key_channels % num_heads or value_channels % num_heads:
            raise ArgumentError(
                f"key_channels ({key_channels}) and value_channels ({value_channels}) must be "
                f"divisible by num_heads ({num_heads}); change the widths or num_heads")
        if max_span < 1:
            raise ArgumentError(f"max_span must be >= 1, got {max_span}")
        self.axis = axis
        self.num_heads = num_heads
        self.max_span = int(max_span)
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.dk = key_channels // num_heads
        self.dv = value_channels // num_heads
        self.qkv = nn.Conv2d(in_channels, 2 * key_channels + value_channels, 1, bias=False)
        nn.init.trunc_normal_(self.qkv.weight, std=in_channels ** -0.5)
        self.qkv_bn = nn.BatchNorm2d(2 * key_channels + value_channels)
        n_rel = 2 * self.max_span - 1
        # One table per role, shared by the heads (deeplab2 layout).
        self.rpe_query = nn.Parameter(torch.randn(n_rel, self.dk))
        self.rpe_key = nn.Parameter(torch.randn(n_rel, self.dk))
        self.rpe_value = nn.Parameter(torch.randn(n_rel, self.dv))
        # BN of each similarity term (content, query-rpe, key-rpe), one channel per head.
        # (Separate modules rather than one BN over a concatenation: same statistics,
        # no concatenation copy.)
        self.content_bn = nn.BatchNorm2d(num_heads)
        self.query_pos_bn = nn.BatchNorm2d(num_heads)
        self.key_pos_bn = nn.BatchNorm2d(num_heads)
        # BN of the two retrieved terms (content value, rpe value), per value channel.
        self.value_bn = nn.BatchNorm2d(value_channels)
        self.value_pos_bn = nn.BatchNorm2d(value_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, value_channels, H, W), non-activated."""
        b, _, h, w = x.shape
        heads, dk, dv = self.num_heads, self.dk, self.dv
        qkv = self.qkv_bn(self.qkv(x))
        if self.axis == "height":
            # (B, ch, H, W) -> (B*W, ch, H): fold width into the batch.
            seq = qkv.permute(0, 3, 1, 2).reshape(b * w, -1, h)
            length = h
        else:
            seq = qkv.permute(0, 2, 1, 3).reshape(b * h, -1, w)
            length = w
        n = seq.shape[0]
        q, k, v = torch.split(seq, [heads * dk, heads * dk, heads * dv], dim=1)
        q = q.reshape(n, heads, dk, length).transpose(2, 3)  # (n, h, L, dk)
        k = k.reshape(n, heads, dk, length).transpose(2, 3)  # (n, h, L, dk)
        v = v.reshape(n, heads, dv, length).transpose(2, 3)  # (n, h, L, dv)

        idx = relative_index(length, self.max_span, x.device)
        r_q = self.rpe_query[idx]  # (L, L, dk), r_q[i, j] encodes j - i
        r_k = self.rpe_key[idx]
        r_v = self.rpe_value[idx]  # (L, L, dv)

        content = torch.matmul(q, k.transpose(2, 3))  # (n, h, i, j)
        query_pos = torch.einsum("nhid,ijd->nhij", q, r_q)
        # key_pos[i, j] = k_j . r_k(j - i) (Axial-DeepLab, eq. 2).
        key_pos = torch.einsum("nhjd,ijd->nhij", k, r_k)
        logits = self.content_bn(content) + self.query_pos_bn(query_pos) \
            + self.key_pos_bn(key_pos)
        attn = torch.softmax(logits, dim=-1)

        out_content = torch.matmul(attn, v)  # (n, h, L, dv)
        out_pos = torch.einsum("nhij,ijd->nhid", attn, r_v)
        return self.value_bn(self._to_image(out_content, b, h, w)) \
            + self.value_pos_bn(self._to_image(out_pos, b, h, w))

    def _to_image(self, out: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """(B*other, heads, L, dv) -> (B, heads * dv, H, W)."""
        heads, dv = self.num_heads, self.dv
        if self.axis == "height":
            out = out.reshape(b, w, heads, h, dv).permute(0, 2, 4, 3, 1)
        else:
            out = out.reshape(b, h, heads, w, dv).permute(0, 2, 4, 1, 3)
        return out.reshape(b, heads * dv, h, w)


class AxialAttention2D(nn.Module):
    """Height-axis attention, ReLU, then width-axis attention (Axial-DeepLab).

    Parameters
    ----------
    in_channels : int
        Input channels.
    filters : int
        Base width: keys have ``filters * key_expansion`` channels, values (and the
        output) ``filters * value_expansion``.
    num_heads, max_span : int
        See :class:`AxialAttention`.
    key_expansion, value_expansion : float
        Channel ratios (1 and 2 in MaX-DeepLab).
    """

    def __init__(self, in_channels: int, filters: int, num_heads: int = 8, max_span: int = 255,
                 key_expansion: float = 1.0, value_expansion: float = 2.0) -> None:
        super().__init__()
        key_channels = int(round(filters * key_expansion))
        value_channels = int(round(filters * value_expansion))
        self.height = AxialAttention(in_channels, key_channels, value_channels, "height",
                                     num_heads, max_span)
        self.width = AxialAttention(value_channels, key_channels, value_channels, "width",
                                    num_heads, max_span)
        self.out_channels = value_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> non-activated (B, value_channels, H, W)."""
        return self.width(torch.relu(self.height(x)))
