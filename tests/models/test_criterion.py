"""Tests of the MaX-DeepLab loss (synthetic tensors, no network)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geomax.common import (
    GT_CLASSES,
    GT_IS_THING,
    GT_MASKS,
    GT_SEMANTIC,
    GT_VALID,
    PRED_CLASS_LOGITS,
    PRED_DETAIL_FEATURES,
    PRED_MASK_LOGITS,
    PRED_PIXEL_FEATURES,
    PRED_SEMANTIC_LOGITS,
)
from geomax.errors import ArgumentError
from geomax.models.criterion import TERM_NAMES, MaXDeepLabLoss
from geomax.models.matcher import downsample_targets

C = 4  # classes 1, 2 stuff; 3, 4 things
THING = {3, 4}


#: deeplab2's loss semantics (ground truth at the output stride, pixel-mean mask-ID term); the
#: LossConfig defaults differ ("input", "segment"), so tests of deeplab2's behaviour name them.
DEEPLAB2 = dict(loss_resolution="output", mask_id_balance="pixel")


def deeplab2_loss(**options):
    return MaXDeepLabLoss(C, **{**DEEPLAB2, **options})


def make_target(seed=0, B=2, H=32, W=32, K=10, void_block=True):
    """Random panoptic targets: two stuff halves, a few thing rectangles, a no-data block aligned to stride 4."""
    rng = np.random.default_rng(seed)
    sem = np.zeros((B, H, W), np.int64)
    masks = np.zeros((B, K, H, W), bool)
    classes = np.zeros((B, K), np.int64)
    for b in range(B):
        seg = np.zeros((H, W), np.int64)  # segment id + 1
        seg[:, : W // 2] = 1
        seg[:, W // 2:] = 2
        seg_cls = {1: 1, 2: 2}
        for t in range(rng.integers(1, 4)):
            y, x = rng.integers(0, H - 8, 2)
            seg[y:y + 8, x:x + 8] = 3 + t
            seg_cls[3 + t] = int(rng.integers(3, 5))
        for s, c in seg_cls.items():
            m = seg == s
            if m.any():
                masks[b, s - 1] = m
                classes[b, s - 1] = c
                sem[b][m] = c
    valid = np.ones((B, H, W), bool)
    if void_block:
        valid[:, :8, :8] = False
    return {GT_SEMANTIC: torch.as_tensor(sem), GT_MASKS: torch.as_tensor(masks), GT_CLASSES: torch.as_tensor(classes),
            GT_IS_THING: torch.as_tensor(np.isin(classes, list(THING))), GT_VALID: torch.as_tensor(valid)}


def random_pred(seed=1, B=2, N=12, h=8, w=8, D=16):
    g = torch.Generator().manual_seed(seed)
    return {
        PRED_MASK_LOGITS: torch.randn(B, N, h, w, generator=g).requires_grad_(),
        PRED_CLASS_LOGITS: torch.randn(B, N, C + 1, generator=g).requires_grad_(),
        PRED_SEMANTIC_LOGITS: torch.randn(B, C + 1, h, w, generator=g).requires_grad_(),
        PRED_PIXEL_FEATURES: F.normalize(torch.randn(B, D, h, w, generator=g), dim=1).requires_grad_(),
    }


def test_terms_weights_and_total():
    loss = deeplab2_loss()
    pred, tgt = random_pred(), make_target()
    terms = loss.terms(pred, tgt)
    assert set(terms) == set(TERM_NAMES) == set(loss.weights)
    assert loss.weights == {"pq_class": 3.0, "pq_dice": 3.0, "instance": 1.0, "mask_id": 0.3, "semantic": 1.0,
                            "instance_detail": 0.0}
    total = loss(pred, tgt)
    assert total.dim() == 0 and torch.isfinite(total)
    assert float(total.detach()) == pytest.approx(sum(loss.weights[k] * float(v) for k, v in terms.items()), rel=1e-5)
    assert loss.last_terms["total"] == pytest.approx(float(total.detach()))
    assert all(isinstance(v, float) and v > 0 for k, v in loss.last_terms.items() if k != "instance_detail")
    assert loss.last_terms["instance_detail"] == 0.0  # off by default (and no detail features given)
    total.backward()
    for k in (PRED_MASK_LOGITS, PRED_CLASS_LOGITS, PRED_SEMANTIC_LOGITS, PRED_PIXEL_FEATURES):
        assert pred[k].grad is not None and torch.isfinite(pred[k].grad).all() and pred[k].grad.abs().sum() > 0


@pytest.mark.parametrize("weighting", ["none", "official"])
def test_stop_gradients(weighting):
    loss = deeplab2_loss(void_overlap_weighting=weighting)
    pred, tgt = random_pred(), make_target()
    terms = loss.terms(pred, tgt)
    ml, cl = pred[PRED_MASK_LOGITS], pred[PRED_CLASS_LOGITS]
    g_mask, g_cls = torch.autograd.grad(terms["pq_class"], [ml, cl], allow_unused=True, retain_graph=True)
    assert g_mask is None or g_mask.abs().max() == 0  # class term: no gradient to the masks
    assert g_cls.abs().sum() > 0
    g_mask, g_cls = torch.autograd.grad(terms["pq_dice"], [ml, cl], allow_unused=True, retain_graph=True)
    assert g_cls is None or g_cls.abs().max() == 0  # dice term: no gradient to the classes
    assert g_mask.abs().sum() > 0
    g_mask, g_cls = torch.autograd.grad(terms["mask_id"], [ml, cl], allow_unused=True)
    assert g_cls is None or g_cls.abs().max() == 0


def _void_positions(tgt, h, w):
    small = downsample_targets(tgt, (h, w))
    return ~(small[GT_VALID] & (small[GT_SEMANTIC] > 0))


@pytest.mark.parametrize("weighting", ["none", "official"])
def test_void_pixels_change_nothing(weighting):
    loss = deeplab2_loss(void_overlap_weighting=weighting)
    pred, tgt = random_pred(), make_target()
    base = {k: float(v) for k, v in loss.terms(pred, tgt).items()}
    void = _void_positions(tgt, 8, 8)
    assert void.any() and (~void).any()
    g = torch.Generator().manual_seed(7)
    pred2 = {k: v.detach().clone() for k, v in pred.items()}
    for key in (PRED_MASK_LOGITS, PRED_SEMANTIC_LOGITS, PRED_PIXEL_FEATURES):
        noise = torch.randn(pred2[key].shape, generator=g) * 5
        pred2[key] = torch.where(void.unsqueeze(1), pred2[key] + noise, pred2[key])
    # ground truth under no-data pixels is irrelevant too
    tgt2 = {k: v.clone() for k, v in tgt.items()}
    nd = ~tgt[GT_VALID]
    tgt2[GT_SEMANTIC][nd] = 3
    tgt2[GT_MASKS][:, 0][nd] = True
    after = {k: float(v) for k, v in loss.terms(pred2, tgt2).items()}
    for k in TERM_NAMES:
        if weighting == "official" and k == "pq_class":
            continue  # deeplab2's weighting reads the slots' mass on void by design
        assert after[k] == pytest.approx(base[k], rel=1e-5, abs=1e-6), k


def _check_finite(loss, pred, tgt):
    total = loss(pred, tgt)
    assert torch.isfinite(total), loss.last_terms
    total.backward()
    for v in pred.values():
        assert v.grad is None or torch.isfinite(v.grad).all()
    return loss.last_terms


@pytest.mark.parametrize("weighting", ["none", "official"])
def test_never_nan_empty_all_void_single_pixel(weighting):
    loss = deeplab2_loss(void_overlap_weighting=weighting)
    B, H, W, K = 2, 32, 32, 6
    empty = {GT_SEMANTIC: torch.zeros(B, H, W, dtype=torch.long), GT_MASKS: torch.zeros(B, K, H, W, dtype=torch.bool),
             GT_CLASSES: torch.zeros(B, K, dtype=torch.long), GT_IS_THING: torch.zeros(B, K, dtype=torch.bool),
             GT_VALID: torch.ones(B, H, W, dtype=torch.bool)}
    terms = _check_finite(loss, random_pred(), empty)
    assert terms["pq_dice"] == 0 and terms["mask_id"] == 0 and terms["instance"] == 0 and terms["semantic"] == 0
    assert terms["pq_class"] > 0  # every slot still learns toward void

    all_void = make_target()
    all_void[GT_VALID][:] = False
    terms = _check_finite(loss, random_pred(), all_void)
    assert terms["pq_dice"] == 0 and terms["mask_id"] == 0 and terms["semantic"] == 0

    single = {k: v.clone() for k, v in empty.items()}
    single[GT_MASKS][0, 0, 2, 2] = True  # on the stride-4 sampling grid: survives
    single[GT_MASKS][0, 1, 5, 7] = True  # off the grid: vanishes at stride 4
    single[GT_MASKS][1, 0, 30, 30] = True
    single[GT_CLASSES][0, :2] = 3
    single[GT_CLASSES][1, 0] = 4
    single[GT_IS_THING][:] = True
    for b, k in ((0, 0), (0, 1), (1, 0)):
        single[GT_SEMANTIC][b][single[GT_MASKS][b, k]] = single[GT_CLASSES][b, k]
    terms = _check_finite(loss, random_pred(), single)
    assert terms["pq_dice"] > 0 and terms["instance"] >= 0
    assert [len(g) for g, _ in loss.last_matches] == [1, 1]


def perfect_pred(tgt, N=12, h=8, w=8, scale=30.0, seed=0):
    """Logits that reproduce the target exactly, segments on shuffled slots."""
    small = downsample_targets(tgt, (h, w))
    B, K = small[GT_CLASSES].shape
    rng = np.random.default_rng(seed)
    ml = torch.full((B, N, h, w), -scale)
    cl = torch.zeros(B, N, C + 1)
    cl[:, :, 0] = scale
    feats = torch.zeros(B, 16, h, w)
    sem = torch.full((B, C + 1, h, w), -scale)
    for b in range(B):
        slots = rng.permutation(N)
        for k in range(K):
            m = small[GT_MASKS][b, k] & small[GT_VALID][b]
            c = int(small[GT_CLASSES][b, k])
            if c == 0 or not m.any():
                continue
            ml[b, slots[k]][m] = scale
            cl[b, slots[k], 0] = 0.0
            cl[b, slots[k], c] = scale
            feats[b, k][m] = 1.0
        sem[b].scatter_(0, small[GT_SEMANTIC][b].unsqueeze(0), scale)
    # void pixels: unit feature on an unused axis (ignored anyway)
    feats[:, -1][feats.abs().sum(1) == 0] = 1.0
    return {PRED_MASK_LOGITS: ml, PRED_CLASS_LOGITS: cl, PRED_SEMANTIC_LOGITS: sem, PRED_PIXEL_FEATURES: feats}


def test_perfect_prediction_reaches_minimum():
    loss = deeplab2_loss()
    tgt = make_target(seed=3)
    terms = {k: float(v) for k, v in loss.terms(perfect_pred(tgt), tgt).items()}
    for k in ("pq_class", "pq_dice", "mask_id", "semantic"):
        assert terms[k] < 1e-4, (k, terms)
    # instance discrimination with orthogonal unit features: per thing pixel log(1 + (K - 1) e^{-1/tau})
    small = downsample_targets(tgt, (8, 8))
    expected = []
    for b in range(2):
        present = [(small[GT_MASKS][b, k] & small[GT_VALID][b]).sum() > 0 and small[GT_CLASSES][b, k] > 0
                   for k in range(10)]
        n_present = int(sum(bool(p) for p in present))
        n_thing_pix = sum(int((small[GT_MASKS][b, k] & small[GT_VALID][b]).sum()) for k in range(10)
                          if present[k] and bool(small[GT_IS_THING][b, k]))
        expected += [math.log(1 + (n_present - 1) * math.exp(-1 / 0.3))] * n_thing_pix
    assert terms["instance"] == pytest.approx(np.mean(expected), rel=1e-4)
    random_total = float(loss(random_pred(), tgt))
    assert float(loss(perfect_pred(tgt), tgt)) < 0.1 * random_total


def test_bad_inputs_raise():
    loss = deeplab2_loss()
    pred = random_pred()
    pred[PRED_CLASS_LOGITS] = torch.zeros(2, 12, C + 3)
    with pytest.raises(ArgumentError, match="num_classes"):
        loss(pred, make_target())
    with pytest.raises(ArgumentError, match="no 'mask_logits'"):
        loss({}, make_target())
    with pytest.raises(ArgumentError, match="void_overlap_weighting"):
        MaXDeepLabLoss(C, void_overlap_weighting="other")


def test_works_as_fastai_loss_func():
    from fastai.learner import Learner  # noqa: F401  (import check: fastai is a dependency)

    loss = deeplab2_loss()
    pred, tgt = random_pred(), make_target()
    out = loss(pred, tgt)  # fastai calls loss_func(pred, *yb) with yb = (target_dict,)
    assert isinstance(out, torch.Tensor) and out.requires_grad


# ---- loss_resolution="input": predictions resized up to the ground truth --------------------

def test_input_resolution_equals_output_resolution_on_full_size_predictions():
    """Predictions already at the ground truth's size: both settings compute the same terms."""
    tgt = make_target(seed=5)
    pred = random_pred(h=32, w=32)
    a = MaXDeepLabLoss(C, loss_resolution="output").terms(pred, tgt)
    b = MaXDeepLabLoss(C, loss_resolution="input").terms(pred, tgt)
    for k in TERM_NAMES:
        torch.testing.assert_close(a[k], b[k])


