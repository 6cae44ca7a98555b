"""Mixed precision: which reduced float type the network runs in on the device at hand.

One rule for training and prediction (``mixed_precision`` of
:class:`~geomax.config.TrainConfig` and of the predictor):

* ``"auto"``: on CUDA, float16 for training (fastai's ``MixedPrecision`` with its
  gradient scaler) and bfloat16 for prediction; on a CPU with native bfloat16
  instructions (AVX512-BF16 or AMX, as oneDNN reports them) bfloat16 autocast for
  prediction and for training on chips of ``TrainConfig.CPU_BF16_MIN_CHIP`` (256) px or
  more; float32 for training on smaller chips (at 128 px channels-last float32 is as fast,
  and PQ after the same steps a little higher) and on any other CPU (emulated bfloat16
  is slower than float32).
* ``"bf16"``: bfloat16 autocast for training and prediction on any device.
* ``"off"``: float32 everywhere.

The loss and the post-processing always run in float32 (the network's outputs are cast
back before them). The measurement behind the CPU rule (steps per minute and PQ at equal
steps) is ``benchmarks/bench_train_speed.py``; see ``docs/design.md``.
"""
from __future__ import annotations

import functools

import torch

from ..config import MIXED_PRECISION_MODES, TrainConfig
from ..errors import ArgumentError

__all__ = ["MIXED_PRECISION_MODES", "check_mode", "cpu_has_native_bf16", "autocast_dtype", "autocast"]


def check_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`MIXED_PRECISION_MODES`; otherwise :class:`ArgumentError`."""
    if mode not in MIXED_PRECISION_MODES:
        raise ArgumentError(f"mixed_precision must be one of {list(MIXED_PRECISION_MODES)}, got {mode!r}.")
    return mode


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check: AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def autocast_dtype(device: torch.device | str, mode: str = "auto", training: bool = False,
                   chip_size: int | None = None) -> torch.dtype | None:
    """The autocast type of the network on ``device`` (``None``: float32).

    ``training`` on CUDA under ``"auto"`` gives ``None``: fastai's float16
    ``MixedPrecision`` callback (with its gradient scaler) takes care of it there.
    ``chip_size``: the training chip side (``training`` on a CPU under ``"auto"``:
    bfloat16 from ``TrainConfig.CPU_BF16_MIN_CHIP`` px; unknown counts as large).
    """
    check_mode(mode)
    kind = torch.device(device).type
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if kind == "cuda":
        return None if training else torch.bfloat16
    if kind == "cpu" and cpu_has_native_bf16():
        small = training and chip_size is not None and chip_size < TrainConfig.CPU_BF16_MIN_CHIP
        return None if small else torch.bfloat16
    return None


def autocast(device: torch.device | str, mode: str = "auto", training: bool = False) -> torch.autocast:
    """``torch.autocast`` for ``device`` under the rule of :func:`autocast_dtype` (disabled for float32)."""
    dtype = autocast_dtype(device, mode, training)
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
