"""Tests of the panoptic post-processor."""
import numpy as np
import pytest
import torch

from geomax.common import PRED_CLASS_LOGITS, PRED_MASK_LOGITS
from geomax.data.classes import ClassTable
from geomax.errors import ArgumentError
from geomax.models.postprocess import PanopticPostProcessor
from geomax.panoptic import SEGMENT_COLUMNS

TABLE = ClassTable.from_lists(["water", "field", "building", "tree"], things=["building", "tree"],
                              values=[10, 20, 30, 40])
S = 20.0


def _pred():
    """One image, 6 slots at 8x8: two 'field' stuff slots (left/right top), one water, two buildings, one weak slot."""
    ml = torch.full((1, 6, 8, 8), -S)
    cl = torch.full((1, 6, 5), -S)
    ml[0, 0, :4, :4] = S; cl[0, 0, 2] = S          # field (stuff)
    ml[0, 1, :4, 4:] = S; cl[0, 1, 2] = S          # field again: merged with slot 0
    ml[0, 2, 4:, :] = S; cl[0, 2, 1] = S           # water
    ml[0, 3, 5:7, 1:3] = 2 * S; cl[0, 3, 3] = S    # building A (4 px at 8x8)
    ml[0, 4, 5:7, 5:8] = 2 * S; cl[0, 4, 3] = S    # building B (6 px)
    cl[0, 5, 4] = 0.5; cl[0, 5, 0] = 0.0           # low class confidence: dropped
    ml[0, 5, 0, 0] = 3 * S
    return {PRED_MASK_LOGITS: ml, PRED_CLASS_LOGITS: cl}


def test_batch_result_structure_and_merging():
    pp = PanopticPostProcessor(TABLE, min_thing_area=1, min_stuff_area=1)
    res, = pp(_pred(), out_size=(8, 8))
    assert list(res.segments.columns) == SEGMENT_COLUMNS
    assert res.class_map.shape == res.instance_map.shape == res.segment_map.shape == res.confidence.shape == (8, 8)
    assert res.class_map[0, 1] == 20 and res.class_map[0, 7] == 20 and res.class_map[7, 0] == 10
    # (0, 0) belongs most to the dropped weak slot: void (deeplab2), not handed to the field slot
    assert res.class_map[0, 0] == 0 and res.segment_map[0, 0] == 0 and res.confidence[0, 0] == 0
    segs = res.segments.set_index("id")
    # both field slots form ONE stuff segment
    field = segs[segs.class_value == 20]
    assert len(field) == 1 and field.iloc[0].area == 31 and not field.iloc[0].is_thing
    assert res.segment_map[0, 1] == res.segment_map[0, 7]
    things = segs[segs.is_thing]
    assert sorted(things.area.tolist()) == [4, 6] and set(things.class_name) == {"building"}
    assert sorted(np.unique(res.instance_map).tolist()) == [0, 1, 2]
    assert (res.instance_map[res.class_map != 30] == 0).all()
    assert 0.0 <= res.confidence.min() and res.confidence.max() <= 1.0
    assert segs.score.between(0.9, 1.0).all()
    for sid, row in segs.iterrows():
        assert (res.segment_map == sid).sum() == row.area
    assert res.n_things == 2


def test_thresholds_and_min_areas():
    pred = _pred()
    res, = PanopticPostProcessor(TABLE, min_thing_area=5, min_stuff_area=1)(pred, out_size=(8, 8))
    assert res.segments.is_thing.sum() == 1  # the 4-pixel building is dropped
    assert res.class_map[5, 1] == 0 and res.instance_map[5, 1] == 0 and res.segment_map[5, 1] == 0
    res, = PanopticPostProcessor(TABLE, min_thing_area=1, min_stuff_area=33)(pred, out_size=(8, 8))
    assert 20 not in res.segments.class_value.tolist() and res.class_map[0, 0] == 0
    # mask threshold: two slots splitting a pixel 50/50 -> best prob 0.5 < 0.6 -> void
    p = _pred()
    p[PRED_MASK_LOGITS][0, 2, 4, 0] = 0.0
    p[PRED_MASK_LOGITS][0, 0, 4, 0] = 0.0
    res, = PanopticPostProcessor(TABLE, mask_threshold=0.6, min_thing_area=1, min_stuff_area=1)(p, out_size=(8, 8))
    assert res.class_map[4, 0] == 0 and res.confidence[4, 0] == 0
    # nothing passes a class threshold of 1.0 (+ eps): everything void, empty table
    res, = PanopticPostProcessor(TABLE, class_threshold=1.0)(
        {PRED_MASK_LOGITS: pred[PRED_MASK_LOGITS], PRED_CLASS_LOGITS: torch.zeros(1, 6, 5)})
    assert (res.class_map == 0).all() and len(res.segments) == 0 and list(res.segments.columns) == SEGMENT_COLUMNS


def test_resize_valid_and_single_image():
    pp = PanopticPostProcessor(TABLE, min_thing_area=1, min_stuff_area=1)
    pred = _pred()
    valid = np.ones((1, 30, 30), bool)
    valid[0, :, :5] = False
    res, = pp(pred, valid=valid)  # out size taken from valid, any size
    assert res.shape == (30, 30)
    assert (res.class_map[:, :5] == 0).all() and (res.confidence[:, :5] == 0).all()
    assert res.class_map[2, 10] == 20 and res.class_map[29, 10] == 10
    one = pp.process_one(pred[PRED_MASK_LOGITS][0], pred[PRED_CLASS_LOGITS][0], (30, 30), valid[0])
    assert np.array_equal(one.class_map, res.class_map) and np.array_equal(one.instance_map, res.instance_map)
    res4, = pp(pred)
    assert res4.shape == (32, 32)  # default: stride 4 x mask size