def test_input_resolution_keeps_segments_smaller_than_the_stride():
    B, H, W, K = 1, 32, 32, 3
    tgt = {GT_SEMANTIC: torch.ones(B, H, W, dtype=torch.long), GT_MASKS: torch.zeros(B, K, H, W, dtype=torch.bool),
           GT_CLASSES: torch.tensor([[1, 3, 0]]), GT_IS_THING: torch.tensor([[False, True, False]]),
           GT_VALID: torch.ones(B, H, W, dtype=torch.bool)}
    tgt[GT_MASKS][0, 1, 8:10, 8:10] = True  # a 2x2 object off the stride-4 sampling grid (2, 6, 10, ...)
    tgt[GT_MASKS][0, 0] = ~tgt[GT_MASKS][0, 1]
    tgt[GT_SEMANTIC][0][tgt[GT_MASKS][0, 1]] = 3
    out_loss = MaXDeepLabLoss(C, loss_resolution="output")
    in_loss = MaXDeepLabLoss(C, loss_resolution="input")
    pred = random_pred(B=1, h=8, w=8)
    _check_finite(out_loss, pred, tgt)
    assert [len(g) for g, _ in out_loss.last_matches] == [1]  # the small object vanished
    terms = _check_finite(in_loss, pred, tgt)
    assert sorted(in_loss.last_matches[0][0].tolist()) == [0, 1]  # it is matched and learned
    assert terms["pq_dice"] > 0
    total = in_loss(pred, tgt)
    total.backward()
    assert pred[PRED_MASK_LOGITS].grad.shape == (1, 12, 8, 8)  # gradients reach the stride-4 logits
    assert torch.isfinite(pred[PRED_MASK_LOGITS].grad).all()
    assert pred[PRED_MASK_LOGITS].grad[0, :, 2, 2].abs().sum() > 0


