"""Panoptic inference: raw MaX-DeepLab outputs -> :class:`~geomax.panoptic.PanopticResult`.

Follows deeplab2's MaX-DeepLab post-processor:

1. class probabilities = softmax over the ``C + 1`` class logits of each slot; a slot is
   kept when its best *non-void* class probability is ``>= class_threshold``;
2. the kept slots' mask logits are resized (bilinear) to the output size, then a softmax
   is taken over the kept slots only; each pixel goes to its most probable slot, and
   becomes void when that probability is ``< mask_threshold`` or when its most
   probable slot among *all* slots was not kept (deeplab2's rule: the pixels of a
   dropped slot are not handed to a neighbouring kept slot);
3. no-data pixels (``valid`` False) become void;
4. all stuff slots of one class form one segment; thing slots are instances;
5. geomax's addition (``split_disconnected_things``, on by default): a thing slot whose
   pixels fall in several separate (4-connected) regions becomes one instance per region
   of at least ``min_thing_area`` pixels and at least ``split_min_fraction`` of the
   slot's largest region; smaller fragments (a sliver cut off a roof) stay with the
   largest region. Slots are few and alike for identical small objects (a queue of
   cars, a row of tree crowns), so one slot often claims several objects that its own
   mask keeps apart; seen from above an object is one connected region. Off, a slot is one
   instance whatever its shape (deeplab2's behaviour);
6. thing instances below ``min_thing_area`` pixels and stuff segments below
   ``min_stuff_area`` pixels (after merging) become void;
7. ``confidence`` = class probability x mask probability of the winning slot (0 on void);
   a segment's ``score`` is the mean confidence over its pixels.

Segment ids: stuff segments first (by class order), then thing segments by decreasing
score; thing instance ids ``1..k`` follow the same order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..common import OUTPUT_STRIDE, PRED_CLASS_LOGITS, PRED_MASK_LOGITS
from ..config import PostprocessConfig
from ..data.classes import ClassTable
from ..errors import ArgumentError
from ..panoptic import SEGMENT_COLUMNS, PanopticResult

__all__ = ["PanopticPostProcessor"]

_FOUR = ndimage.generate_binary_structure(2, 1)


def _empty_result(shape: tuple[int, int]) -> PanopticResult:
    z = np.zeros(shape, dtype=np.int32)
    return PanopticResult(z, z.copy(), z.copy(), np.zeros(shape, dtype=np.float32),
                          pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
                              SEGMENT_COLUMNS, ["int64", "int64", "object", "bool", "float64", "int64"])}))


class PanopticPostProcessor:
    """Turn mask and class logits into panoptic results.

    Parameters
    ----------
    class_table:
        The model's :class:`~geomax.data.classes.ClassTable` (index i -> class Value).
    config:
        A :class:`~geomax.config.PostprocessConfig` (``class_threshold``,
        ``mask_threshold``, ``min_thing_area``, ``min_stuff_area``,
        ``split_disconnected_things``, ``split_min_fraction``; its docstring gives each
        and the defaults); ``None``: the defaults. Areas are in output pixels.
    **options:
        Settings of :class:`~geomax.config.PostprocessConfig` overriding ``config``.
    """

    def __init__(self, class_table: ClassTable, config: PostprocessConfig | None = None, **options) -> None:
        if not isinstance(class_table, ClassTable):
            raise ArgumentError(f"class_table must be a geomax ClassTable, got {type(class_table).__name__}.")
        cfg = PostprocessConfig.build(config, **options)
        self.config = cfg
        self.class_table = class_table
        self.class_threshold = float(cfg.class_threshold)
        self.mask_threshold = float(cfg.mask_threshold)
        self.min_thing_area = int(cfg.min_thing_area)
        self.min_stuff_area = int(cfg.min_stuff_area)
        self.split_disconnected_things = bool(cfg.split_disconnected_things)
        self.split_min_fraction = float(cfg.split_min_fraction)
        self._values = class_table.value_lut()
        self._is_thing = class_table.is_thing_index()
        self._names = np.array([""] + class_table.names, dtype=object)

    def __call__(self, pred: dict, out_size: Sequence[int] | None = None,
                 valid: torch.Tensor | np.ndarray | None = None) -> list[PanopticResult]:
        """Post-process a batch.

        Parameters
        ----------
        pred:
            Network output dict with ``PRED_MASK_LOGITS`` (B, N, h, w) and ``PRED_CLASS_LOGITS``
            (B, N, C + 1).
        out_size:
            ``(H, W)`` of the results; default: the shape of ``valid`` when given, else
            ``(h, w) * OUTPUT_STRIDE`` (4; pass ``out_size`` for a network with another
            output stride).
        valid:
            Optional (B, H, W) bool, False on no-data pixels (which become void).

        Returns
        -------
        list[PanopticResult]
            One result per image.
        """
        for key in (PRED_MASK_LOGITS, PRED_CLASS_LOGITS):
            if key not in pred:
                raise ArgumentError(f"The prediction dict has no '{key}' entry; pass the network's output dict.")
        mask_logits, class_logits = pred[PRED_MASK_LOGITS], pred[PRED_CLASS_LOGITS]
        if mask_logits.dim() != 4 or class_logits.dim() != 3:
            raise ArgumentError(f"Expected batched outputs: mask logits (B, N, h, w), class logits (B, N, C + 1); got "
                                f"{tuple(mask_logits.shape)} and {tuple(class_logits.shape)}. Use process_one for one image.")
        if valid is not None and len(valid) != mask_logits.shape[0]:
            raise ArgumentError(f"valid has {len(valid)} images but the prediction has {mask_logits.shape[0]}. "
                                "Pass one valid mask per image of the batch (or valid=None).")
        return [self.process_one(mask_logits[b], class_logits[b], out_size,
                                 None if valid is None else valid[b]) for b in range(mask_logits.shape[0])]

    @torch.no_grad()
    def process_one(self, mask_logits: torch.Tensor, class_logits: torch.Tensor,
                    out_size: Sequence[int] | None = None,
                    valid: torch.Tensor | np.ndarray | None = None) -> PanopticResult:
        """Post-process one image: mask logits (N, h, w), class logits (N, C + 1); see :meth:`__call__`."""
        if mask_logits.dim() != 3 or class_logits.dim() != 2 or mask_logits.shape[0] != class_logits.shape[0]:
            raise ArgumentError(f"process_one needs mask logits (N, h, w) and class logits (N, C + 1) with the same N; "
                                f"got {tuple(mask_logits.shape)} and {tuple(class_logits.shape)}. Pass one image's "
                                "outputs (index the batch), or call the post-processor on the batch.")
        n_cls = len(self.class_table) + 1
        if class_logits.shape[-1] != n_cls:
            raise ArgumentError(f"Class logits have {class_logits.shape[-1]} entries but the class table has "
                                f"{n_cls - 1} classes (+1 void). Use the class table the model was trained with.")
        if out_size is None:
            out_size = tuple(valid.shape[-2:]) if valid is not None else (
                mask_logits.shape[-2] * OUTPUT_STRIDE, mask_logits.shape[-1] * OUTPUT_STRIDE)
        H, W = int(out_size[0]), int(out_size[1])
        if valid is not None:
            valid = torch.as_tensor(np.asarray(valid.cpu() if torch.is_tensor(valid) else valid)).bool()
            if tuple(valid.shape) != (H, W):
                raise ArgumentError(f"valid has shape {tuple(valid.shape)} but the output size is {(H, W)}. Pass a "
                                    "valid mask of the output size, or set out_size to its shape.")

        class_probs = torch.softmax(class_logits.float(), dim=-1)
        best_prob, best_cls = class_probs[:, 1:].max(dim=-1)
        best_cls = best_cls + 1
        keep = torch.nonzero(best_prob >= self.class_threshold).flatten()
        if keep.numel() == 0:
            return _empty_result((H, W))
        logits = mask_logits.float().unsqueeze(0)
        if tuple(logits.shape[-2:]) != (H, W):
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        logits = logits[0]
        kept_logits = logits[keep]
        # deeplab2: a pixel whose best slot (over all slots) was dropped stays void; it is
        # not handed to the next kept slot (that would merge a dropped car into its neighbour).
        survives = kept_logits.max(dim=0).values >= logits.max(dim=0).values
        mask_probs = torch.softmax(kept_logits, dim=0)  # softmax over the kept slots only
        win_prob_t, win_t = mask_probs.max(dim=0)
        win_prob, win = win_prob_t.cpu().numpy(), win_t.cpu().numpy()
        slot_cls = best_cls[keep].cpu().numpy()
        slot_prob = best_prob[keep].cpu().numpy()

        live = (win_prob >= self.mask_threshold) & survives.cpu().numpy()
        if valid is not None:
            live &= valid.cpu().numpy()
        pix_cls = np.where(live, slot_cls[win], 0)
        conf = np.where(live, slot_prob[win] * win_prob, 0.0).astype(np.float32)

        # Provisional segment per pixel: stuff -> its class index, thing -> n_cls + slot position.
        thing_pix = self._is_thing[pix_cls]
        prov = np.where(thing_pix, n_cls + win, pix_cls)
        prov[~live] = 0
        thing_cls = slot_cls
        if self.split_disconnected_things:
            prov, thing_cls = self._split_things(prov, n_cls, slot_cls)
        n_prov = n_cls + len(thing_cls)
        area = np.bincount(prov.ravel(), minlength=n_prov)
        conf_sum = np.bincount(prov.ravel(), weights=conf.ravel(), minlength=n_prov)
        prov_cls = np.concatenate([np.arange(n_cls), thing_cls])
        prov_thing = self._is_thing[prov_cls]
        min_area = np.where(prov_thing, self.min_thing_area, self.min_stuff_area)
        ok = (area > 0) & (area >= min_area)
        ok[0] = False
        stuff_ids = [p for p in range(n_cls) if ok[p]]
        thing_ids = [p for p in range(n_cls, n_prov) if ok[p]]
        score = conf_sum / np.maximum(area, 1)
        thing_ids.sort(key=lambda p: -score[p])
        order = stuff_ids + thing_ids
        seg_of_prov = np.zeros(n_prov, dtype=np.int32)
        seg_of_prov[order] = np.arange(1, len(order) + 1, dtype=np.int32)
        inst_of_prov = np.zeros(n_prov, dtype=np.int32)
        inst_of_prov[thing_ids] = np.arange(1, len(thing_ids) + 1, dtype=np.int32)

        segment_map = seg_of_prov[prov]
        dropped = segment_map == 0
        class_map = self._values[pix_cls].astype(np.int32)
        class_map[dropped] = 0
        conf[dropped] = 0.0
        instance_map = inst_of_prov[prov]
        segments = pd.DataFrame({
            "id": np.arange(1, len(order) + 1, dtype=np.int64),
            "class_value": self._values[prov_cls[order]].astype(np.int64),
            "class_name": self._names[prov_cls[order]],
            "is_thing": prov_thing[order].astype(bool),
            "score": score[order].astype(np.float64),
            "area": area[order].astype(np.int64),
        }, columns=SEGMENT_COLUMNS)
        return PanopticResult(class_map, instance_map.astype(np.int32), segment_map.astype(np.int32), conf, segments)

    def _split_things(self, prov: np.ndarray, n_cls: int, slot_cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step 5: renumber thing pixels (``prov >= n_cls``) one provisional id per region.

        Returns the new provisional map and the class index of each new thing id
        (``n_cls + j`` -> ``classes[j]``).
        """
        slot_map = np.where(prov >= n_cls, prov - n_cls + 1, 0)  # 1-based kept-slot position, 0 elsewhere
        out = prov.copy()
        classes: list[int] = []
        for k, box in enumerate(ndimage.find_objects(slot_map), start=1):
            if box is None:
                continue
            mine = slot_map[box] == k
            regions, n = ndimage.label(mine, structure=_FOUR)
            first = n_cls + len(classes)
            sizes = np.bincount(regions[mine], minlength=n + 1)
            sizes[0] = 0
            big = np.flatnonzero((sizes >= max(self.min_thing_area, 1))
                                 & (sizes >= self.split_min_fraction * sizes.max()))
            lut = np.full(n + 1, first, dtype=out.dtype)  # fragments (and all, when < 2 big) -> the first id
            n_parts = int(big.size) if big.size >= 2 else 1
            if n_parts > 1:
                big = big[np.argsort(-sizes[big], kind="stable")]  # largest region first: fragments join it
                lut[big] = first + np.arange(n_parts)
            out[box][mine] = lut[regions[mine]]
            classes.extend([int(slot_cls[k - 1])] * n_parts)
        return out, np.asarray(classes, dtype=slot_cls.dtype)