def test_bad_inputs():
    with pytest.raises(ArgumentError, match="class table"):
        PanopticPostProcessor(TABLE)({PRED_MASK_LOGITS: torch.zeros(1, 3, 4, 4), PRED_CLASS_LOGITS: torch.zeros(1, 3, 9)})
    with pytest.raises(ArgumentError, match="class_threshold"):
        PanopticPostProcessor(TABLE, class_threshold=1.5)
    with pytest.raises(ArgumentError, match="valid has shape"):
        PanopticPostProcessor(TABLE).process_one(torch.zeros(3, 4, 4), torch.zeros(3, 5), (16, 16), np.ones((8, 8), bool))


def test_a_dropped_slot_is_not_absorbed_by_its_neighbour():
    """Three cars in a queue, the middle one's slot below the class threshold: its pixels
    become void (deeplab2), the two kept cars keep their own extent (no merged car)."""
    ml = torch.full((1, 4, 4, 12), -S)
    cl = torch.full((1, 4, 5), -S)
    ml[0, 0] = 0.0; cl[0, 0, 2] = S                   # field everywhere (weak mask logit)
    for slot, (c0, c1) in zip((1, 2, 3), ((0, 4), (4, 8), (8, 12))):
        ml[0, slot, 1:3, c0:c1] = S                   # car masks
        ml[0, slot, 1:3, max(c0 - 1, 0):min(c1 + 1, 12)] += 0.5 * S  # neighbours' logits rise at the edges
        cl[0, slot, 3] = S
    cl[0, 2, 3] = 0.0; cl[0, 2, 0] = 0.5              # middle car: p(building) about 0.4 -> dropped
    res, = PanopticPostProcessor(TABLE, min_thing_area=1, min_stuff_area=1)({PRED_MASK_LOGITS: ml, PRED_CLASS_LOGITS: cl},
                                                                          out_size=(4, 12))
    things = res.segments[res.segments.is_thing]
    assert sorted(things.area.tolist()) == [8, 8]
    assert (res.class_map[1:3, 4:8] == 0).all()


def _one_slot_two_cars(gap: int):
    """A field everywhere and ONE building slot covering two 2x3 blocks `gap` columns apart
    (plus a 1-pixel fragment touching nothing)."""
    ml = torch.full((1, 2, 6, 12), -S)
    cl = torch.full((1, 2, 5), -S)
    ml[0, 0] = 0.0; cl[0, 0, 2] = S          # field
    ml[0, 1, 1:3, 1:4] = S                    # car A: 6 px
    ml[0, 1, 1:3, 4 + gap:7 + gap] = S        # car B: 6 px
    ml[0, 1, 5, 11] = S                       # a 1-pixel fragment of the same slot
    cl[0, 1, 3] = S
    return {PRED_MASK_LOGITS: ml, PRED_CLASS_LOGITS: cl}


def test_a_slot_covering_separate_objects_becomes_one_instance_per_region():
    pred = _one_slot_two_cars(gap=1)
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1)(pred, out_size=(6, 12))
    things = res.segments[res.segments.is_thing].set_index("id")
    # two instances; the fragment (below min_thing_area) stays with the first (largest) region
    assert sorted(things.area.tolist()) == [6, 7]
    a, b, frag = res.instance_map[1, 1], res.instance_map[1, 6], res.instance_map[5, 11]
    assert a > 0 and b > 0 and a != b and frag in (a, b)
    assert res.n_things == 2 and sorted(np.unique(res.instance_map).tolist()) == [0, 1, 2]
    for sid, row in res.segments.set_index("id").iterrows():
        assert (res.segment_map == sid).sum() == row.area
    # deeplab2's behaviour on request: one instance for the slot
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1,
                                 split_disconnected_things=False)(pred, out_size=(6, 12))
    assert res.n_things == 1 and res.segments[res.segments.is_thing].area.tolist() == [13]
    # touching blocks (no gap) are one region: nothing to split
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1)(_one_slot_two_cars(gap=0), out_size=(6, 12))
    assert res.n_things == 1
    # regions touching only at a corner are separate (4-connectivity, as the vectoriser)
    p = _one_slot_two_cars(gap=1)
    p[PRED_MASK_LOGITS][0, 1, 1:3, 5:8] = -S
    p[PRED_MASK_LOGITS][0, 1, 3:5, 4:7] = S   # B moved down-right: touches A at the corner (2, 3)-(3, 4)
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1)(p, out_size=(6, 12))
    assert res.n_things == 2
    # a sliver below split_min_fraction of the slot's largest region stays with it
    p = _one_slot_two_cars(gap=1)
    p[PRED_MASK_LOGITS][0, 1, 1:5, 1:4] = S   # A grows to 12 px; B keeps 6 px = 0.5 of A
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1, split_min_fraction=0.6)(p, out_size=(6, 12))
    assert res.n_things == 1
    res, = PanopticPostProcessor(TABLE, min_thing_area=4, min_stuff_area=1, split_min_fraction=0.5)(p, out_size=(6, 12))
    assert res.n_things == 2 and sorted(res.segments[res.segments.is_thing].area.tolist()) == [6, 13]
    with pytest.raises(ArgumentError, match="split_min_fraction"):
        PanopticPostProcessor(TABLE, split_min_fraction=1.5)
    with pytest.raises(ArgumentError, match="split_disconnected_things"):
        PanopticPostProcessor(TABLE, split_disconnected_things="yes")
