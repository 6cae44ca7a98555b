"""Training-related behaviour of the MaX-DeepLab network: gradient flow to every
attention type and head, eval determinism, size-independent weights, checkpoints,
and a tiny overfit."""
import pytest
import torch
import torch.nn.functional as F

from geomax.common import (
    PRED_CLASS_LOGITS,
    PRED_MASK_LOGITS,
    PRED_MEMORY_FEATURES,
    PRED_PIXEL_FEATURES,
    PRED_SEMANTIC_LOGITS,
)
from geomax.errors import ModelError
from geomax.models.maxdeeplab import build_from_config, build_maxdeeplab


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster and steadier than two on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_objective(out, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sum((t * torch.randn(t.shape, generator=g)).sum() for t in out.values())


def _grad_ok(param):
    return param.grad is not None and torch.isfinite(param.grad).all() and \
        param.grad.abs().sum() > 0


def test_zero_initialised_residual_gammas_receive_gradient():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 3)
    _random_objective(model(torch.randn(2, 3, 32, 32))).backward()
    dpt = model.backbone.stage5.transformers[0]
    for bn in (dpt.pixel_conv3[1], dpt.memory_conv3.bn, dpt.ffn2.bn,
               model.backbone.stage5.blocks[0].conv3[1]):
        assert torch.all(bn.weight.detach() == 0)
        assert _grad_ok(bn.weight)


def test_gradient_reaches_every_attention_type_and_every_head():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 3)
    # Move the zero-initialised residual gammas off zero (as one optimiser step does)
    # so that gradient flows into every residual branch.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and \
                    torch.all(m.weight == 0):
                m.weight.fill_(0.5)
    _random_objective(model(torch.randn(2, 3, 32, 32))).backward()
    params = dict(model.named_parameters())
    kc = model.config["transformer_filters"]
    for group in (model.backbone.stage5, model.decoder.extra):
        for block, dpt in zip(group.blocks, group.transformers):
            # P2P: axial attention along both axes, positional tables and qkv
            for axis in (block.attention.height, block.attention.width):
                for p in (axis.rpe_query, axis.rpe_key, axis.rpe_value, axis.qkv.weight,
                          axis.content_bn.weight, axis.query_pos_bn.weight,
                          axis.key_pos_bn.weight, axis.value_pos_bn.weight):
                    assert _grad_ok(p), "P2P"
            # M2P + M2M: memory attention over pixel and memory keys
            assert _grad_ok(dpt.memory_attention.logit_bn.weight), "M2P/M2M"
            full = dpt.pixel_qkv[0].weight.grad
            assert full[kc:2 * kc].abs().sum() > 0, "M2P keys"
            assert dpt.memory_qkv.linear.weight.grad[kc:2 * kc].abs().sum() > 0, "M2M keys"
            # P2M: pixel queries attend to the memory
            assert _grad_ok(dpt.pixel_attention.logit_bn.weight), "P2M"
            assert full[:kc].abs().sum() > 0, "P2M queries"
    for head in (model.pixel_head, model.mask_head, model.class_head, model.semantic_head):
        for name, p in head.named_parameters():
            assert _grad_ok(p), f"{type(head).__name__}.{name}"
    assert _grad_ok(model.memory)
    missing = [n for n, p in params.items() if not _grad_ok(p)]
    assert not missing, missing


def test_eval_mode_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 4, 3)
    model(torch.randn(4, 4, 32, 32))  # move BN statistics off their defaults
    model.eval()
    x = torch.randn(3, 4, 48, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[1:2])
    for key in a:
        assert torch.equal(a[key], b[key]), key
        torch.testing.assert_close(single[key], a[key][1:2], rtol=1e-4, atol=1e-5)


