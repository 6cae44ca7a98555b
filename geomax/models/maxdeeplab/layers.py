"""Small building blocks shared by the MaX-DeepLab modules: conv + BN (+ ReLU),
linear + BN for the 1-D memory path, and drop path (stochastic depth)."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            groups: int = 1, relu: bool = True, zero_gamma: bool = False) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd kernels) + BatchNorm2d (+ ReLU).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Odd kernel size.
    stride : int
        Convolution stride.
    groups : int
        Convolution groups (``in_channels`` for a depthwise convolution).
    relu : bool
        Append a ReLU.
    zero_gamma : bool
        Initialise the BN scale to zero (last BN of a residual branch, so each
        residual block starts as the identity).
    """
    bn = nn.BatchNorm2d(out_channels)
    if zero_gamma:
        nn.init.zeros_(bn.weight)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                  padding=kernel_size // 2, groups=groups, bias=False),
        bn,
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LinearBN(nn.Module):
    """Linear map (no bias) + BatchNorm over the channel axis of a (B, N, C) tensor (+ ReLU).

    The 1-D memory path of the dual-path transformer uses it the way the 2-D
    path uses :func:`conv_bn` (deeplab2's ``Conv1D`` with BN).
    """

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True,
                 zero_gamma: bool = False, init_std: float | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        if init_std is not None:
            nn.init.trunc_normal_(self.linear.weight, std=init_std)
        self.bn = nn.BatchNorm1d(out_channels)
        if zero_gamma:
            nn.init.zeros_(self.bn.weight)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (B, N, C_in) tensor to (B, N, C_out)."""
        b, n, _ = x.shape
        y = self.bn(self.linear(x).reshape(b * n, -1)).reshape(b, n, -1)
        return torch.relu(y) if self.relu else y


class DropPath(nn.Module):
    """Drop a whole residual branch per sample with probability ``rate`` (training only).

    Kept samples are rescaled by ``1 / (1 - rate)`` so the expectation is unchanged.
    """

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-sample mask to the residual branch ``x``."""
        if not self.training or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"