def test_bad_loss_resolution_raises():
    with pytest.raises(ArgumentError, match="loss_resolution"):
        MaXDeepLabLoss(C, loss_resolution="full")


def test_segment_balanced_mask_id_weighs_every_object_the_same():
    """A wrong 2x2 object next to a right 1020-pixel field: pixel-averaged mask-ID hardly
    notices, segment-balanced mask-ID counts it as half of the term."""
    B, H, W, N = 1, 32, 32, 4
    masks = torch.zeros(B, 2, H, W, dtype=torch.bool)
    masks[0, 1, 8:10, 8:10] = True
    masks[0, 0] = ~masks[0, 1]
    tgt = {GT_SEMANTIC: torch.where(masks[0, 1], 3, 1).unsqueeze(0), GT_MASKS: masks,
           GT_CLASSES: torch.tensor([[1, 3]]), GT_IS_THING: torch.tensor([[False, True]]),
           GT_VALID: torch.ones(B, H, W, dtype=torch.bool)}
    ml = torch.full((B, N, H, W), -10.0)
    ml[0, 0] = 10.0  # slot 0 owns every pixel, the small object included
    cl = torch.full((B, N, C + 1), -10.0)
    cl[0, 0, 1] = 10.0
    cl[0, 1, 3] = 10.0
    cl[0, 2:, 0] = 10.0
    pred = {PRED_MASK_LOGITS: ml, PRED_CLASS_LOGITS: cl}
    pixel = MaXDeepLabLoss(C, mask_id_balance="pixel").terms(pred, tgt)["mask_id"]
    segment = MaXDeepLabLoss(C, mask_id_balance="segment").terms(pred, tgt)["mask_id"]
    assert segment > 100 * pixel
    assert float(segment) == pytest.approx(20.0 / 2, rel=1e-3)  # (0 for the field + 20 for the object) / 2
    with pytest.raises(ArgumentError, match="mask_id_balance"):
        MaXDeepLabLoss(C, mask_id_balance="area")


