"""The post-processor gives the truth back from logits that say what the truth says.

Mask logits built from a true panoptic tile (one slot per true segment, its share of each output
cell, plus noise) and confident class logits must post-process into that tile again, at the
output strides the variants use (1 and 2).
"""
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
from geomax.metrics import PanopticEvaluator
from geomax.models.postprocess import PanopticPostProcessor

TILE = 128
EXTRA_VOID_SLOTS = 4


def true_segments(class_map: np.ndarray, instance_map: np.ndarray, class_table) -> list[tuple[np.ndarray, int]]:
    """(mask, class Value) of every true segment: one per thing instance, one per stuff class present."""
    segments = []
    for c in class_table:
        sel = class_map == c.value
        if not sel.any():
            continue
        if c.is_thing:
            segments += [(sel & (instance_map == i), c.value) for i in np.unique(instance_map[sel])]
        else:
            segments.append((sel, c.value))
    return segments


def logits_from_truth(class_map, instance_map, class_table, stride: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits (N, H/s, W/s) and class logits (N, C + 1) that say what the true maps say.

    A slot per true segment: mask logit ``12 * share - 4`` (its share of each output cell) plus
    N(0, 0.5) noise, class logit 6 for its class and -4 elsewhere; the extra slots are confidently void.
    """
    segments = true_segments(class_map, instance_map, class_table)
    n_slots = len(segments) + EXTRA_VOID_SLOTS
    h, w = class_map.shape[0] // stride, class_map.shape[1] // stride
    masks = torch.full((n_slots, h, w), -4.0)
    classes = torch.full((n_slots, class_table.n_classes + 1), -4.0)
    classes[:, 0] = 6.0  # unused slots: void
    index_of_value = {v: i for i, v in enumerate(class_table.values, start=1)}
    for slot, (mask, value) in enumerate(segments):
        share = torch.from_numpy(mask).float()[None, None]
        if stride > 1:
            share = F.avg_pool2d(share, stride)
        masks[slot] = 12.0 * share[0, 0] - 4.0
        classes[slot] = -4.0
        classes[slot, index_of_value[value]] = 6.0
    masks += torch.from_numpy(rng.normal(0, 0.5, masks.shape).astype(np.float32))
    return masks, classes


@pytest.fixture(scope="module")
def truth_tiles(synthetic_scene):
    """Two 128 px tiles of the shared scene: (valid, class map, instance map) each, void where no data."""
    import geopandas as gpd

    size = synthetic_scene.size
    class_map, instance_map = rasterize_labels(gpd.read_file(synthetic_scene.labels), CLASS_FIELD,
                                               SYNTHETIC_CLASSES, synthetic_scene.transform, (size, size))
    tiles = []
    with rasterio.open(synthetic_scene.raster) as src:
        for r0, c0 in ((0, 0), (TILE, TILE)):
            valid = src.dataset_mask(window=Window(c0, r0, TILE, TILE)) > 0
            cm = np.where(valid, class_map[r0:r0 + TILE, c0:c0 + TILE], 0)
            im = np.where(valid, instance_map[r0:r0 + TILE, c0:c0 + TILE], 0)
            tiles.append((valid, cm, im))
    return tiles


def test_truth_tiles_hold_things_stuff_and_no_data(truth_tiles):
    valid, cm, im = truth_tiles[0]
    assert not valid.all() and valid.any()  # the corner tile holds part of the no-data border
    for _, cm, im in truth_tiles:
        values = set(np.unique(cm)) - {0}
        assert values & set(SYNTHETIC_CLASSES.thing_values) and values - set(SYNTHETIC_CLASSES.thing_values)
        assert len(true_segments(cm, im, SYNTHETIC_CLASSES)) >= 5


@pytest.mark.parametrize("stride", [1, 2])
def test_truth_logits_post_process_back_to_the_truth(truth_tiles, stride):
    pp = PanopticPostProcessor(SYNTHETIC_CLASSES, min_thing_area=0, min_stuff_area=0)
    evaluator = PanopticEvaluator(SYNTHETIC_CLASSES)
    rng = np.random.default_rng(0)
    for valid, cm, im in truth_tiles:
        masks, classes = logits_from_truth(cm, im, SYNTHETIC_CLASSES, stride, rng)
        assert masks.shape[-2:] == (TILE // stride, TILE // stride)
        got = pp.process_one(masks, classes, (TILE, TILE), valid)
        assert (got.class_map[~valid] == 0).all() and (got.instance_map[~valid] == 0).all()
        evaluator.update(got.class_map, got.instance_map, cm, im)
    pq = evaluator.compute()
    assert pq["things"]["pq"] > (0.97 if stride == 1 else 0.8), pq["things"]
    assert pq["stuff"]["pq"] > 0.97, pq["stuff"]


def test_shuffled_truth_logits_do_not_give_the_truth_back(truth_tiles):
    """The check above can fail: the same logits with the class rows of the slots shuffled score low."""
    pp = PanopticPostProcessor(SYNTHETIC_CLASSES, min_thing_area=0, min_stuff_area=0)
    evaluator = PanopticEvaluator(SYNTHETIC_CLASSES)
    rng = np.random.default_rng(0)
    for valid, cm, im in truth_tiles:
        masks, classes = logits_from_truth(cm, im, SYNTHETIC_CLASSES, 1, rng)
        classes = classes[torch.from_numpy(rng.permutation(len(classes)))]
        got = pp.process_one(masks, classes, (TILE, TILE), valid)
        evaluator.update(got.class_map, got.instance_map, cm, im)
    assert evaluator.compute()["all"]["pq"] < 0.7
