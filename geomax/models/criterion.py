"""MaX-DeepLab training objective: PQ-style loss plus the auxiliary losses.

Follows the official deeplab2 implementation (``model/loss/max_deeplab_loss.py``)
of Wang et al., *MaX-DeepLab: End-to-End Panoptic Segmentation with Mask
Transformers*, CVPR 2021. Terms (names as returned by :meth:`MaXDeepLabLoss.terms`):

``pq_class``
    Class term of the PQ-style loss. For each slot, a cross-entropy over the
    ``C + 1`` classes; a slot matched to ground-truth segment ``i`` targets
    ``c_i`` with weight ``alpha * Dice_i`` (stop-gradient), an unmatched slot
    targets void with weight ``(1 - alpha) * w_void`` (see
    ``void_overlap_weighting``). Summed over slots, divided by the number of
    slots ``N``.
``pq_dice``
    Mask term of the PQ-style loss: ``alpha / N * sum_i p_i(c_i) * (1 - Dice_i)``
    over matched segments, the class probability ``p`` taken with stop-gradient.
    ``pq_class`` and ``pq_dice`` both carry the PQ-style weight (3.0).
``instance``
    Instance discrimination: on ground-truth thing pixels, a softmax cross-entropy
    (temperature 0.3) of each pixel feature against the L2-normalised mean feature
    of every ground-truth segment, the target being its own segment.
``mask_id``
    Mask-ID cross-entropy: a per-pixel softmax over the N slots, the target being
    the slot matched to the pixel's ground-truth segment; a mean over pixels
    (deeplab2) or, with ``mask_id_balance="segment"``, a mean over matched
    segments of each segment's mean (every object weighs the same).
``semantic``
    Auxiliary semantic cross-entropy on the semantic head (void never a target).

Ground truth is brought to the output stride by pixel-centre strided sampling
(:func:`geomax.models.matcher.downsample_targets`, deeplab2's choice): masks stay
binary and non-overlapping. Segments that vanish at the stride are dropped from
every term. With ``loss_resolution="input"`` the predictions are brought to the
ground truth instead: mask logits and semantic logits are resized (bilinear, as
the post-processor resizes mask logits) to the input size and the PQ-style,
mask-ID and semantic terms are computed there (the instance-discrimination term
stays at the pixel features' stride, where it is about 10x cheaper). Training then
sees exactly the masks inference produces, and objects a few pixels across
(vehicles, small trees) are neither dropped nor learned as blurred, dilated
blobs (``benchmarks/bench_overfit.py``; DESIGN section 10). With ``loss_resolution="sampled"``
(the default) the same terms, instance discrimination included, are computed on
``loss_points`` pixels of each chip only, one drawn at random in each cell of a grid
(:func:`point_sample_indices`), the logits and unit pixel features interpolated there and
the ground truth read there (Mask2Former's point loss; matching uses the same points): the
cost no longer grows with the chip's area (``benchmarks/bench_loss_points.py``). A segment
that no point hits is absent for that step. Void (class index 0) and no-data (``valid`` False) pixels are ignored
by every term: they are removed from the Dice masks, from the mask-ID,
instance-discrimination and semantic targets. Every term is a sum divided by a
count clamped to at least 1, so empty images, all-void images and single-pixel
segments give finite values (zero where nothing is left to learn).

Void-overlap weighting of the negative class term (``void_overlap_weighting``)
-------------------------------------------------------------------------------
deeplab2 multiplies the negative (toward void) class cross-entropy of each
unmatched slot by the share of that slot's soft mask lying on void pixels
(``"official"``; floored at 1e-5). The comment there speaks of *reducing* the
penalty for masks on void, but the weight does the opposite: an unmatched slot
whose mask covers labelled pixels is hardly pushed toward void, and on chips
without void pixels the negative term vanishes altogether. ``"none"`` uses
weight 1 for every unmatched slot (the paper's equation).

**Default: ``"none"``**: with ``"official"`` the negative term all but vanishes on chips
without void, leaving unmatched slots free to keep confident non-void classes (false
positives after the class threshold); with ``"none"`` the loss does not depend on
predictions at void pixels at all. The measurement behind the choice is in
``docs/design.md`` (section 10, negative class term).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import (
    GT_CLASSES,
    GT_IS_THING,
    GT_MASKS,
    GT_SEGMENT_INDEX,
    GT_SEMANTIC,
    GT_VALID,
    PRED_CLASS_LOGITS,
    PRED_DETAIL_FEATURES,
    PRED_MASK_LOGITS,
    PRED_PIXEL_FEATURES,
    PRED_SEMANTIC_LOGITS,
)
from ..config import LossConfig
from ..errors import ArgumentError
from .matcher import DICE_EPS, HungarianMatcher, downsample_targets

__all__ = ["MaXDeepLabLoss", "TERM_NAMES"]

#: Names of the loss terms, in the order they are reported.
TERM_NAMES = ("pq_class", "pq_dice", "instance", "mask_id", "semantic", "instance_detail")

_WEIGHT_FLOOR = 1e-5  # deeplab2's floor on the stop-gradient weights
_MASKED_LOGIT = -1e4  # logit of absent segments in the instance-discrimination softmax


def _flat_segments(tgt: dict) -> tuple[torch.Tensor, ...]:
    """Targets at the loss resolution as each pixel's segment: ``(nv, classes, seg, present, is_thing, area)``.

    ``nv`` (B, P) float, 1 on labelled valid pixels; ``classes`` (B, K); ``seg`` (B, P) int64
    index of the pixel's segment, ``K`` (the number of mask entries) where the pixel is void,
    no data or in no present segment; ``present`` (B, K) segments with a class and pixels
    left; ``is_thing`` (B, K) present things; ``area`` (B, K) float valid pixels of each
    segment. The targets of the dense masks without their (B, K, P) floats.
    """
    B = tgt[GT_SEMANTIC].shape[0]
    nv_b = (tgt[GT_VALID] & (tgt[GT_SEMANTIC] > 0)).reshape(B, -1)
    classes = tgt[GT_CLASSES].long()
    K = classes.shape[1]
    seg = _pixel_segments(tgt)
    seg = torch.where(nv_b & (seg >= 0), seg, K)
    area = torch.zeros(B, K + 1, device=seg.device).scatter_add_(1, seg, torch.ones_like(seg, dtype=torch.float))
    present = (classes > 0) & (area[:, :K] > 0)
    in_present = torch.cat([present, present.new_zeros(B, 1)], 1).gather(1, seg)
    seg = torch.where(in_present, seg, K)
    area = area[:, :K] * present.float()
    is_thing = tgt.get(GT_IS_THING)
    is_thing = present if is_thing is None else (is_thing.bool() & present)
    return nv_b.float(), classes, seg, present, is_thing, area


def _compact_segments(nv: torch.Tensor, classes: torch.Tensor, seg: torch.Tensor, present: torch.Tensor,
                      is_thing: torch.Tensor, area: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The targets of :func:`_flat_segments` with only as many segment entries as an image of the batch has.

    Targets are padded to the export's ``n_masks`` (the segments of its fullest chip); a random crop of a
    chip holds far fewer (56 entries, 15-25 present on a 256 px export cropped to 128 px). Every term
    costs in proportion to the entries, so the present segments of each image move to the front, in
    their order, and the batch keeps ``K' = max(present per image)`` entries. Takes and returns the
    targets of :func:`_flat_segments` plus ``order`` (B, K'), the original index of each kept entry (to
    report matches in the caller's indices); ``seg`` is renumbered, ``K'`` where it was ``K``. The terms
    are unchanged: absent entries take part in nothing.
    """
    B, K = classes.shape
    kept = max(int(present.sum(1).max()) if B else 0, min(K, 1))  # one entry at least: indices stay valid
    if kept == K:
        return nv, classes, seg, present, is_thing, area, torch.arange(K, device=seg.device).expand(B, K)
    order = torch.argsort((~present).to(torch.uint8), dim=1, stable=True)[:, :kept]  # present first
    rank = torch.full((B, K + 1), kept, dtype=torch.long, device=seg.device)
    rank.scatter_(1, order, torch.arange(kept, device=seg.device).expand(B, kept))
    take = lambda t: t.gather(1, order)  # noqa: E731
    return nv, take(classes), rank.gather(1, seg), take(present), take(is_thing), take(area), order


