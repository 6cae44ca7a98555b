"""Tests of geomax.models.precision: the mixed-precision rule for training and prediction."""
import pytest
import torch

from geomax.config import TrainConfig
from geomax.errors import ArgumentError
from geomax.models import precision


@pytest.mark.parametrize("native", [True, False])
def test_the_rule_follows_the_device_and_the_switch(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.autocast_dtype("cpu", "auto") == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("cpu", "auto", training=True) == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("cpu", "off") is None
    assert precision.autocast_dtype("cuda", "auto") == torch.bfloat16  # prediction on a GPU
    assert precision.autocast_dtype("cuda", "auto", training=True) is None  # fastai's float16 callback trains
    assert precision.autocast_dtype("cuda", "off") is None
    # training on a CPU: bfloat16 from CPU_BF16_MIN_CHIP px (at 128 px channels-last float32 is as fast)
    big, small = TrainConfig.CPU_BF16_MIN_CHIP, TrainConfig.CPU_CHIP_SIZE
    assert precision.autocast_dtype("cpu", "auto", training=True, chip_size=big) == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype("cpu", "auto", training=True, chip_size=small) is None
    assert precision.autocast_dtype("cpu", "auto", chip_size=small) == (torch.bfloat16 if native else None)  # predict
    # "bf16" asks for bfloat16 whatever the chip and the device
    for device in ("cpu", "cuda"):
        assert precision.autocast_dtype(device, "bf16", training=True, chip_size=small) == torch.bfloat16


def test_an_unknown_mode_is_refused():
    with pytest.raises(ArgumentError, match="mixed_precision must be one of"):
        precision.autocast_dtype("cpu", "fp8")


def test_autocast_context_is_disabled_for_float32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    x = torch.randn(4, 4)
    with precision.autocast("cpu", "off"):
        assert (x @ x).dtype == torch.float32
    with precision.autocast("cpu", "auto"):
        assert (x @ x).dtype == torch.bfloat16
