"""Tests of the full MaX-DeepLab network: shapes, variants, config, inputs, parameters."""
import json

import numpy as np
import pytest
import torch

from geomax.common import (
    PRED_CLASS_LOGITS,
    PRED_DETAIL_FEATURES,
    PRED_MASK_LOGITS,
    PRED_MEMORY_FEATURES,
    PRED_PIXEL_FEATURES,
    PRED_SEMANTIC_LOGITS,
)
from geomax.errors import ArgumentError, InputMismatchError
from geomax.models.maxdeeplab import (
    INPUT_MULTIPLE,
    VARIANTS,
    build_from_config,
    build_maxdeeplab,
    list_variants,
    pad_to_multiple,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster and steadier than two on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

def _check_outputs(model, out, b, h, w, num_classes):
    n = model.num_slots
    d = model.config["feature_dim"]
    st = model.output_stride
    dm = model.config["memory_channels"]
    assert set(out) == {PRED_MASK_LOGITS, PRED_CLASS_LOGITS, PRED_SEMANTIC_LOGITS,
                        PRED_PIXEL_FEATURES, PRED_MEMORY_FEATURES} | ({PRED_DETAIL_FEATURES} if st == 1 else set())
    if st == 1:
        assert out[PRED_DETAIL_FEATURES].shape == (b, model.config["full_res_channels"], h, w)
        dn = out[PRED_DETAIL_FEATURES].norm(dim=1)
        torch.testing.assert_close(dn, torch.ones_like(dn), rtol=0, atol=1e-4)
    assert out[PRED_MASK_LOGITS].shape == (b, n, h // st, w // st)
    assert out[PRED_CLASS_LOGITS].shape == (b, n, num_classes + 1)
    assert out[PRED_SEMANTIC_LOGITS].shape == (b, num_classes + 1, h // st, w // st)
    sp = max(st, 2)  # at output stride 1 the pixel features stay at stride 2 (detail head)
    assert out[PRED_PIXEL_FEATURES].shape == (b, d, h // sp, w // sp)
    assert out[PRED_MEMORY_FEATURES].shape == (b, n, dm)
    for t in out.values():
        assert torch.isfinite(t).all()
    norms = out[PRED_PIXEL_FEATURES].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant,bands,classes,size", [
    ("max_deeplab_tiny", 3, 4, (64, 64)),
    ("max_deeplab_tiny", 1, 1, (48, 80)),
    ("max_deeplab_tiny", 7, 9, (96, 32)),
    ("max_deeplab_cpu", 4, 6, (64, 96)),
    ("max_deeplab_cpu", 12, 3, (32, 32)),
])
def test_output_shapes(variant, bands, classes, size):
    torch.manual_seed(0)
    model = build_maxdeeplab(variant, bands, classes)
    h, w = size
    out = model(torch.randn(2, bands, h, w))
    _check_outputs(model, out, 2, h, w, classes)


@pytest.mark.parametrize("stride", [4, 2, 1])
def test_output_stride_option(stride):
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 4, output_stride=stride)
    assert model.output_stride == stride and model.config["output_stride"] == stride
    out = model(torch.randn(2, 3, 48, 64))
    assert out[PRED_MASK_LOGITS].shape[-2:] == (48 // stride, 64 // stride)
    _check_outputs(model, out, 2, 48, 64, 4)
    with pytest.raises(ArgumentError, match="output_stride must be 4, 2 or 1"):
        build_maxdeeplab("max_deeplab_tiny", 3, 4, output_stride=8)


def test_output_stride_1_starts_from_the_upsampled_stride_2_masks():
    """The detail term's scale starts at 0: the first masks are the stride-2 logits,
    bilinearly upsampled; the detail head then gets gradients (through its scale first)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 4, output_stride=1, full_res_channels=8)
    assert model.detail_head is not None and float(model.detail_head.scale) == 0.0
    x = torch.randn(2, 3, 32, 48)
    model.eval()
    with torch.no_grad():
        out = model(x)
        features, activated, memory = model.backbone(x, model.memory.expand(2, -1, -1))
        features = {**features, 1: model.full_res(x)}
        by_stride, memory = model.decoder(features, activated, memory)
        coarse = model.mask_head(memory, model.pixel_head(torch.relu(by_stride[2])))
        assert out[PRED_DETAIL_FEATURES].shape == (2, 8, 32, 48)
    assert coarse.shape[-2:] == (16, 24) and out[PRED_MASK_LOGITS].shape[-2:] == (32, 48)
    torch.testing.assert_close(out[PRED_MASK_LOGITS],
                               F.interpolate(coarse, size=(32, 48), mode="bilinear", align_corners=False))
    model.train()
    logits = model(x)[PRED_MASK_LOGITS]
    (logits * torch.randn_like(logits)).sum().backward()
    assert model.detail_head.scale.grad is not None and float(model.detail_head.scale.grad.abs()) > 0
    assert model.full_res[0][0].weight.grad is not None  # zero until the scale moves, but connected
    with pytest.raises(ArgumentError, match="full_res_channels"):
        build_maxdeeplab("max_deeplab_tiny", 3, 4, output_stride=1, full_res_channels=0)


def test_config_without_newer_options_rebuilds_the_older_network():
    """Model packages written before output_stride / semantic_feature existed hold
    stride-4 weights with the semantic head on the backbone."""
    model = build_maxdeeplab("max_deeplab_cpu", 3, 4, output_stride=4, semantic_feature="backbone")
    old = {k: v for k, v in model.config.items() if k not in ("output_stride", "semantic_feature")}
    twin = build_from_config(old)
    assert twin.output_stride == 4 and twin.semantic_feature == "backbone"
    twin.load_state_dict(model.state_dict())  # strict: same parameters


@pytest.mark.parametrize("source", ["decoder", "backbone"])
def test_semantic_feature_option(source):
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 4, semantic_feature=source)
    out = model(torch.randn(1, 3, 32, 64))
    _check_outputs(model, out, 1, 32, 64, 4)
    # the head reads the decoder output (its channels) or the stride-16 backbone output
    expected = model.decoder.out_channels if source == "decoder" else model.backbone.channels[16]
    assert model.semantic_head.conv[0][0].in_channels == expected
    with pytest.raises(ArgumentError, match="semantic_feature"):
        build_maxdeeplab("max_deeplab_tiny", 3, 4, semantic_feature="stem")


def test_max_deeplab_s_parameter_count_and_small_forward():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_s", 3, 10)
    total = sum(p.numel() for p in model.parameters())
    semantic = sum(p.numel() for p in model.semantic_head.parameters())
    without_aux = total - semantic
    # MaX-DeepLab-S: about 62 M parameters without the auxiliary semantic head
    assert abs(without_aux - 62e6) / 62e6 < 0.05, without_aux
    assert model.num_slots == 128 and model.config["memory_channels"] == 256
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    _check_outputs(model, out, 1, 64, 64, 10)


def test_variants_registry():
    assert {"max_deeplab_s", "max_deeplab_l", "max_deeplab_cpu", "max_deeplab_tiny"} <= \
        set(list_variants())
    assert list_variants() == sorted(VARIANTS)
    with pytest.raises(TypeError):
        VARIANTS["max_deeplab_s"]["num_slots"] = 3  # read-only registry


def test_config_round_trip_through_json_rebuilds_identical_network():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 5, 3, num_slots=12)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["variant"] == "max_deeplab_tiny" and cfg["in_channels"] == 5
    assert cfg["num_classes"] == 3 and cfg["num_slots"] == 12
    twin = build_from_config(cfg)
    assert twin.config == model.config
    own, other = model.state_dict(), twin.state_dict()
    assert list(own) == list(other)
    assert all(own[k].shape == other[k].shape for k in own)
    twin.load_state_dict(own)
    model.eval(), twin.eval()
    x = torch.randn(1, 5, 32, 48)
    with torch.no_grad():
        a, b = model(x), twin(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_bad_arguments_raise_argument_error():
    with pytest.raises(ArgumentError, match="unknown MaX-DeepLab variant"):
        build_maxdeeplab("max_deeplab_xl", 3, 2)
    with pytest.raises(ArgumentError, match="num_slotz"):
        build_maxdeeplab("max_deeplab_tiny", 3, 2, num_slotz=4)
    with pytest.raises(ArgumentError, match="in_channels"):
        build_maxdeeplab("max_deeplab_tiny", 0, 2)
    with pytest.raises(ArgumentError, match="num_classes"):
        build_maxdeeplab("max_deeplab_tiny", 3, 0)
    with pytest.raises(ArgumentError, match="variant"):
        build_from_config({"in_channels": 3})


def test_bad_inputs_raise_input_mismatch_error():
    model = build_maxdeeplab("max_deeplab_tiny", 4, 2)
    with pytest.raises(InputMismatchError, match="4 bands"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(InputMismatchError, match="multiple of 16"):
        model(torch.randn(1, 4, 40, 32))
    with pytest.raises(InputMismatchError, match="image batch"):
        model(torch.randn(4, 32, 32))


def test_pad_to_multiple_tensor_and_numpy():
    x = torch.randn(2, 3, 50, 64)
    padded, (ph, pw) = pad_to_multiple(x)
    assert padded.shape == (2, 3, 64, 64) and (ph, pw) == (14, 0)
    torch.testing.assert_close(padded[..., :50, :], x)
    assert padded[..., 50:, :].abs().sum() == 0
    a = np.ones((3, 17, 33), dtype=np.float32)
    pa, pads = pad_to_multiple(a, INPUT_MULTIPLE)
    assert pa.shape == (3, 32, 48) and pads == (15, 15) and pa.dtype == np.float32
    same, pads = pad_to_multiple(torch.zeros(1, 32, 16))
    assert pads == (0, 0) and same.shape == (1, 32, 16)
    # a padded odd-sized image runs through the network
    model = build_maxdeeplab("max_deeplab_tiny", 3, 2).eval()
    with torch.no_grad():
        out = model(pad_to_multiple(torch.randn(1, 3, 45, 70))[0])
    assert out[PRED_MASK_LOGITS].shape[-2:] == (48 // model.output_stride, 80 // model.output_stride)


def test_initial_void_probability_and_mask_logit_scale():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 6, void_prior=0.9)
    out = model(torch.randn(2, 3, 64, 64))
    p_void = out[PRED_CLASS_LOGITS].softmax(-1)[..., 0]
    assert 0.85 < p_void.mean().item() < 0.95
    # train-mode BN on the mask logits with the shared scale at 0.1
    std = out[PRED_MASK_LOGITS].std().item()
    assert 0.05 < std < 0.15
    assert model.mask_head.logit_bn.weight.numel() == 1


def test_param_groups_split_backbone_from_transformer():
    model = build_maxdeeplab("max_deeplab_tiny", 3, 2)
    backbone, rest = model.param_groups()
    ids_b, ids_r = {id(p) for p in backbone}, {id(p) for p in rest}
    assert not ids_b & ids_r
    assert ids_b | ids_r == {id(p) for p in model.parameters()}
    assert id(model.first_conv().weight) in ids_b
    assert id(model.memory) in ids_r
    for module in (model.class_head, model.mask_head, model.pixel_head, model.semantic_head,
                   model.decoder, model.backbone.stage5.transformers):
        assert all(id(p) in ids_r for p in module.parameters())
    for block in model.backbone.stage5.blocks:  # P2P axial blocks belong to the backbone
        assert all(id(p) in ids_b for p in block.parameters())
    assert [id(p) for p in model.backbone_parameters()] == [id(p) for p in backbone]


@pytest.mark.slow
def test_max_deeplab_l_builds_and_runs():
    model = build_maxdeeplab("max_deeplab_l", 3, 4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    _check_outputs(model, out, 1, 64, 64, 4)
