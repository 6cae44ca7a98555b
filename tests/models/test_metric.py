"""Tests of geomax.models.metric: the fastai PQ metric runs the real post-processor and evaluator."""
from types import SimpleNamespace

import pytest
import torch

from geomax.common import GT_CLASSES, GT_MASKS, PRED_CLASS_LOGITS, PRED_MASK_LOGITS
from geomax.metrics import PanopticEvaluator
from geomax.models.metric import PanopticQualityMetric, update_evaluator
from geomax.models.postprocess import PanopticPostProcessor


def _logits_from_target(target, n_classes, scale=10.0):
    """Network outputs that say what the target says: one slot per target mask, padding slots void."""
    masks = target[GT_MASKS].float()
    classes = torch.nn.functional.one_hot(target[GT_CLASSES], n_classes + 1).float()
    return {PRED_MASK_LOGITS: scale * (2 * masks - 1), PRED_CLASS_LOGITS: scale * (2 * classes - 1)}


@pytest.fixture(scope="module")
def batch(synthetic_data):
    return next(iter(synthetic_data.train.new(shuffle=False)))


def test_outputs_that_match_the_targets_score_pq_one(batch, synthetic_data):
    _, target = batch
    table = synthetic_data.class_table
    post = PanopticPostProcessor(table, min_thing_area=0, min_stuff_area=0)
    evaluator = PanopticEvaluator(table)
    results = update_evaluator(evaluator, post, _logits_from_target(target, table.n_classes), target, table)
    assert len(results) == len(target[GT_MASKS])
    assert evaluator.compute()["all"]["pq"] == pytest.approx(1.0)


def test_metric_accumulates_batches_and_resets(batch, synthetic_data):
    _, target = batch
    table = synthetic_data.class_table
    post = PanopticPostProcessor(table, min_thing_area=0, min_stuff_area=0)
    metric = PanopticQualityMetric(post, table, key="things")
    assert metric.name == "pq_things" and PanopticQualityMetric(post, table).name == "panoptic_quality"
    good = _logits_from_target(target, table.n_classes)
    # every segment called the first (stuff) class: no thing is found
    classes = torch.where(target[GT_CLASSES] > 0, 1, 0)
    wrong = _logits_from_target({GT_MASKS: target[GT_MASKS], GT_CLASSES: classes}, table.n_classes)
    metric.accumulate(SimpleNamespace(pred=wrong, yb=(target,)))
    wrong_only = metric.value
    assert wrong_only == 0.0
    metric.accumulate(SimpleNamespace(pred=good, yb=(target,)))
    assert wrong_only < metric.value < 1.0  # both batches count
    metric.reset()
    metric.accumulate(SimpleNamespace(pred=good, yb=(target,)))
    assert metric.value == pytest.approx(1.0)
