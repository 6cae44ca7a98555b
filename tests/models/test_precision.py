"""Tests of geomax.models.precision: the mixed-precision rule for training and prediction."""
import pytest
import torch

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
