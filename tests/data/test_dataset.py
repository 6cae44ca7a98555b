"""Tests of geomax.data.dataset: panoptic maps <-> training targets, and the chip dataset."""
import warnings

import numpy as np
import pytest
import torch

from geomax.common import GT_CLASSES, GT_IS_THING, GT_MASKS, GT_SEMANTIC, GT_VALID
from geomax.data.classes import ClassTable
from geomax.data.dataset import ChipDataset, count_segments, panoptic_from_target, target_from_panoptic
from geomax.data.esri_layout import read_export
from geomax.errors import ArgumentError

TABLE = ClassTable.from_lists(["water", "field", "building"], things=["building"], values=[10, 20, 30])


def _maps():
    """Class indices (1 water, 2 field, 3 building) and instances of an 8 x 8 chip: two touching buildings."""
    cls = np.full((8, 8), 2, np.int64)
    cls[:, 6:] = 1
    inst = np.zeros((8, 8), np.int64)
    cls[1:4, 1:3], inst[1:4, 1:3] = 3, 7
    cls[1:4, 3:5], inst[1:4, 3:5] = 3, 9
    return cls, inst


def test_target_holds_one_mask_per_stuff_class_then_one_per_instance():
    cls, inst = _maps()
    valid = np.ones((8, 8), bool)
    valid[7, 7] = False
    t = target_from_panoptic(cls, inst, valid, TABLE, n_masks=6)
    assert t[GT_MASKS].shape == (6, 8, 8) and t[GT_MASKS].dtype == torch.bool
    assert t[GT_CLASSES].tolist() == [1, 2, 3, 3, 0, 0]
    assert t[GT_IS_THING].tolist() == [False, False, True, True, False, False]
    assert t[GT_MASKS].sum(dim=(1, 2)).tolist() == [15, 36, 6, 6, 0, 0]  # water loses its no-data pixel
    assert not t[GT_MASKS][:, 7, 7].any() and t[GT_SEMANTIC][7, 7] == 0 and not t[GT_VALID][7, 7]
    assert count_segments(cls, inst, TABLE.is_thing_index()) == 4


def test_panoptic_from_target_inverts_target_from_panoptic():
    cls, inst = _maps()
    t = target_from_panoptic(cls, inst, None, TABLE, n_masks=4)
    class_map, instance_map = panoptic_from_target(t, TABLE)
    np.testing.assert_array_equal(class_map, TABLE.value_lut()[cls])
    assert sorted(np.unique(instance_map).tolist()) == [0, 1, 2]
    for old in (7, 9):  # each instance comes back whole, renumbered
        assert len(np.unique(instance_map[inst == old])) == 1
    batch = {k: v[None] for k, v in t.items()}
    np.testing.assert_array_equal(panoptic_from_target(batch, 0, TABLE)[0], class_map)
    with pytest.raises(ArgumentError, match="class table"):
        panoptic_from_target(t)
    with pytest.raises(ArgumentError, match="sample index"):
        panoptic_from_target(batch, class_table=TABLE)


def test_too_many_segments_drop_the_smallest_with_a_warning():
    cls, inst = _maps()
    cls[0, 0], inst[0, 0] = 3, 11  # a one-pixel building
    with pytest.warns(UserWarning, match="n_masks=4"):
        t = target_from_panoptic(cls, inst, None, TABLE, n_masks=4)
    assert t[GT_MASKS].sum(dim=(1, 2)).tolist() == [16, 35, 6, 6]
    assert t[GT_SEMANTIC][0, 0] == 0  # the dropped segment is void


def test_chip_dataset_items_match_the_exported_labels(synthetic_export, synthetic_data):
    layout = read_export(synthetic_export.out_folder)
    ds = ChipDataset(layout.chips[:3], layout.class_table, synthetic_data.band_stats, n_masks=synthetic_data.n_masks,
                     chip_size=48)
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (4, 48, 48) and image.dtype == torch.float32
    assert target[GT_MASKS].shape == (synthetic_data.n_masks, 48, 48)
    # masks do not overlap and cover exactly the labelled valid pixels
    assert target[GT_MASKS].sum(0).max() <= 1
    assert torch.equal(target[GT_MASKS].any(0), target[GT_SEMANTIC] > 0)
    # no augmentation: the same item twice is the same
    again_image, again_target = ds[0]
    assert torch.equal(image, again_image) and torch.equal(target[GT_MASKS], again_target[GT_MASKS])