def test_detail_instance_term_separates_touching_objects_at_full_resolution():
    """detail_instance_weight > 0: instance discrimination on the full-resolution detail
    embedding; lower for an embedding that tells the objects apart, gradients reach it."""
    tgt = make_target(seed=3, void_block=False)
    pred = random_pred(h=32, w=32)
    loss = MaXDeepLabLoss(C, detail_instance_weight=0.5, loss_resolution="input")
    # an embedding with one direction per ground-truth segment vs a constant one
    D = 16
    seg = tgt[GT_MASKS].float().argmax(1)  # (B, H, W)
    good = F.one_hot(seg, D).permute(0, 3, 1, 2).float().requires_grad_()
    flat = F.normalize(torch.ones(2, D, 32, 32), dim=1)
    t_good = loss.terms({**pred, PRED_DETAIL_FEATURES: good}, tgt)["instance_detail"]
    t_flat = loss.terms({**pred, PRED_DETAIL_FEATURES: flat}, tgt)["instance_detail"]
    assert 0 < float(t_good) < float(t_flat)
    total = loss({**pred, PRED_DETAIL_FEATURES: good}, tgt)
    total.backward()
    assert good.grad is not None and good.grad.abs().sum() > 0
    assert loss.weights["instance_detail"] == 0.5
    off = deeplab2_loss()
    assert float(off.terms({**pred, PRED_DETAIL_FEATURES: good}, tgt)["instance_detail"]) == 0.0
    with pytest.raises(ArgumentError, match="detail_instance_weight"):
        MaXDeepLabLoss(C, detail_instance_weight=-1.0)


