"""The fastai panoptic-quality metric, computed by the real evaluator on every validation batch."""
from __future__ import annotations

from fastai.learner import Metric

from ..common import GT_VALID
from ..data.classes import ClassTable
from .postprocess import PanopticPostProcessor

__all__ = ["PanopticQualityMetric", "PanopticQualityPart", "update_evaluator"]


def update_evaluator(evaluator, postprocessor, pred: dict, target: dict, class_table: ClassTable,
                     ap_evaluator=None) -> list:
    """Post-process one batch of raw outputs and add it, with its ground truth, to ``evaluator``
    (and to ``ap_evaluator``, a :class:`~geomax.metrics.MaskAPEvaluator`, when given)."""
    from ..data.prepare import panoptic_from_target

    valid = target[GT_VALID]
    results = postprocessor(pred, out_size=tuple(valid.shape[-2:]), valid=valid)
    for i, result in enumerate(results):
        gt_class, gt_instance = panoptic_from_target(target, i, class_table)
        evaluator.update(result.class_map, result.instance_map, gt_class, gt_instance)
        if ap_evaluator is not None:
            ap_evaluator.update(result, gt_class, gt_instance)
    return results


class PanopticQualityMetric(Metric):
    """Panoptic quality of the validation set (accumulated over every batch, read once at the end).

    Its ``evaluator`` keeps the full result (all / things / stuff / per class) after a
    validation pass.

    Parameters
    ----------
    postprocessor:
        Turns raw outputs into panoptic results (the model's).
    class_table:
        The model's classes.
    key:
        ``"all"``, ``"things"`` or ``"stuff"``: which PQ the metric reports.
    """

    def __init__(self, postprocessor: PanopticPostProcessor, class_table: ClassTable, key: str = "all"):
        self.postprocessor, self.class_table, self.key = postprocessor, class_table, key
        self.reset()

    def reset(self):
        from ..metrics import PanopticEvaluator

        self.evaluator = PanopticEvaluator(self.class_table)

    def accumulate(self, learn):
        pred = {k: v.detach().float() for k, v in learn.pred.items()}
        update_evaluator(self.evaluator, self.postprocessor, pred, learn.yb[0], self.class_table)

    @property
    def value(self):
        return float(self.evaluator.compute()[self.key]["pq"])

    @property
    def name(self):
        return "panoptic_quality" if self.key == "all" else f"pq_{self.key}"


class PanopticQualityPart(Metric):
    """PQ of the things or of the stuff, read from a :class:`PanopticQualityMetric`'s evaluator.

    It accumulates nothing itself: list it after ``main`` in the learner's metrics, so the
    per-epoch line shows PQ things and stuff without post-processing every batch twice.
    """

    def __init__(self, main: PanopticQualityMetric, key: str):
        if key not in ("things", "stuff"):
            raise ValueError(f"key must be 'things' or 'stuff', got {key!r}")
        self.main, self.key = main, key

    def reset(self):
        pass

    def accumulate(self, learn):
        pass

    @property
    def value(self):
        return float(self.main.evaluator.compute()[self.key]["pq"])

    @property
    def name(self):
        return f"pq_{self.key}"