def test_state_dict_saved_at_one_size_runs_at_other_sizes(tmp_path):
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 4, max_span=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):  # "train" at 32 px
        opt.zero_grad()
        _random_objective(model(torch.randn(2, 3, 32, 32))).backward()
        opt.step()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    twin = build_from_config(model.config)
    twin.load_state_dict(torch.load(path, weights_only=True))
    model.eval(), twin.eval()
    # 128 px: 8 positions per axis at stride 16, beyond the span of 3 (clamped distances)
    for h, w in [(64, 64), (128, 96), (16, 144)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            out, ref = twin(x), model(x)
        st = model.output_stride
        assert out[PRED_MASK_LOGITS].shape == (1, 16, h // st, w // st)
        for key in out:
            assert torch.isfinite(out[key]).all()
            torch.testing.assert_close(out[key], ref[key])


def test_pretrained_path_extends_rgb_checkpoint_to_more_bands(tmp_path):
    torch.manual_seed(0)
    rgb = build_maxdeeplab("max_deeplab_tiny", 3, 4)
    path = tmp_path / "rgb.pth"
    torch.save({"model": rgb.state_dict()}, path)
    with pytest.warns(UserWarning, match="skipped"):
        multi = build_maxdeeplab("max_deeplab_tiny", 5, 2, pretrained_path=path)
    assert "pretrained_path" not in multi.config
    w_rgb, w5 = rgb.first_conv().weight.detach(), multi.first_conv().weight.detach()
    torch.testing.assert_close(w5[:, :3], w_rgb * 3 / 5)
    torch.testing.assert_close(w5[:, 4], w_rgb.mean(1) * 3 / 5)
    # everything but the class-count-dependent tensors came from the checkpoint
    torch.testing.assert_close(multi.memory, rgb.memory)
    torch.testing.assert_close(multi.backbone.stage5.blocks[0].attention.height.rpe_key,
                               rgb.backbone.stage5.blocks[0].attention.height.rpe_key)
    assert multi.class_head.logits.weight.shape[0] == 3  # kept its own 2 + 1 classes
    report = multi.load_pretrained(path)
    assert "class_head.logits.weight" in report["skipped"]
    assert "backbone.stem.conv1.0.weight" in report["loaded"]


def test_pretrained_output_stride_1_adapts_the_full_resolution_conv_too(tmp_path):
    torch.manual_seed(0)
    rgb = build_maxdeeplab("max_deeplab_tiny", 3, 2, output_stride=1, full_res_channels=8)
    path = tmp_path / "rgb_os1.pth"
    torch.save(rgb.state_dict(), path)
    multi = build_maxdeeplab("max_deeplab_tiny", 4, 2, output_stride=1, full_res_channels=8)
    report = multi.load_pretrained(path)
    assert "full_res.0.0.weight" in report["loaded"] and not report["skipped"]
    w_rgb, w4 = rgb.full_res[0][0].weight.detach(), multi.full_res[0][0].weight.detach()
    torch.testing.assert_close(w4[:, :3], w_rgb * 3 / 4)
    torch.testing.assert_close(w4[:, 3], w_rgb.mean(1) * 3 / 4)


def test_pretrained_path_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_maxdeeplab("max_deeplab_tiny", 3, 2, pretrained_path=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        build_maxdeeplab("max_deeplab_tiny", 3, 2, pretrained_path=bad)
    other = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="no tensor"):
        build_maxdeeplab("max_deeplab_tiny", 3, 2, pretrained_path=other)


def test_tiny_variant_overfits_one_batch():
    """Masks, classes and semantics of one synthetic image are learnt in a few seconds."""
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_tiny", 3, 2, output_stride=4)
    h = w = 64
    yy, xx = torch.meshgrid(torch.arange(h // 4), torch.arange(w // 4), indexing="ij")
    seg = torch.zeros(h // 4, w // 4, dtype=torch.long)  # slot id per pixel at stride 4
    seg[(yy - 4) ** 2 + (xx - 4) ** 2 < 9] = 1
    seg[(yy > 8) & (xx > 9)] = 2
    classes = torch.tensor([1, 2, 2])  # slot 0 background "stuff" class 1, slots 1-2 class 2
    image = torch.zeros(2, 3, h, w)
    up = F.interpolate(seg[None, None].float(), size=(h, w), mode="nearest")[0, 0]
    image[:, 0] = (up == 1).float() * 2 - 1
    image[:, 1] = (up == 2).float() * 2 - 1
    image += 0.1 * torch.randn_like(image)
    target_seg = seg.expand(2, -1, -1)
    target_sem = classes[target_seg]
    target_cls = torch.zeros(2, model.num_slots, dtype=torch.long)
    target_cls[:, :3] = classes
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn(out):
        return (F.cross_entropy(out[PRED_MASK_LOGITS], target_seg)
                + F.cross_entropy(out[PRED_CLASS_LOGITS].flatten(0, 1), target_cls.flatten())
                + F.cross_entropy(out[PRED_SEMANTIC_LOGITS], target_sem))

    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn(model(image))
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(image)
    acc_mask = (out[PRED_MASK_LOGITS].argmax(1) == target_seg).float().mean().item()
    acc_sem = (out[PRED_SEMANTIC_LOGITS].argmax(1) == target_sem).float().mean().item()
    assert loss_fn(out).item() < 0.2 * first
    assert acc_mask > 0.9 and acc_sem > 0.9, (acc_mask, acc_sem)
    assert out[PRED_MEMORY_FEATURES].shape[1] == model.num_slots
    assert out[PRED_PIXEL_FEATURES].shape[1] == model.config["feature_dim"]