def test_crop_starts_tile_a_chip_and_align_the_last_crop_to_its_edge():
    from geomax.data.dataset import crop_starts

    assert crop_starts((256, 256), 128) == [(0, 0), (0, 128), (128, 0), (128, 128)]
    assert crop_starts((200, 128), 128) == [(0, 0), (72, 0)]
    assert crop_starts((100, 90), 128) == [(0, 0)]
    assert crop_starts((256, 128), 128, stride=64) == [(0, 0), (64, 0), (128, 0)]


def test_max_window_segments_counts_the_fullest_window_not_the_chip():
    from geomax.data.prepare import max_window_segments

    cls = np.zeros((256, 256), np.int64)
    inst = np.zeros((256, 256), np.int32)
    for k, (r, c) in enumerate([(10, 10), (10, 40), (10, 70), (200, 200)], start=1):  # 3 objects top-left, 1 apart
        cls[r:r + 8, c:c + 8] = 1
        inst[r:r + 8, c:c + 8] = k
    thing = np.array([False, True])
    assert max_window_segments(cls, inst, thing, 256) == 4
    assert max_window_segments(cls, inst, thing, 128) == 3


def test_decoded_chips_are_cached_and_handed_out_as_copies(synthetic_export, tmp_path):
    import shutil

    from geomax import prepare_data

    folder = tmp_path / "export"
    shutil.copytree(synthetic_export.out_folder, folder)
    data = prepare_data(folder, batch_size=2, val_split_pct=0.1, transforms=False)
    ds = data.train_ds
    first = ds.load_sample(0)
    first.class_index[:] = 99  # a caller may change what it got: the cache must not see it
    first.image[:] = -1
    for sub in ("images", "labels"):  # a cached chip is not read again
        for f in (folder / sub).iterdir():
            f.unlink() if f.is_file() else None
    again = ds.load_sample(0)
    assert again.class_index.dtype == np.int64 and not (again.class_index == 99).all()
    assert not (again.image == -1).all()
    ds[0]  # an item of a cached chip builds its target from memory
    uncached = prepare_data(synthetic_export.out_folder, batch_size=2, val_split_pct=0.1, transforms=False).train_ds
    np.testing.assert_array_equal(uncached.load_sample(0).class_index, again.class_index)
    np.testing.assert_array_equal(uncached.load_sample(0).image, again.image)


def test_a_zero_cache_reads_the_chip_every_time(synthetic_export, synthetic_data):
    ds = ChipDataset(synthetic_data.train_ds.chips, synthetic_data.class_table, synthetic_data.band_stats,
                     n_masks=synthetic_data.n_masks, chip_size=synthetic_data.chip_size, cache_bytes=0)
    ds.load_sample(0)
    assert ds._cache == {} and ds._cached_bytes == 0


def test_the_target_carries_the_segment_index_of_its_masks():
    from geomax.common import GT_SEGMENT_INDEX

    cls = np.zeros((16, 16), np.int64)
    cls[:, :8] = 1
    cls[2:6, 10:14] = 3
    cls[10:14, 10:14] = 3
    inst = np.zeros((16, 16), np.int64)
    inst[2:6, 10:14] = 7
    inst[10:14, 10:14] = 9
    valid = np.ones((16, 16), bool)
    valid[0, :] = False
    for n_masks in (5, 2):  # with room for every segment, and with the smallest dropped
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = target_from_panoptic(cls, inst, valid, TABLE, n_masks=n_masks)
        seg = t[GT_SEGMENT_INDEX]
        assert seg.dtype == torch.int64 and seg.shape == (16, 16)
        for k in range(n_masks):
            assert torch.equal(seg == k, t[GT_MASKS][k])
        assert torch.equal(seg == -1, ~t[GT_MASKS].any(0))