def _pixel_segments(tgt: dict) -> torch.Tensor:
    """(B, P) int64 segment index of each pixel of a target dict, -1 on no segment: its ``GT_SEGMENT_INDEX``,
    or for a target built by hand without one, the index derived from its masks."""
    B = tgt[GT_SEMANTIC].shape[0]
    seg = tgt.get(GT_SEGMENT_INDEX)
    if seg is None:
        masks = tgt[GT_MASKS].reshape(B, tgt[GT_CLASSES].shape[1], -1)
        seg = torch.where(masks.any(1), _segment_index(masks.float()), -1)
    return seg.reshape(B, -1).long()


def _segment_index(gt: torch.Tensor) -> torch.Tensor:
    """(B, P) index of each pixel's segment in the non-overlapping masks ``gt`` (B, K, P); 0 where none.

    The same as ``gt.argmax(1)`` for non-overlapping binary masks, as a product with the
    indices: a reduction across the strided K axis was a third of the loss's time.
    """
    ids = torch.arange(gt.shape[1], dtype=gt.dtype, device=gt.device)
    return torch.einsum("bkp,k->bp", gt, ids).round().long()


def point_sample_indices(height: int, width: int, points: int, batch: int,
                         device: torch.device | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, Q) flat indices of input pixels for the ``"sampled"`` loss: one random pixel per cell of a grid.

    The chip is cut into square cells of side ``s = floor(sqrt(H * W / points))`` (at least 1); each
    image takes one uniformly drawn pixel in every cell (cells at the right and bottom edge may be
    narrower). Every region of the chip is sampled at the same density, so a small object is hit
    about as often as its area says, with less variance than independent uniform draws. With
    ``s == 1`` every pixel is taken once (``Q = H * W``).
    """
    side = max(1, int((height * width / max(int(points), 1)) ** 0.5))
    cy = torch.arange(0, height, side, device=device)
    cx = torch.arange(0, width, side, device=device)
    if side == 1:
        flat = (cy[:, None] * width + cx[None, :]).reshape(1, -1)
        return flat.expand(batch, -1)
    span_y = (height - cy).clamp(max=side).float()
    span_x = (width - cx).clamp(max=side).float()
    ry = torch.rand(batch, cy.numel(), cx.numel(), device=device, generator=generator)
    rx = torch.rand(batch, cy.numel(), cx.numel(), device=device, generator=generator)
    y = cy[None, :, None] + (ry * span_y[None, :, None]).long()
    x = cx[None, None, :] + (rx * span_x[None, None, :]).long()
    return (y * width + x).reshape(batch, -1)


def _sample_predictions(pred: dict, size: tuple[int, int], idx: torch.Tensor) -> dict:
    """Mask and semantic logits taken at the input pixels ``idx`` (B, Q) of a chip of ``size``, as (B, *, 1, Q).

    The values are those of the bilinear resize to ``size`` (``align_corners=False``) at those pixels,
    computed only there (``grid_sample`` at the pixel centres, border clamping as the resize).
    """
    out = dict(pred)
    for key in (PRED_MASK_LOGITS, PRED_SEMANTIC_LOGITS):
        value = pred.get(key)
        if value is not None:
            out[key] = _at_points(value, size, idx)
    return out


def _at_points(value: torch.Tensor, size: tuple[int, int], idx: torch.Tensor) -> torch.Tensor:
    """``value`` (B, C, h, w) resized bilinearly to ``size`` and taken at the input pixels ``idx`` (B, Q): (B, C, 1, Q)."""
    H, W = size
    B, Q = idx.shape
    if tuple(value.shape[-2:]) == (H, W):  # already at the chip's size: the pixels themselves (2x faster)
        flat = value.reshape(B, value.shape[1], H * W)  # (gathered before the float32 cast: no full-size copy)
        return flat.gather(2, idx.to(value.device).unsqueeze(1).expand(-1, value.shape[1], -1)).float().unsqueeze(2)
    ys = torch.div(idx, W, rounding_mode="floor").float()
    xs = (idx % W).float()
    grid = torch.stack([(xs + 0.5) * (2.0 / W) - 1.0, (ys + 0.5) * (2.0 / H) - 1.0], -1).reshape(B, 1, Q, 2)
    return F.grid_sample(value.float(), grid.to(value.device), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _sample_targets(target: dict, idx: torch.Tensor) -> dict:
    """The semantic, validity and segment-index targets at the input pixels ``idx`` (B, Q), as (B, 1, Q)."""
    sem = target[GT_SEMANTIC]
    B = sem.shape[0]
    valid = target.get(GT_VALID)
    seg = _pixel_segments(target)
    take = lambda t: t.reshape(B, -1).gather(1, idx).unsqueeze(1)  # noqa: E731
    out = {k: v for k, v in target.items() if k in (GT_CLASSES, GT_IS_THING)}
    out[GT_SEMANTIC] = take(sem)
    out[GT_VALID] = take(valid).bool() if valid is not None else torch.ones_like(out[GT_SEMANTIC], dtype=torch.bool)
    out[GT_SEGMENT_INDEX] = take(seg)
    return out


def _resize_predictions(pred: dict, size: tuple[int, int]) -> dict:
    """Mask and semantic logits resized (bilinear) to ``size``."""
    out = dict(pred)
    for key in (PRED_MASK_LOGITS, PRED_SEMANTIC_LOGITS):
        value = pred.get(key)
        if value is None or tuple(value.shape[-2:]) == size:
            continue
        out[key] = F.interpolate(value.float(), size=size, mode="bilinear", align_corners=False)
    return out


class MaXDeepLabLoss(nn.Module):
    """PQ-style loss with Hungarian matching plus MaX-DeepLab's auxiliary losses.

    Usable directly as a fastai ``loss_func``: ``loss(pred_dict, target_dict) -> scalar``.

    Parameters
    ----------
    num_classes:
        Number of real classes C (the class logits have C + 1 entries, index 0 void).
    matcher:
        A :class:`~geomax.models.matcher.HungarianMatcher`; a default one when None.
    config:
        A :class:`~geomax.config.LossConfig` (term weights, ``alpha``, ``temperature``,
        ``void_overlap_weighting``, ``loss_resolution``, ``loss_points``, ``mask_id_balance``; its
        docstring gives each and the defaults); ``None``: the defaults.
    **options:
        Settings of :class:`~geomax.config.LossConfig` overriding ``config``.

    Attributes
    ----------
    weights:
        ``{term name: weight}``; the loss is ``sum(weights[k] * terms[k])``.
    last_terms:
        Detached float values of the terms of the last call (plus ``"total"``), for logging.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher | None = None,
                 config: LossConfig | None = None, **options) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ArgumentError(f"num_classes must be at least 1 (real classes, void not counted), got {num_classes}.")
        cfg = LossConfig.build(config, **options)
        self.config = cfg
        self.num_classes = int(num_classes)
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.alpha = float(cfg.alpha)
        self.temperature = float(cfg.temperature)
        self.void_overlap_weighting = cfg.void_overlap_weighting
        self.loss_resolution = cfg.loss_resolution
        self.loss_points = int(cfg.loss_points)
        self.mask_id_balance = cfg.mask_id_balance
        self.weights = {
            "pq_class": float(cfg.pq_weight),
            "pq_dice": float(cfg.pq_weight),
            "instance": float(cfg.instance_weight),
            "mask_id": float(cfg.mask_id_weight),
            "semantic": float(cfg.semantic_weight),
            "instance_detail": float(cfg.detail_instance_weight),
        }
        self.last_terms: dict[str, float] = {}
        self.last_matches: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------
    def _check(self, pred: dict, target: dict) -> None:
        for key in (PRED_MASK_LOGITS, PRED_CLASS_LOGITS):
            if key not in pred:
                raise ArgumentError(f"The prediction dict has no '{key}' entry; pass the MaX-DeepLab network's output dict.")
        ml, cl = pred[PRED_MASK_LOGITS], pred[PRED_CLASS_LOGITS]
        if ml.dim() != 4 or cl.dim() != 3 or cl.shape[:2] != ml.shape[:2]:
            raise ArgumentError(f"Mask logits {tuple(ml.shape)} must be (B, N, h, w) and class logits {tuple(cl.shape)} "
                                "(B, N, C + 1) with the same B and N.")
        if cl.shape[-1] != self.num_classes + 1:
            raise ArgumentError(f"Class logits have {cl.shape[-1]} entries but the loss was built for "
                                f"{self.num_classes} classes (+1 void). Build the loss with the network's num_classes "
                                "(pass num_classes=network.num_classes).")
        if GT_MASKS in target and target[GT_MASKS].shape[0] != ml.shape[0]:
            raise ArgumentError(f"Batch sizes differ: prediction {ml.shape[0]}, target {target[GT_MASKS].shape[0]}. "
                                "Pass the prediction and target of the same batch.")

    def terms(self, pred: dict, target: dict) -> dict[str, torch.Tensor]:
        """Compute the unweighted loss terms.

        Parameters
        ----------
        pred:
            Network output dict (``PRED_MASK_LOGITS`` (B, N, h, w) before the slot softmax,
            ``PRED_CLASS_LOGITS`` (B, N, C + 1), optional ``PRED_SEMANTIC_LOGITS`` (B, C + 1, h, w)
            and ``PRED_PIXEL_FEATURES`` (B, D, h, w)). A missing optional output gives a zero term.
        target:
            Target dict at input resolution (or already at (h, w)), keys of DESIGN section 9.

        Returns
        -------
        dict
            ``{name: scalar tensor}`` for every name in :data:`TERM_NAMES`.
        """
        self._check(pred, target)
        size = tuple(target[GT_SEMANTIC].shape[-2:])
        sampled = self.loss_resolution == "sampled" and size[0] * size[1] > self.loss_points
        if sampled:
            idx = point_sample_indices(size[0], size[1], self.loss_points, target[GT_SEMANTIC].shape[0],
                                       device=target[GT_SEMANTIC].device)
            pred = _sample_predictions(pred, size, idx)
            tgt = _sample_targets(target, idx)
        elif self.loss_resolution in ("input", "sampled"):
            pred = _resize_predictions(pred, size)
            # (pixel features are not resized: the instance term compares each pixel's
            #  feature with segment means; it gains little at input resolution and the
            #  re-normalisation there would cost most of the loss's time)
        mask_logits = pred[PRED_MASK_LOGITS].float()
        B, N, h, w = mask_logits.shape
        P = h * w
        if not sampled:
            tgt = downsample_targets(target, (h, w))
        nv, classes, seg, present, is_thing, gt_area, order = _compact_segments(*_flat_segments(tgt))
        K = classes.shape[1]  # seg (B, P), K on no segment; gt_area (B, K)

        log_probs = torch.log_softmax(mask_logits.reshape(B, N, P), dim=1)  # slot softmax
        probs = log_probs.exp()
        probs_nv = probs * nv.unsqueeze(1)
        class_logits = pred[PRED_CLASS_LOGITS].float()
        class_logp = torch.log_softmax(class_logits, dim=-1)
        # overlap of every slot's mask with every segment (with gradient), summed by segment index:
        # (B, N, K + 1), the last entry collecting the pixels of no segment
        overlap = probs_nv.new_zeros(B, N, K + 1).scatter_add(2, seg.unsqueeze(1).expand(B, N, P), probs_nv)
        pred_area = probs_nv.sum(-1)  # (B, N)

        # ---- matching (no gradient) -------------------------------------
        sim, dice_all, prob_all = self.matcher.similarity_from_overlap(
            overlap[..., :K].transpose(1, 2), gt_area, pred_area, class_logp.exp(), classes)
        matches = self.matcher.assign(sim, present)
        self.last_matches = [(order[b, g.to(order.device)].cpu(), sl) for b, (g, sl) in enumerate(matches)]
        dev = mask_logits.device
        bi = torch.cat([torch.full((len(g),), b, dtype=torch.long) for b, (g, _) in enumerate(matches)]).to(dev)
        gi = torch.cat([g for g, _ in matches]).to(dev)
        sj = torch.cat([s for _, s in matches]).to(dev)
        zero = mask_logits.sum() * 0.0

        # ---- PQ-style mask (Dice) term --------------------------------------
        if bi.numel():
            dice = 2.0 * overlap[bi, sj, gi] / (gt_area[bi, gi] + pred_area[bi, sj] + DICE_EPS)
            w_dice = prob_all[bi, gi, sj].clamp(min=_WEIGHT_FLOOR)
            pq_dice = (self.alpha / N) * (w_dice * (1.0 - dice)).sum() / B
        else:
            pq_dice = zero

        # ---- PQ-style class term ------------------------------------------------
        slot_target = torch.zeros(B, N, dtype=torch.long, device=dev)  # void for unmatched slots
        slot_weight = torch.full((B, N), 1.0 - self.alpha, device=dev)
        if self.void_overlap_weighting == "official":
            with torch.no_grad():
                void_ratio = (probs * (1.0 - nv).unsqueeze(1)).sum(-1) / probs.sum(-1).clamp(min=DICE_EPS)
            slot_weight = slot_weight * void_ratio.clamp(min=_WEIGHT_FLOOR)
        if bi.numel():
            slot_target[bi, sj] = classes[bi, gi]
            slot_weight[bi, sj] = self.alpha * dice_all[bi, gi, sj].clamp(min=_WEIGHT_FLOOR)
        ce = -class_logp.gather(-1, slot_target.unsqueeze(-1)).squeeze(-1)  # (B, N)
        pq_class = (slot_weight.detach() * ce).sum() / (N * B)

        # ---- mask-ID cross-entropy against the matched permutation --------------
        has_gt = seg < K  # (B, P): non-void pixel inside a present segment
        gt_id = seg.clamp(max=K - 1)  # (B, P) index of the pixel's segment (any index where not has_gt)
        slot_of_gt = torch.full(classes.shape, -1, dtype=torch.long, device=dev)
        if bi.numel():
            slot_of_gt[bi, gi] = sj
        pix_slot = slot_of_gt.gather(1, gt_id)
        pix_slot = torch.where(has_gt, pix_slot, torch.full_like(pix_slot, -1))
        sel = pix_slot >= 0
        if sel.any():
            nll = -log_probs.gather(1, pix_slot.clamp(min=0).unsqueeze(1)).squeeze(1)  # (B, P)
            if self.mask_id_balance == "segment":  # every matched segment weighs the same
                w_pix = sel.float() / gt_area.gather(1, gt_id).clamp(min=1.0)
                mask_id = (nll * w_pix).sum() / w_pix.sum()
            else:
                mask_id = (nll * sel.float()).sum() / sel.sum()
        else:
            mask_id = zero

        # ---- instance discrimination on thing pixels ----------------------------
        feats = pred.get(PRED_PIXEL_FEATURES)
        if feats is None:
            instance = zero
        elif sampled:  # the unit pixel features at the same pixels, the segments as the points give them
            at = F.normalize(_at_points(feats, size, idx), dim=1)
            instance = self._instance_term(at, seg, present, is_thing, gt_area) + zero
        elif tuple(feats.shape[-2:]) == (h, w):  # at the output stride, with the targets there
            instance = self._instance_term(feats, seg, present, is_thing, gt_area) + zero
        else:  # "input" / "sampled": features stay at the output stride (cost), targets follow
            instance = self._instance_term_at(feats, target) + zero

        # ---- auxiliary semantic cross-entropy ------------------------------------
        sem_logits = pred.get(PRED_SEMANTIC_LOGITS)
        if sem_logits is not None:
            sem_t = tgt[GT_SEMANTIC].reshape(B, P).long()
            sl = sem_logits.float().reshape(B, sem_logits.shape[1], P)
            nll = -torch.log_softmax(sl, dim=1).gather(1, sem_t.clamp(0, sl.shape[1] - 1).unsqueeze(1)).squeeze(1)
            semantic = (nll * nv).sum() / nv.sum().clamp(min=1.0)
        else:
            semantic = zero

        detail = pred.get(PRED_DETAIL_FEATURES)
        if detail is None or self.weights["instance_detail"] == 0:
            instance_detail = zero
        else:
            instance_detail = self._instance_term_at(detail, target) + zero

        return {"pq_class": pq_class, "pq_dice": pq_dice, "instance": instance,
                "mask_id": mask_id, "semantic": semantic, "instance_detail": instance_detail}

    def _instance_term(self, feats: torch.Tensor, seg: torch.Tensor, present: torch.Tensor, is_thing: torch.Tensor,
                       gt_area: torch.Tensor) -> torch.Tensor:
        """Instance discrimination with targets flattened at the features' resolution.

        ``seg`` (B, P): each pixel's segment, ``K`` on none; ``present``, ``is_thing``, ``gt_area`` (B, K).
        Segment mean features are sums by segment index (``scatter_add``, O(B D P)), not a product with
        dense (B, K, P) masks.
        """
        B, D = feats.shape[:2]
        K = present.shape[1]
        P = seg.shape[-1]
        has_gt = seg < K
        gt_id = seg.clamp(max=K - 1)
        thing_pix = has_gt & is_thing.gather(1, gt_id)
        if not thing_pix.any():
            return feats.sum() * 0.0
        g = feats.float().reshape(B, D, P)  # (B, D, P)
        sums = g.new_zeros(B, D, K + 1).scatter_add(2, seg.unsqueeze(1).expand(B, D, P), g)
        mean_feat = F.normalize(sums[..., :K].transpose(1, 2) / gt_area.clamp(min=1.0).unsqueeze(-1), dim=-1)
        logits = torch.einsum("bdp,bkd->bkp", g, mean_feat) / self.temperature  # (B, K, P)
        logits = torch.where(present.unsqueeze(-1), logits, torch.full_like(logits, _MASKED_LOGIT))
        nll = -torch.log_softmax(logits, dim=1).gather(1, gt_id.unsqueeze(1)).squeeze(1)
        return (nll * thing_pix.float()).sum() / thing_pix.sum()

    def _instance_term_at(self, feats: torch.Tensor, target: dict) -> torch.Tensor:
        """Instance discrimination with the ground truth sampled down to the features' size."""
        _, _, seg, present, is_thing, area, _ = _compact_segments(
            *_flat_segments(downsample_targets(target, tuple(feats.shape[-2:]))))
        return self._instance_term(feats, seg, present, is_thing, area)

    def forward(self, pred: dict, target: dict) -> torch.Tensor:
        """Weighted sum of :meth:`terms`; the detached terms are kept in :attr:`last_terms`."""
        terms = self.terms(pred, target)
        total = torch.stack([self.weights[k] * v for k, v in terms.items()]).sum()
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        self.last_terms["total"] = float(total.detach())
        return total