def test_segment_index_equals_argmax_for_non_overlapping_masks():
    from geomax.models.criterion import _segment_index

    torch.manual_seed(0)
    seg = torch.randint(0, 7, (3, 50))  # 0..6: segment of each pixel; masks of 6 segments + empty pixels
    gt = torch.stack([(seg == k + 1) for k in range(6)], 1).float()  # (B, K, P); seg 0 -> no mask
    gt[:, 2] = 0  # an absent segment
    assert torch.equal(_segment_index(gt), gt.argmax(1))


@pytest.mark.parametrize("resolution", ["input", "output"])
def test_the_segment_index_gives_the_terms_and_gradients_of_the_dense_masks(resolution):
    """The loss summed by segment index (the dataset's ``GT_SEGMENT_INDEX``) equals the dense-mask definition:
    the same terms with the index given, derived from the masks, or with a stale padding entry's mask."""
    from geomax.common import GT_SEGMENT_INDEX
    from geomax.models.matcher import pairwise_dice

    tgt = make_target(seed=3)
    masks = tgt[GT_MASKS]
    index = torch.where(masks.any(1), masks.float().argmax(1), torch.tensor(-1))
    loss = MaXDeepLabLoss(C, loss_resolution=resolution)
    values, grads = [], []
    for target in (tgt, {**tgt, GT_SEGMENT_INDEX: index}):
        pred = random_pred(seed=5)
        terms = loss.terms(pred, target)
        sum(terms.values()).backward()
        values.append({k: float(v) for k, v in terms.items()})
        grads.append(pred[PRED_MASK_LOGITS].grad.clone())
    assert values[0] == pytest.approx(values[1], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grads[0], grads[1])
    # the matcher's similarity from the overlaps equals the one from dense masks
    probs = torch.rand(2, 12, 64)
    gt = masks[:, :, ::4, ::4].reshape(2, 10, -1).float()
    matcher = loss.matcher
    dense = matcher.similarity(probs, torch.rand(2, 12, C + 1).softmax(-1), gt, tgt[GT_CLASSES])
    inter = torch.einsum("bkp,bnp->bkn", gt, probs)
    summed = matcher.similarity_from_overlap(inter, gt.sum(-1), probs.sum(-1), torch.rand(2, 12, C + 1).softmax(-1),
                                             tgt[GT_CLASSES])
    torch.testing.assert_close(dense[1], summed[1])
    torch.testing.assert_close(dense[1], pairwise_dice(gt, probs))



