"""Tests of the PQ-style Hungarian matcher."""
import itertools
import warnings

import numpy as np
import pytest
import torch

from geomax.common import GT_CLASSES, GT_MASKS, GT_SEMANTIC, GT_VALID, PRED_CLASS_LOGITS, PRED_MASK_LOGITS
from geomax.errors import ArgumentError
from geomax.models.matcher import HungarianMatcher, TooManySegmentsWarning, downsample_targets, pairwise_dice


def _random_case(rng, K, N, C=3, hw=8):
    mask_probs = torch.softmax(torch.as_tensor(rng.normal(size=(1, N, hw * hw)) * 3, dtype=torch.float32), dim=1)
    class_probs = torch.softmax(torch.as_tensor(rng.normal(size=(1, N, C + 1)) * 2, dtype=torch.float32), dim=-1)
    lab = rng.integers(0, K, size=hw * hw)
    gt = torch.as_tensor(np.stack([lab == k for k in range(K)])[None], dtype=torch.float32)
    classes = torch.as_tensor(rng.integers(1, C + 1, size=(1, K)))
    return mask_probs, class_probs, gt, classes


@pytest.mark.parametrize("K,N", [(1, 3), (3, 3), (3, 5), (4, 6), (5, 4)])
def test_matcher_equals_brute_force(K, N):
    rng = np.random.default_rng(K * 10 + N)
    matcher = HungarianMatcher()
    for _ in range(5):
        mp, cp, gt, cls = _random_case(rng, K, N)
        sim, dice, prob = matcher.similarity(mp, cp, gt, cls)
        assert torch.allclose(sim, dice * prob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TooManySegmentsWarning)
            (g, s), = matcher.assign(sim, torch.ones(1, K, dtype=torch.bool))
        got = float(sim[0, g, s].sum())
        s_np = sim[0].numpy()
        best = -1.0
        m = min(K, N)
        for rows in itertools.combinations(range(K), m):
            for cols in itertools.permutations(range(N), m):
                best = max(best, float(s_np[list(rows), list(cols)].sum()))
        assert got == pytest.approx(best, rel=1e-5, abs=1e-6)
        assert len(set(s.tolist())) == len(s) == m
        assert len(set(g.tolist())) == len(g)


def test_similarity_is_class_prob_times_dice_by_hand():
    # one gt mask covering pixels 0,1; slot 0 covers pixels 0,1 with prob 1; slot 1 covers 2,3
    mp = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])
    gt = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    cp = torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.8, 0.1]]])  # void, class1, class2
    sim, dice, prob = HungarianMatcher().similarity(mp, cp, gt, torch.tensor([[2]]))
    assert dice[0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)
    # probabilities over the non-void classes, read from the softmax over all C + 1 (void not renormalised)
    assert prob[0, 0].tolist() == pytest.approx([0.3, 0.1])
    assert sim[0, 0, 0] == pytest.approx(0.3, abs=1e-5)


def _target(sem, masks, classes, valid=None):
    t = {GT_SEMANTIC: sem, GT_MASKS: masks, GT_CLASSES: classes}
    if valid is not None:
        t[GT_VALID] = valid
    return t


def test_call_on_raw_dicts_ignores_padding_and_vanished_segments():
    H = W = 16
    sem = torch.zeros(1, H, W, dtype=torch.long)
    masks = torch.zeros(1, 4, H, W, dtype=torch.bool)
    masks[0, 0, :8] = True
    masks[0, 1, 8:] = True
    masks[0, 2, 0, 0] = True  # single pixel, not on the stride-4 sampling grid: vanishes
    masks[0, 0, 0, 0] = False
    sem[0][masks[0, 0]] = 1
    sem[0][masks[0, 1]] = 2
    sem[0][masks[0, 2]] = 1
    classes = torch.tensor([[1, 2, 1, 0]])  # last one is padding
    logits = torch.zeros(1, 5, 4, 4)
    logits[0, 3, :2] = 10.0
    logits[0, 1, 2:] = 10.0
    cl = torch.zeros(1, 5, 3)
    matches = HungarianMatcher()({PRED_MASK_LOGITS: logits, PRED_CLASS_LOGITS: cl}, _target(sem, masks, classes))
    (g, s), = matches
    assert dict(zip(g.tolist(), s.tolist())) == {0: 3, 1: 1}


def test_zero_segments_and_too_many_segments():
    m = HungarianMatcher()
    (g, s), = m.assign(torch.rand(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool))
    assert g.numel() == 0 and s.numel() == 0
    sim = torch.rand(1, 6, 4)
    with pytest.warns(TooManySegmentsWarning, match="6 ground-truth segments"):
        (g, s), = m.assign(sim, torch.ones(1, 6, dtype=torch.bool))
    assert len(g) == 4 and len(set(s.tolist())) == 4
    with pytest.raises(ArgumentError, match="Image 0"):
        HungarianMatcher(max_segments_policy="raise").assign(sim, torch.ones(1, 6, dtype=torch.bool))


def test_downsample_targets_samples_pixel_centres():
    sem = torch.arange(64).reshape(1, 8, 8)
    masks = (sem == 10).unsqueeze(1)
    out = downsample_targets({GT_SEMANTIC: sem, GT_MASKS: masks, GT_CLASSES: torch.ones(1, 1, dtype=torch.long)}, (2, 2))
    assert out[GT_SEMANTIC][0].tolist() == [[18, 22], [50, 54]]
    assert out[GT_VALID].all()
    with pytest.raises(ArgumentError, match="no 'masks'"):
        downsample_targets({GT_SEMANTIC: sem, GT_CLASSES: torch.ones(1, 1)}, (2, 2))


def test_pairwise_dice_empty_is_zero_not_nan():
    d = pairwise_dice(torch.zeros(1, 2, 5), torch.zeros(1, 3, 5))
    assert torch.isfinite(d).all() and (d == 0).all()
