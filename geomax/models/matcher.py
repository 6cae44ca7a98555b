"""Hungarian matching between ground-truth segments and MaX-DeepLab mask slots.

The matcher follows deeplab2's MaX-DeepLab loss: the similarity of ground-truth
segment ``i`` and predicted slot ``j`` is the PQ-style

    ``sim[i, j] = p_j(c_i) * Dice(m_i, m_j)``

where ``p_j`` is the softmax over all ``C + 1`` class logits of slot ``j``
(void included in the normalisation) read at the ground-truth class ``c_i``
(always a non-void class, so the void probability is never a matchable
score), and ``m_j`` is slot ``j``'s slot-softmax mask restricted to non-void,
valid pixels. The one-to-one assignment maximising the summed similarity is
found with :func:`scipy.optimize.linear_sum_assignment` on ``-sim`` in
float32, without gradient.

Ground truth is compared at the network's output stride: see
:func:`downsample_targets`.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..common import (
    GT_CLASSES,
    GT_IS_THING,
    GT_MASKS,
    GT_SEGMENT_INDEX,
    GT_SEMANTIC,
    GT_VALID,
    PRED_CLASS_LOGITS,
    PRED_MASK_LOGITS,
)
from ..errors import ArgumentError

__all__ = ["HungarianMatcher", "downsample_targets", "pairwise_dice", "strided_indices", "TooManySegmentsWarning"]

#: Added to Dice denominators so that empty masks give 0, never NaN.
DICE_EPS = 1e-5


class TooManySegmentsWarning(UserWarning):
    """An image has more ground-truth segments than the network has mask slots."""


def strided_indices(in_size: int, out_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of the input pixels sampled for each output pixel (pixel-centre nearest).

    Output pixel ``i`` covers input pixels ``[i * s, (i + 1) * s)`` with ``s = in_size / out_size``;
    it takes the pixel at ``floor((i + 0.5) * s)``, the one nearest its centre (index ``4 i + 2`` at
    stride 4). This is deeplab2's strided down-sampling of labels, shifted to the pixel centre to
    match PyTorch's ``align_corners=False`` geometry.
    """
    scale = in_size / out_size
    idx = torch.floor((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale).long()
    return idx.clamp_(0, in_size - 1).to(device) if device is not None else idx.clamp_(0, in_size - 1)


def downsample_targets(target: dict, out_size: Sequence[int]) -> dict:
    """Bring a target dict from input resolution to the output stride by strided sampling.

    Labels are sampled (nearest, pixel centre; see :func:`strided_indices`) rather than
    average-pooled: masks stay binary and non-overlapping, as in deeplab2. A segment
    smaller than the stride can vanish (zero area at the output stride); every consumer
    treats zero-area segments as absent, so this never produces NaN.

    Parameters
    ----------
    target:
        Dict with ``GT_SEMANTIC`` (B, H, W), ``GT_MASKS`` (B, K, H, W), ``GT_CLASSES`` (B, K),
        optional ``GT_VALID`` (B, H, W) and ``GT_IS_THING`` (B, K).
    out_size:
        ``(h, w)`` of the network output.

    Returns
    -------
    dict
        The same keys at ``(h, w)``; ``GT_VALID`` is always present (all True when missing).
    """
    for key in (GT_SEMANTIC, GT_MASKS, GT_CLASSES):
        if key not in target:
            raise ArgumentError(f"The target dict has no '{key}' entry; it needs {GT_SEMANTIC!r}, {GT_MASKS!r}, "
                                f"{GT_CLASSES!r} (and optionally {GT_VALID!r}, {GT_IS_THING!r}) as built by "
                                "prepare_data. Pass the targets of a prepare_data batch.")
    sem = target[GT_SEMANTIC]
    masks = target[GT_MASKS]
    if sem.dim() != 3 or masks.dim() != 4 or masks.shape[-2:] != sem.shape[-2:] or masks.shape[0] != sem.shape[0]:
        raise ArgumentError(f"Target shapes do not agree: semantic {tuple(sem.shape)} must be (B, H, W) and masks "
                            f"{tuple(masks.shape)} must be (B, K, H, W) with the same B, H, W.")
    H, W = sem.shape[-2:]
    h, w = int(out_size[0]), int(out_size[1])
    valid = target.get(GT_VALID)
    if valid is None:
        valid = torch.ones_like(sem, dtype=torch.bool)
    out = dict(target)
    if (h, w) == (H, W):
        out[GT_VALID] = valid.bool()
        return out
    iy = strided_indices(H, h, sem.device)
    ix = strided_indices(W, w, sem.device)
    out[GT_SEMANTIC] = sem[:, iy][:, :, ix]
    out[GT_MASKS] = masks[:, :, iy][:, :, :, ix]
    out[GT_VALID] = valid[:, iy][:, :, ix].bool()
    if GT_SEGMENT_INDEX in target:
        out[GT_SEGMENT_INDEX] = target[GT_SEGMENT_INDEX][:, iy][:, :, ix]
    return out


def pairwise_dice(gt_masks: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Dice of every ground-truth mask with every predicted mask.

    Parameters
    ----------
    gt_masks:
        (B, K, P) float, 0/1 ground-truth masks (already restricted to non-void pixels).
    pred_masks:
        (B, N, P) float soft masks in [0, 1] (already restricted to non-void pixels).

    Returns
    -------
    torch.Tensor
        (B, K, N) Dice ``2 |g m| / (|g| + |m|)``; 0 where both are empty.
    """
    inter = torch.einsum("bkp,bnp->bkn", gt_masks, pred_masks)
    return dice_from_overlap(inter, gt_masks.sum(-1), pred_masks.sum(-1))


def dice_from_overlap(inter: torch.Tensor, gt_area: torch.Tensor, pred_area: torch.Tensor) -> torch.Tensor:
    """Dice ``2 |g m| / (|g| + |m|)`` from the overlaps (B, K, N) and the areas (B, K) and (B, N)."""
    return 2.0 * inter / (gt_area.unsqueeze(-1) + pred_area.unsqueeze(-2) + DICE_EPS)


class HungarianMatcher:
    """PQ-style Hungarian matcher (no gradient, float32).

    Parameters
    ----------
    max_segments_policy:
        What to do when an image has more present ground-truth segments than slots:
        ``"truncate"`` (default) keeps the assignment's best ``N`` segments (the
        rectangular Hungarian assignment leaves the least similar ones unmatched; they
        are then ignored by every loss term) and emits a :class:`TooManySegmentsWarning`;
        ``"raise"`` raises :class:`~geomax.errors.ArgumentError` naming the batch image.

    Notes
    -----
    ``__call__`` returns, per image, ``(gt_indices, slot_indices)``: int64 tensors of equal
    length, ``gt_indices`` indexing the K axis of the target's masks, ``slot_indices`` the N
    axis of the prediction. Padding entries (class 0) and segments with zero area at the
    output stride are never matched.
    """

    def __init__(self, max_segments_policy: str = "truncate") -> None:
        if max_segments_policy not in ("truncate", "raise"):
            raise ArgumentError(f"max_segments_policy must be 'truncate' or 'raise', got {max_segments_policy!r}.")
        self.max_segments_policy = max_segments_policy

    @torch.no_grad()
    def similarity(self, mask_probs: torch.Tensor, class_probs: torch.Tensor, gt_masks: torch.Tensor,
                   gt_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PQ-style similarity, its Dice factor and its class-probability factor.

        Parameters
        ----------
        mask_probs:
            (B, N, P) slot-softmax masks, already zero on void / no-data pixels.
        class_probs:
            (B, N, C + 1) softmax over all classes (index 0 void).
        gt_masks:
            (B, K, P) float 0/1 ground-truth masks at the output stride, zero on void.
        gt_classes:
            (B, K) int64 class index (0 = padding).

        Returns
        -------
        (sim, dice, prob):
            each (B, K, N) float32; ``sim = prob * dice``.
        """
        mask_probs = mask_probs.detach().float()
        gt_masks = gt_masks.detach().float()
        inter = torch.einsum("bkp,bnp->bkn", gt_masks, mask_probs)
        return self.similarity_from_overlap(inter, gt_masks.sum(-1), mask_probs.sum(-1), class_probs, gt_classes)

    @torch.no_grad()
    def similarity_from_overlap(self, inter: torch.Tensor, gt_area: torch.Tensor, pred_area: torch.Tensor,
                                class_probs: torch.Tensor, gt_classes: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`similarity` from the overlap of every segment with every slot, already summed.

        ``inter`` (B, K, N): sum over the valid pixels of segment k of slot n's mask
        probability; ``gt_area`` (B, K) and ``pred_area`` (B, N): the masks' sums. The loss
        gets them from the pixels' segment index in O(B N P) (``scatter_add``) instead of
        the O(B K N P) product of dense masks.
        """
        dice = dice_from_overlap(inter.detach().float(), gt_area.detach().float(), pred_area.detach().float())
        idx = gt_classes.clamp(min=0).long().unsqueeze(1).expand(-1, class_probs.shape[1], -1)  # (B, N, K)
        prob = torch.gather(class_probs.detach().float(), 2, idx).transpose(1, 2)  # (B, K, N)
        return prob * dice, dice, prob

    @torch.no_grad()
    def assign(self, sim: torch.Tensor, present: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian assignment on ``-sim`` for the present segments of each image.

        Parameters
        ----------
        sim:
            (B, K, N) similarity.
        present:
            (B, K) bool, segments that take part (non-padding, non-zero area).
        """
        sim_np = sim.detach().float().cpu().numpy().astype(np.float32)
        present_np = present.detach().cpu().numpy().astype(bool)
        n_slots = sim_np.shape[2]
        out = []
        for b in range(sim_np.shape[0]):
            rows = np.flatnonzero(present_np[b])
            if rows.size == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty.clone()))
                continue
            if rows.size > n_slots:
                msg = (f"Image {b} of the batch has {rows.size} ground-truth segments but the network has only "
                       f"{n_slots} mask slots")
                if self.max_segments_policy == "raise":
                    raise ArgumentError(msg + ". Use a model with more slots (num_slots), smaller chips, or "
                                        "max_segments_policy='truncate'.")
                warnings.warn(msg + f"; the {rows.size - n_slots} least similar segments are left unmatched "
                              "and ignored by the loss.", TooManySegmentsWarning, stacklevel=3)
            r, c = linear_sum_assignment(-sim_np[b][rows])
            out.append((torch.as_tensor(rows[r], dtype=torch.long), torch.as_tensor(c, dtype=torch.long)))
        return out

    @torch.no_grad()
    def __call__(self, pred: dict, target: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match the raw network output dict with a target dict at input resolution.

        Parameters
        ----------
        pred:
            Network output with ``PRED_MASK_LOGITS`` (B, N, h, w) and ``PRED_CLASS_LOGITS`` (B, N, C + 1).
        target:
            Target dict (see :func:`downsample_targets`), at input resolution or already at (h, w).

        Returns
        -------
        list of (gt_indices, slot_indices), one pair of int64 tensors per image.
        """
        mask_logits = pred[PRED_MASK_LOGITS]
        B, N, h, w = mask_logits.shape
        tgt = downsample_targets(target, (h, w))
        non_void = (tgt[GT_VALID] & (tgt[GT_SEMANTIC] > 0)).reshape(B, 1, h * w).float()
        probs = torch.softmax(mask_logits.detach().float().reshape(B, N, h * w), dim=1) * non_void
        gt = tgt[GT_MASKS].reshape(B, -1, h * w).float() * non_void
        classes = tgt[GT_CLASSES].long()
        class_probs = torch.softmax(pred[PRED_CLASS_LOGITS].detach().float(), dim=-1)
        sim, _, _ = self.similarity(probs, class_probs, gt, classes)
        present = (classes > 0) & (gt.sum(-1) > 0)
        return self.assign(sim, present)