@pytest.mark.parametrize("resolution", ["output", "input", "sampled"])
def test_padding_entries_change_nothing_and_matches_keep_the_callers_indices(resolution):
    """Targets padded to an export's n_masks (absent entries between and after the present ones, as a crop
    of a fuller chip leaves them) give the terms and gradients of the same segments without padding; the
    loss works on the present entries only and reports matches in the caller's segment indices."""
    from geomax.common import GT_SEGMENT_INDEX

    tgt = make_target(seed=4, K=5)
    spread = [1, 4, 5, 8, 9]  # the 5 entries at these indices of 12; 0, 2, 3, 6, 7, 10, 11 absent
    padded = {GT_SEMANTIC: tgt[GT_SEMANTIC], GT_VALID: tgt[GT_VALID]}
    padded[GT_MASKS] = torch.zeros(2, 12, 32, 32, dtype=torch.bool)
    padded[GT_MASKS][:, spread] = tgt[GT_MASKS]
    padded[GT_CLASSES] = torch.zeros(2, 12, dtype=torch.long)
    padded[GT_CLASSES][:, spread] = tgt[GT_CLASSES]
    padded[GT_CLASSES][:, 0] = 2  # a class but no pixels: a segment the crop cut away
    padded[GT_IS_THING] = torch.isin(padded[GT_CLASSES], torch.tensor(list(THING)))
    for target in (tgt, padded):
        target[GT_SEGMENT_INDEX] = torch.where(target[GT_MASKS].any(1), target[GT_MASKS].float().argmax(1),
                                               torch.tensor(-1))
    loss = MaXDeepLabLoss(C, loss_resolution=resolution, loss_points=256)
    values, grads, matched = [], [], []
    for target in (tgt, padded):
        torch.manual_seed(0)  # the same sampled points
        pred = random_pred(seed=6, h=32, w=32) if resolution != "output" else random_pred(seed=6)
        terms = loss.terms(pred, target)
        sum(terms.values()).backward()
        values.append({k: float(v) for k, v in terms.items()})
        grads.append([pred[k].grad.clone() for k in (PRED_MASK_LOGITS, PRED_CLASS_LOGITS, PRED_PIXEL_FEATURES)])
        matched.append([sorted(zip(g.tolist(), sl.tolist())) for g, sl in loss.last_matches])
    assert values[0] == pytest.approx(values[1], rel=1e-5, abs=1e-6)
    assert values[0]["instance"] > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert matched[1] == [[(spread[g], sl) for g, sl in m] for m in matched[0]]


