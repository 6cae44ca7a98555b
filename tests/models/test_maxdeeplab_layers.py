"""Tests of the MaX-DeepLab building blocks: axial attention, dual-path layer, stem rule."""
import math

import pytest
import torch

from geomax.errors import ArgumentError
from geomax.models.maxdeeplab.axial_attention import AxialAttention, relative_index
from geomax.models.maxdeeplab.dual_path import DualPathTransformerLayer
from geomax.models.maxdeeplab.stem import adapt_first_conv_weight


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster and steadier than two on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

def _naive_axial_height(layer: AxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Loop reference of height-axis attention with eval-mode BN at default statistics."""
    s = 1.0 / math.sqrt(1.0 + 1e-5)  # BN in eval mode with mean 0, var 1, gamma 1, beta 0
    qkv = layer.qkv(x) * s
    b, _, h, w = x.shape
    heads, dk, dv = layer.num_heads, layer.dk, layer.dv
    q = qkv[:, : heads * dk].reshape(b, heads, dk, h, w)
    k = qkv[:, heads * dk: 2 * heads * dk].reshape(b, heads, dk, h, w)
    v = qkv[:, 2 * heads * dk:].reshape(b, heads, dv, h, w)
    out = torch.zeros(b, heads, dv, h, w)
    span = layer.max_span
    for bi in range(b):
        for col in range(w):
            for hd in range(heads):
                for i in range(h):
                    logits = torch.zeros(h)
                    for j in range(h):
                        r = min(max(j - i, -(span - 1)), span - 1) + span - 1
                        qi, kj = q[bi, hd, :, i, col], k[bi, hd, :, j, col]
                        logits[j] = s * (qi @ kj) + s * (qi @ layer.rpe_query[r]) \
                            + s * (kj @ layer.rpe_key[r])
                    a = torch.softmax(logits, 0)
                    acc = torch.zeros(dv)
                    for j in range(h):
                        r = min(max(j - i, -(span - 1)), span - 1) + span - 1
                        acc += a[j] * (s * v[bi, hd, :, j, col] + s * layer.rpe_value[r])
                    out[bi, hd, :, i, col] = acc
    return out.reshape(b, heads * dv, h, w)


@pytest.mark.parametrize("max_span", [255, 3])
def test_axial_attention_matches_loop_reference(max_span):
    torch.manual_seed(0)
    layer = AxialAttention(6, key_channels=8, value_channels=8, axis="height", num_heads=2,
                           max_span=max_span).eval()
    x = torch.randn(2, 6, 5, 3)
    with torch.no_grad():
        got = layer(x)
        want = _naive_axial_height(layer, x)
    assert got.shape == (2, 8, 5, 3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_width_axis_equals_height_axis_on_transposed_input():
    torch.manual_seed(1)
    hl = AxialAttention(4, 8, 16, "height", num_heads=4).eval()
    wl = AxialAttention(4, 8, 16, "width", num_heads=4).eval()
    wl.load_state_dict(hl.state_dict())
    x = torch.randn(1, 4, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(wl(x), hl(x.transpose(2, 3)).transpose(2, 3))


def test_relative_index_clamps_beyond_span():
    idx = relative_index(6, max_span=3, device=torch.device("cpu"))
    assert idx.min().item() == 0 and idx.max().item() == 4  # table of 2 * 3 - 1 rows
    assert idx[0, 5].item() == 4 and idx[5, 0].item() == 0 and idx[2, 2].item() == 2


def test_axial_attention_rejects_bad_widths():
    with pytest.raises(ArgumentError, match="divisible"):
        AxialAttention(4, key_channels=6, value_channels=8, num_heads=4)


def test_dual_path_layer_shapes_and_memory_softmax_over_pixels_and_memory():
    torch.manual_seed(0)
    layer = DualPathTransformerLayer(pixel_channels=24, memory_channels=16, filters=8,
                                     num_heads=2, ffn_channels=32)
    pixel = torch.randn(2, 24, 4, 5)
    memory = torch.relu(torch.randn(2, 7, 16))
    p, m = layer(pixel, memory)
    assert p.shape == pixel.shape and m.shape == memory.shape
    # zero-initialised last BNs: the layer starts as identity on pixels, relu on memory
    torch.testing.assert_close(p, pixel)
    torch.testing.assert_close(m, memory)
    # memory attends over HW + N keys in one softmax: logits have HW + N columns
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = tuple(output.shape)

    layer.memory_attention.logit_bn.register_forward_hook(hook)
    layer(pixel, memory)
    assert seen["shape"] == (2, 2, 7, 4 * 5 + 7)


def test_adapt_first_conv_weight_rule():
    w = torch.randn(4, 3, 3, 3)
    w5 = adapt_first_conv_weight(w, 5)
    torch.testing.assert_close(w5[:, :3], w * 3 / 5)
    torch.testing.assert_close(w5[:, 3], w.mean(1) * 3 / 5)
    torch.testing.assert_close(w5[:, 4], w.mean(1) * 3 / 5)
    w1 = adapt_first_conv_weight(w, 1)
    torch.testing.assert_close(w1[:, 0], w[:, 0] * 3)
    torch.testing.assert_close(adapt_first_conv_weight(w, 3), w)
