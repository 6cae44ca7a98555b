"""Prediction heads of MaX-DeepLab.

* :class:`PixelHead`: L2-normalised pixel features g (D channels) at the output
  stride (4, or 2 with ``output_stride=2``).
* :class:`MaskHead`: mask kernels f (D channels, BN) from the memory, and mask
  logits BN(f . g) with one shared learnable scale initialised to 0.1 (the BN's
  single gamma). The softmax over slots is NOT applied here: loss and
  post-processor apply it.
* :class:`DetailHead`: with ``output_stride=1``, a full-resolution detail term
  added to the upsampled stride-2 mask logits.
* :class:`ClassHead`: class logits (C + 1, index 0 void) from the memory, with
  the void bias set so that p(void) is about ``void_prior`` (0.9) at start.
* :class:`SemanticHead`: auxiliary semantic logits (C + 1) at the output stride,
  from the decoder output or from the stride-16 backbone output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geomax.models.maxdeeplab.layers import LinearBN, conv_bn


def _separable_conv_bn(in_channels: int, out_channels: int, kernel_size: int = 5) -> nn.Sequential:
    """Depthwise kxk conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU."""
    return nn.Sequential(conv_bn(in_channels, in_channels, kernel_size, groups=in_channels),
                         conv_bn(in_channels, out_channels, 1))


class PixelHead(nn.Module):
    """Decoder output feature -> L2-normalised pixel features g (B, D, h, w).

    Parameters
    ----------
    in_channels : int
        Channels of the decoder output.
    head_channels : int
        Width of the separable 5x5 convolution.
    feature_dim : int
        D, the dimension shared with the mask kernels (128 in the paper).
    """

    def __init__(self, in_channels: int, head_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.conv = _separable_conv_bn(in_channels, head_channels)
        self.proj = nn.Conv2d(head_channels, feature_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Activated (B, C, h, w) -> unit-norm (B, D, h, w)."""
        return F.normalize(self.proj(self.conv(x)), dim=1)


class MaskHead(nn.Module):
    """Memory -> mask kernels f; (f, g) -> mask logits BN(f . g).

    Parameters
    ----------
    memory_channels : int
        Memory width.
    hidden_channels : int
        Width of the memory feed-forward layer before the kernels.
    feature_dim : int
        D, kernel dimension (must equal the pixel feature dimension).
    logit_scale_init : float
        Initial value of the shared scale of the mask logits (0.1).
    """

    def __init__(self, memory_channels: int, hidden_channels: int, feature_dim: int,
                 logit_scale_init: float = 0.1) -> None:
        super().__init__()
        self.hidden = LinearBN(memory_channels, hidden_channels)
        self.kernel = LinearBN(hidden_channels, feature_dim, relu=False)
        # One BN channel over all logits: a single shared scale (gamma) and shift.
        self.logit_bn = nn.BatchNorm2d(1)
        nn.init.constant_(self.logit_bn.weight, logit_scale_init)
        nn.init.zeros_(self.logit_bn.bias)

    def forward(self, memory: torch.Tensor, pixel_features: torch.Tensor) -> torch.Tensor:
        """(B, N, Dm) memory, (B, D, h, w) features -> (B, N, h, w) mask logits (pre-softmax)."""
        kernels = self.kernel(self.hidden(memory))  # (B, N, D)
        b, d, h, w = pixel_features.shape
        logits = torch.bmm(kernels, pixel_features.reshape(b, d, h * w))  # (B, N, hw)
        n = logits.shape[1]
        logits = self.logit_bn(logits.reshape(b, 1, n, h * w))
        return logits.reshape(b, n, h, w)


class DetailHead(nn.Module):
    """Full-resolution detail term of the mask logits (``output_stride=1``).

    The mask logit of slot n at pixel p becomes
    ``up(BN(f_n . g))[p] + s * (k_n . d[p])``: the stride-2 logits of
    :class:`MaskHead`, bilinearly upsampled (which equals the dot product of f with
    upsampled pixel features, upsampling being linear), plus a dot product in a small
    full-resolution embedding. ``d`` (``detail_dim`` channels, unit norm) comes from the
    decoder's stride-1 feature, ``k_n`` from the slot's memory, and the shared scale
    ``s`` starts at 0, so training starts from the stride-2 masks and learns the
    pixel-accurate boundaries (gaps of one or two pixels between queued vehicles) on top.

    Parameters
    ----------
    in_channels : int
        Channels of the stride-1 decoder feature.
    memory_channels : int
        Memory width.
    detail_dim : int
        Dimension of the detail embedding.
    """

    def __init__(self, in_channels: int, memory_channels: int, detail_dim: int = 16) -> None:
        super().__init__()
        self.pixel = nn.Conv2d(in_channels, detail_dim, 1)
        self.kernel = nn.Linear(memory_channels, detail_dim)
        self.scale = nn.Parameter(torch.zeros(()))

    def embed(self, feature: torch.Tensor) -> torch.Tensor:
        """Activated (B, C, H, W) stride-1 feature -> unit-norm (B, detail_dim, H, W) embedding d."""
        return F.normalize(self.pixel(feature), dim=1)

    def forward(self, memory: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """(B, N, Dm) memory, (B, detail_dim, H, W) embedding -> (B, N, H, W) detail logits."""
        b, c, h, w = d.shape
        k = self.kernel(memory)  # (B, N, detail_dim)
        return (self.scale * torch.bmm(k, d.reshape(b, c, h * w))).reshape(b, -1, h, w)


class ClassHead(nn.Module):
    """Memory -> class logits (B, N, C + 1), index 0 void.

    Parameters
    ----------
    memory_channels, hidden_channels : int
        Memory width and feed-forward width.
    num_classes : int
        C, the number of real classes.
    void_prior : float
        Probability of void given to every slot at initialisation (0.9).
    """

    def __init__(self, memory_channels: int, hidden_channels: int, num_classes: int,
                 void_prior: float = 0.9) -> None:
        super().__init__()
        self.hidden = LinearBN(memory_channels, hidden_channels)
        self.logits = nn.Linear(hidden_channels, num_classes + 1)
        nn.init.normal_(self.logits.weight, std=0.01)
        nn.init.zeros_(self.logits.bias)
        # softmax with void bias b and C zero logits: p(void) = e^b / (e^b + C) = void_prior.
        with torch.no_grad():
            self.logits.bias[0] = math.log(void_prior / (1.0 - void_prior) * num_classes)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, N, Dm) -> (B, N, C + 1)."""
        return self.logits(self.hidden(memory))


class SemanticHead(nn.Module):
    """Auxiliary semantic head: separable conv + 1x1 logits, resized to the output stride.

    It reads either the decoder output (already at the output stride) or the
    stride-16 backbone output (see ``semantic_feature`` of the network).

    Parameters
    ----------
    in_channels : int
        Channels of the feature it reads.
    head_channels : int
        Width of the separable 5x5 convolution.
    num_classes : int
        C; the output has C + 1 channels (index 0 void, never a training target).
    """

    def __init__(self, in_channels: int, head_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = _separable_conv_bn(in_channels, head_channels)
        self.logits = nn.Conv2d(head_channels, num_classes + 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Activated (B, C, h, w) -> (B, C + 1, *size) logits."""
        y = self.logits(self.conv(x))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y