def test_instance_term_equals_its_dense_mask_definition():
    """Segment mean features summed by segment index equal the product with dense one-hot masks."""
    torch.manual_seed(1)
    B, D, P, K = 2, 8, 40, 6
    feats = F.normalize(torch.randn(B, D, P), dim=1)
    seg = torch.randint(0, K + 1, (B, P))  # K: no segment
    present = torch.zeros(B, K, dtype=torch.bool).scatter_(1, seg.clamp(max=K - 1), seg < K)
    is_thing = present & torch.tensor([False, True, True, False, True, True])
    area = torch.zeros(B, K + 1).scatter_add_(1, seg, torch.ones(B, P))[:, :K]
    loss = MaXDeepLabLoss(C)
    got = loss._instance_term(feats, seg, present, is_thing, area)
    gt = torch.zeros(B, K + 1, P).scatter_(1, seg.unsqueeze(1), 1.0)[:, :K]
    mean = F.normalize(torch.einsum("bkp,bdp->bkd", gt, feats) / area.clamp(min=1).unsqueeze(-1), dim=-1)
    logits = torch.einsum("bdp,bkd->bkp", feats, mean) / loss.temperature
    logits = torch.where(present.unsqueeze(-1), logits, torch.full_like(logits, -1e4))
    nll = -torch.log_softmax(logits, 1).gather(1, seg.clamp(max=K - 1).unsqueeze(1)).squeeze(1)
    thing_pix = (seg < K) & is_thing.gather(1, seg.clamp(max=K - 1))
    torch.testing.assert_close(got, (nll * thing_pix).sum() / thing_pix.sum())


