"""Panoptic quality (as panopticapi defines it) and mask AP for thing classes.

:class:`PanopticEvaluator` follows ``panopticapi/evaluation.py`` (Kirillov et al.,
*Panoptic Segmentation*, CVPR 2019):

* a segment is ``(class, instance)`` for thing classes and the class alone for stuff;
  class Value 0 is void. Ground-truth void pixels are ignored;
* a predicted and a ground-truth segment of the same class match when
  ``IoU > 0.5``, the union leaving out the predicted pixels on ground-truth void;
* an unmatched predicted segment lying more than half on ground-truth void is not
  a false positive;
* TP, FP, FN and the IoU sum are accumulated per class over all images;
  ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
* classes without TP, FP or FN are left out of the averages (``n`` counts the others).

Each ``update`` is one bincount over the image's pixels (no per-pixel Python work),
and only per-class counters are kept, so any number of images or raster tiles can be
streamed through; evaluators of different workers combine with :meth:`merge`.

:class:`MaskAPEvaluator` runs pycocotools' COCO ``segm`` evaluation on the thing
segments and their scores.
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd

from .data.classes import ClassTable
from .errors import ArgumentError
from .panoptic import PanopticResult

__all__ = ["PanopticEvaluator", "MaskAPEvaluator"]


def _as_int_map(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ArgumentError(f"{name} must be a 2-D (H, W) array, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ArgumentError(f"{name} must hold integer class Values / instance ids, got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


class PanopticEvaluator:
    """Streaming panoptic-quality evaluator.

    Parameters
    ----------
    class_table:
        The :class:`~geomax.data.classes.ClassTable` giving class Values, names and thing / stuff.

    Examples
    --------
    >>> ev = PanopticEvaluator(table)
    >>> for result, gt_cls, gt_inst in pairs:
    ...     ev.update(result.class_map, result.instance_map, gt_cls, gt_inst)
    >>> ev.compute()["all"]["pq"]
    """

    def __init__(self, class_table: ClassTable) -> None:
        if not isinstance(class_table, ClassTable):
            raise ArgumentError(f"class_table must be a geomax ClassTable, got {type(class_table).__name__}.")
        self.class_table = class_table
        self._index_lut = class_table.index_lut()
        self._is_thing = class_table.is_thing_index()
        self.reset()

    def reset(self) -> None:
        """Clear the accumulated counts."""
        n = len(self.class_table) + 1
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.iou = np.zeros(n, dtype=np.float64)
        self.n_images = 0
        self.n_pixels = 0

    def _indices(self, class_map: np.ndarray, name: str) -> np.ndarray:
        """Class Values -> model indices (0 void); unknown Values raise."""
        if class_map.size and (class_map.min() < 0 or class_map.max() >= len(self._index_lut)):
            bad = np.unique(class_map[(class_map < 0) | (class_map >= len(self._index_lut))])[:5]
            raise ArgumentError(f"{name} holds class Values {bad.tolist()} that are not in the class table "
                                f"(Values {self.class_table.values}, 0 = void).")
        idx = self._index_lut[class_map]
        if (idx < 0).any():
            bad = np.unique(class_map[idx < 0])[:5]
            raise ArgumentError(f"{name} holds class Values {bad.tolist()} that are not in the class table "
                                f"(Values {self.class_table.values}, 0 = void).")
        return idx

    @staticmethod
    def _segment_ids(cls_idx: np.ndarray, inst: np.ndarray, is_thing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense segment labels (0 = void) and the class index of each label."""
        inst = np.where(is_thing[cls_idx], inst, 0)
        inst = inst - inst.min() if inst.size and inst.min() < 0 else inst
        key = cls_idx * (int(inst.max()) + 1 if inst.size else 1) + inst
        key[cls_idx == 0] = 0
        top = int(key.max()) if key.size else 0
        if top <= 4 * key.size + 1024:  # compact ids in O(pixels) with a bincount
            present = np.bincount(key.ravel(), minlength=top + 1) > 0
            present[0] = True  # label 0 stays void even when no void pixel exists
            uniq = np.flatnonzero(present)
            remap = np.cumsum(present) - 1
            dense = remap[key]
        else:  # sparse instance ids: fall back to sorting
            uniq, dense = np.unique(key.ravel(), return_inverse=True)
            if uniq.size == 0 or uniq[0] != 0:
                uniq = np.concatenate([[0], uniq])
                dense = dense + 1
        seg_cls = uniq // (int(inst.max()) + 1 if inst.size else 1)
        return dense.reshape(cls_idx.shape), seg_cls

    def update(self, pred_class_map, pred_instance_map, gt_class_map, gt_instance_map) -> None:
        """Add one image (or raster tile).

        Parameters
        ----------
        pred_class_map, pred_instance_map:
            (H, W) predicted class Values (0 = void) and instance ids (ignored for stuff classes).
        gt_class_map, gt_instance_map:
            (H, W) ground-truth class Values (0 = void: ignored region) and instance ids.
        """
        pc, pi = _as_int_map(pred_class_map, "pred_class_map"), _as_int_map(pred_instance_map, "pred_instance_map")
        gc, gi = _as_int_map(gt_class_map, "gt_class_map"), _as_int_map(gt_instance_map, "gt_instance_map")
        if not (pc.shape == pi.shape == gc.shape == gi.shape):
            raise ArgumentError(f"All four maps must have the same shape; got pred {pc.shape}/{pi.shape}, "
                                f"gt {gc.shape}/{gi.shape}. Pass the prediction and ground truth of the same image "
                                "window (crop or resample them to one grid).")
        p_seg, p_cls = self._segment_ids(self._indices(pc, "pred_class_map"), pi, self._is_thing)
        g_seg, g_cls = self._segment_ids(self._indices(gc, "gt_class_map"), gi, self._is_thing)
        n_p, n_g = len(p_cls), len(g_cls)
        # One bincount gives the whole gt x pred intersection table (row / column 0 = void).
        inter = np.bincount((g_seg.ravel() * n_p + p_seg.ravel()), minlength=n_g * n_p).reshape(n_g, n_p)
        g_area = inter.sum(1)
        p_area = inter.sum(0)
        pred_on_void = inter[0]  # predicted pixels on gt void, per pred segment
        g_ids, p_ids = np.nonzero(inter[1:, 1:])
        g_ids, p_ids = g_ids + 1, p_ids + 1
        same = g_cls[g_ids] == p_cls[p_ids]
        g_ids, p_ids = g_ids[same], p_ids[same]
        i = inter[g_ids, p_ids]
        union = p_area[p_ids] + g_area[g_ids] - i - pred_on_void[p_ids]
        iou = i / np.maximum(union, 1)
        m = iou > 0.5
        g_match, p_match, iou = g_ids[m], p_ids[m], iou[m]
        np.add.at(self.tp, g_cls[g_match], 1)
        np.add.at(self.iou, g_cls[g_match], iou)
        g_un = np.ones(n_g, dtype=bool)
        g_un[0] = False
        g_un[g_match] = False
        np.add.at(self.fn, g_cls[g_un], 1)
        p_un = np.ones(n_p, dtype=bool)
        p_un[0] = False
        p_un[p_match] = False
        p_un &= ~(pred_on_void / np.maximum(p_area, 1) > 0.5)
        np.add.at(self.fp, p_cls[p_un], 1)
        self.n_images += 1
        self.n_pixels += pc.size

    def update_result(self, result: PanopticResult, gt_class_map, gt_instance_map) -> None:
        """Convenience: :meth:`update` with a :class:`~geomax.panoptic.PanopticResult` as prediction."""
        self.update(result.class_map, result.instance_map, gt_class_map, gt_instance_map)

    def merge(self, other: "PanopticEvaluator") -> "PanopticEvaluator":
        """Add another evaluator's counts (same class table) into this one; returns self."""
        if other.class_table.to_dict() != self.class_table.to_dict():
            raise ArgumentError("Cannot merge panoptic evaluators built with different class tables. Build every "
                                "evaluator with the same class table (use the model's).")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        self.n_images += other.n_images
        self.n_pixels += other.n_pixels
        return self

    def _average(self, idx: list[int]) -> dict:
        pq = sq = rq = 0.0
        n = 0
        for c in idx:
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            if tp + fp + fn == 0:
                continue
            n += 1
            denom = tp + 0.5 * fp + 0.5 * fn
            pq += self.iou[c] / denom
            sq += self.iou[c] / tp if tp else 0.0
            rq += tp / denom
        if n == 0:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
        return {"pq": float(pq / n), "sq": float(sq / n), "rq": float(rq / n), "n": n}

    def compute(self) -> dict:
        """Panoptic quality over everything seen so far.

        Returns
        -------
        dict
            ``{"all" | "things" | "stuff": {"pq", "sq", "rq", "n"}, "per_class": {name: {"pq", "sq", "rq",
            "tp", "fp", "fn"}}}``. Values are fractions in [0, 1]; a group with no counted class
            (``n == 0``) and a class without TP, FP or FN have NaN scores.
        """
        idx = list(range(1, len(self.class_table) + 1))
        things = [i for i in idx if self._is_thing[i]]
        stuff = [i for i in idx if not self._is_thing[i]]
        per_class = {}
        for i in idx:
            tp, fp, fn = int(self.tp[i]), int(self.fp[i]), int(self.fn[i])
            denom = tp + 0.5 * fp + 0.5 * fn
            if denom == 0:
                pq = sq = rq = math.nan
            else:
                pq, rq = float(self.iou[i] / denom), float(tp / denom)
                sq = float(self.iou[i] / tp) if tp else 0.0
            per_class[self.class_table.info(i).name] = {"pq": pq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
        return {"all": self._average(idx), "things": self._average(things), "stuff": self._average(stuff),
                "per_class": per_class}

    def summary_table(self) -> pd.DataFrame:
        """PQ / SQ / RQ (in percent) per class and for all / things / stuff, as a DataFrame."""
        res = self.compute()
        rows = []
        for name, d in res["per_class"].items():
            info = self.class_table.info(self.class_table.index_of_name(name))
            rows.append({"class": name, "value": info.value, "kind": "thing" if info.is_thing else "stuff",
                         "pq": 100 * d["pq"], "sq": 100 * d["sq"], "rq": 100 * d["rq"],
                         "tp": d["tp"], "fp": d["fp"], "fn": d["fn"], "n": np.nan})
        for group in ("all", "things", "stuff"):
            d = res[group]
            rows.append({"class": group, "value": np.nan, "kind": "summary", "pq": 100 * d["pq"], "sq": 100 * d["sq"],
                         "rq": 100 * d["rq"], "tp": np.nan, "fp": np.nan, "fn": np.nan, "n": d["n"]})
        return pd.DataFrame(rows).set_index("class")


class MaskAPEvaluator:
    """COCO mask AP (pycocotools ``segm``) of the thing classes.

    Each thing segment of a prediction is a detection with its segment score; ground
    truth instances are the thing segments of the ground-truth maps. Ground-truth void
    (class Value 0) is given to COCOeval as a crowd region of every thing class, so a
    detection lying mostly on void is ignored rather than counted as a false positive
    (the same rule as panoptic quality). Masks are stored RLE-compressed, so many
    images can be streamed.

    Parameters
    ----------
    class_table:
        The class table; only its thing classes are evaluated.
    max_dets:
        Detections per image considered by COCOeval (default 100, COCO's value).
    """

    def __init__(self, class_table: ClassTable, max_dets: int = 100) -> None:
        if not isinstance(class_table, ClassTable):
            raise ArgumentError(f"class_table must be a geomax ClassTable, got {type(class_table).__name__}.")
        if max_dets < 1:
            raise ArgumentError(f"max_dets must be >= 1, got {max_dets}.")
        self.class_table = class_table
        self.max_dets = int(max_dets)
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self._images: list[dict] = []
        self._gts: list[dict] = []
        self._dts: list[dict] = []

    def update(self, pred_result: PanopticResult, gt_class_map, gt_instance_map) -> None:
        """Add one image: a :class:`~geomax.panoptic.PanopticResult` and the ground-truth maps (Values)."""
        seg_map = _as_int_map(pred_result.segment_map, "pred_result.segment_map")
        segs = pred_result.segments
        things = segs[segs["is_thing"].astype(bool)] if len(segs) else segs
        self.update_instances(
            [seg_map == int(s) for s in things["id"]] if len(things) else [],
            things["score"].to_numpy(dtype=float) if len(things) else np.zeros(0),
            things["class_value"].to_numpy(dtype=np.int64) if len(things) else np.zeros(0, dtype=np.int64),
            gt_class_map, gt_instance_map, shape=seg_map.shape)

    def update_instances(self, pred_masks, pred_scores, pred_class_values, gt_class_map, gt_instance_map,
                         shape: tuple[int, int] | None = None) -> None:
        """Add one image given as predicted instance masks, scores and class Values plus ground-truth maps."""
        from pycocotools import mask as mask_utils

        gc, gi = _as_int_map(gt_class_map, "gt_class_map"), _as_int_map(gt_instance_map, "gt_instance_map")
        if gc.shape != gi.shape or (shape is not None and tuple(shape) != gc.shape):
            raise ArgumentError(f"Prediction and ground-truth maps differ in shape: {shape}, {gc.shape}, {gi.shape}. "
                                "Pass the prediction and ground truth of the same image window.")
        if len(pred_masks) != len(pred_scores) or len(pred_masks) != len(pred_class_values):
            raise ArgumentError("pred_masks, pred_scores and pred_class_values must have the same length. Give one "
                                "score and one class Value per predicted mask.")
        img_id = len(self._images) + 1
        self._images.append({"id": img_id, "height": gc.shape[0], "width": gc.shape[1]})
        thing_values = set(self.class_table.thing_values)

        def rle(m: np.ndarray) -> dict:
            return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))

        for v in np.unique(gc):
            if int(v) not in thing_values:
                continue
            cls_pix = gc == v
            for inst in np.unique(gi[cls_pix]):
                m = cls_pix & (gi == inst)
                self._gts.append({"id": len(self._gts) + 1, "image_id": img_id, "category_id": int(v),
                                  "segmentation": rle(m), "area": float(m.sum()), "iscrowd": 0})
        void = gc == 0
        if void.any():
            r = rle(void)
            for v in thing_values:
                self._gts.append({"id": len(self._gts) + 1, "image_id": img_id, "category_id": int(v),
                                  "segmentation": r, "area": float(void.sum()), "iscrowd": 1})
        for m, s, v in zip(pred_masks, pred_scores, pred_class_values):
            if int(v) not in thing_values:
                continue
            m = np.asarray(m, dtype=bool)
            if m.shape != gc.shape:
                raise ArgumentError(f"A predicted mask has shape {m.shape}, the ground truth {gc.shape}. Pass masks "
                                    "of the ground truth's size (crop any padding off).")
            if not m.any():
                continue
            self._dts.append({"id": len(self._dts) + 1, "image_id": img_id, "category_id": int(v),
                              "segmentation": rle(m), "area": float(m.sum()), "score": float(s)})

    def compute(self) -> dict:
        """Mask AP over all images added so far.

        Returns
        -------
        dict
            ``{"mAP", "AP50", "AP75", "per_class": {name: AP}}`` as fractions; NaN where no
            ground-truth instance exists (COCO's -1).
        """
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        things = [c for c in self.class_table if c.is_thing]
        nan = {"mAP": math.nan, "AP50": math.nan, "AP75": math.nan, "per_class": {c.name: math.nan for c in things}}
        if not things or not self._images or not any(g["iscrowd"] == 0 for g in self._gts):
            return nan
        gt = COCO()
        gt.dataset = {"images": self._images, "annotations": self._gts,
                      "categories": [{"id": c.value, "name": c.name} for c in things]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes(self._dts) if self._dts else COCO()
            if not self._dts:
                dt.dataset = {"images": self._images, "annotations": [], "categories": gt.dataset["categories"]}
                dt.createIndex()
            ev = COCOeval(gt, dt, iouType="segm")
            ev.params.maxDets = [1, 10, self.max_dets]
            ev.evaluate()
            ev.accumulate()
        prec = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", max_dets

        def mean(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(p.mean()) if p.size else math.nan

        per_class = {}
        for k, cat in enumerate(ev.params.catIds):
            per_class[self.class_table.by_value(cat).name] = mean(prec[:, :, k])
        return {"mAP": mean(prec), "AP50": mean(prec[0]), "AP75": mean(prec[5]), "per_class": per_class}