def test_point_sample_indices_take_one_pixel_in_every_cell():
    from geomax.models.criterion import point_sample_indices

    idx = point_sample_indices(30, 20, 24, batch=3, generator=torch.Generator().manual_seed(0))
    side = 5  # floor(sqrt(600 / 24))
    assert idx.shape == (3, 6 * 4)
    y, x = idx // 20, idx % 20
    assert bool(((y >= 0) & (y < 30) & (x >= 0) & (x < 20)).all())
    cells = (y // side) * 4 + (x // side)
    assert torch.equal(cells, torch.arange(24).expand(3, -1))  # one pixel in each cell, in order
    assert not torch.equal(idx[0], idx[1])  # each image draws its own pixels
    full = point_sample_indices(7, 9, 10 ** 6, batch=2)  # more points than pixels: every pixel once
    assert torch.equal(full, torch.arange(63).expand(2, -1))
    uneven = point_sample_indices(10, 10, 9, batch=50)  # side 3: the last row and column of cells are 1 px
    assert int(uneven.max()) <= 99 and set((uneven // 10).flatten().tolist()) == set(range(10))


def test_sampled_predictions_are_the_resized_logits_at_those_pixels():
    from geomax.models.criterion import _resize_predictions, _sample_predictions, point_sample_indices

    pred = random_pred(h=8, w=8)
    idx = point_sample_indices(32, 32, 200, batch=2)
    sampled = _sample_predictions(pred, (32, 32), idx)
    resized = _resize_predictions(pred, (32, 32))
    for key in (PRED_MASK_LOGITS, PRED_SEMANTIC_LOGITS):
        dense = resized[key].reshape(*resized[key].shape[:2], -1)
        expect = dense.gather(2, idx.unsqueeze(1).expand(-1, dense.shape[1], -1))
        torch.testing.assert_close(sampled[key].squeeze(2), expect, rtol=1e-5, atol=1e-5)
    # logits already at the chip's size are taken at the pixels themselves (a gather, not an interpolation)
    full = random_pred(h=32, w=32)
    at = _sample_predictions(full, (32, 32), idx)[PRED_MASK_LOGITS].squeeze(2)
    dense = full[PRED_MASK_LOGITS].reshape(2, 12, -1)
    torch.testing.assert_close(at, dense.gather(2, idx.unsqueeze(1).expand(-1, 12, -1)))
    grid = F.grid_sample(full[PRED_MASK_LOGITS], torch.stack([((idx % 32) + 0.5) / 16 - 1, ((idx // 32) + 0.5) / 16 - 1],
                                                             -1).reshape(2, 1, -1, 2).float(), align_corners=False)
    torch.testing.assert_close(at, grid.squeeze(2))


def test_sampled_loss_on_every_pixel_equals_the_input_loss():
    """``loss_points`` just under the chip's pixels: the point path takes every pixel once (cell side 1)
    and gives the terms and mask-logit gradients of ``"input"`` (but instance discrimination, which
    ``"input"`` computes at the features' stride and the point path at the points); at or above them,
    ``"sampled"`` is ``"input"``."""
    tgt = make_target(seed=4)
    results = []
    for options in ({"loss_resolution": "input"}, {"loss_resolution": "sampled", "loss_points": 32 * 32 - 1},
                    {"loss_resolution": "sampled", "loss_points": 32 * 32}):
        pred = random_pred(seed=2)
        terms = MaXDeepLabLoss(C, **options).terms(pred, tgt)
        sum(terms.values()).backward()
        results.append(({k: float(v) for k, v in terms.items()}, pred[PRED_MASK_LOGITS].grad.clone()))
    (every_pixel, grad_every), (at_or_above, grad_at) = results[1:]
    assert at_or_above == pytest.approx(results[0][0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad_at, results[0][1])
    expect = {k: v for k, v in results[0][0].items() if k != "instance"}
    assert {k: v for k, v in every_pixel.items() if k in expect} == pytest.approx(expect, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(grad_every, results[0][1], rtol=1e-4, atol=1e-6)


def test_sampled_instance_term_is_the_dense_term_at_the_points():
    """Instance discrimination of ``"sampled"``: the unit features at the points against the mean feature of
    each segment's points; with features already at the chip's size and every pixel taken, it is the term on
    the full-resolution targets."""
    from geomax.models.matcher import downsample_targets

    tgt = make_target(seed=8)
    pred = random_pred(seed=6, h=32, w=32)
    sampled = MaXDeepLabLoss(C, loss_resolution="sampled", loss_points=32 * 32 - 1).terms(pred, tgt)["instance"]
    loss = MaXDeepLabLoss(C, loss_resolution="output")
    dense = loss._instance_term_at(pred[PRED_PIXEL_FEATURES], downsample_targets(tgt, (32, 32)))
    assert float(sampled) == pytest.approx(float(dense), rel=1e-4)


def test_sampled_loss_estimates_the_input_loss_and_reaches_every_logit():
    tgt = make_target(seed=6, H=64, W=64, void_block=False)
    pred = random_pred(seed=3, h=16, w=16)
    full = MaXDeepLabLoss(C, loss_resolution="input").terms(pred, tgt)
    loss = MaXDeepLabLoss(C, loss_resolution="sampled", loss_points=1024)  # a quarter of the pixels
    torch.manual_seed(0)
    draws = [loss.terms(pred, tgt) for _ in range(8)]
    for k in ("pq_dice", "mask_id", "semantic"):
        mean = sum(float(d[k]) for d in draws) / len(draws)
        assert mean == pytest.approx(float(full[k]), rel=0.1), k
    total = loss(pred, tgt)
    total.backward()
    grad = pred[PRED_MASK_LOGITS].grad
    assert torch.isfinite(grad).all() and bool((grad.abs().sum(1) > 0).all())  # bilinear taps reach every cell


def test_sampled_loss_keeps_no_data_and_void_out():
    tgt = make_target(seed=7, H=64, W=64)
    tgt[GT_VALID][:, :, :40] = False  # most of the chip is no data
    loss = MaXDeepLabLoss(C, loss_resolution="sampled", loss_points=256)
    a = random_pred(seed=4, h=16, w=16)
    b = {k: v.detach().clone().requires_grad_() for k, v in a.items()}
    with torch.no_grad():  # change the logits over the no-data columns only (input columns < 40 -> logit columns < 9)
        b[PRED_MASK_LOGITS][..., :9] += 5 * torch.randn_like(b[PRED_MASK_LOGITS][..., :9])
        b[PRED_SEMANTIC_LOGITS][..., :9] += 5
    torch.manual_seed(1)
    ta = loss.terms(a, tgt)
    torch.manual_seed(1)
    tb = loss.terms(b, tgt)
    for k in ("pq_dice", "mask_id", "semantic"):
        assert float(ta[k]) == pytest.approx(float(tb[k]), rel=1e-5, abs=1e-6), k


def test_loss_points_must_be_a_positive_whole_number():
    for bad in (0, -5, 2.5):
        with pytest.raises(ArgumentError, match="loss_points"):
            MaXDeepLabLoss(C, loss_resolution="sampled", loss_points=bad)
