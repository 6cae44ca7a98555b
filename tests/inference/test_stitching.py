"""Cross-tile stitching: union-find, overlap matching, the tile stitcher and block export / absorb."""
from __future__ import annotations

import numpy as np
import pytest
from inference_scene import CLASSES

from geomax.errors import ModelError
from geomax.inference.predictor import OracleTilePredictor
from geomax.inference.stitching import BlockCollector, TileStitcher, UnionFind, match_overlap
from geomax.inference.tiling import TileBlocks, TileGrid

GRASS, ROAD, BUILDING, TREE = 3, 2, 5, 6
H, W = 70, 95


# --------------------------------------------------------------------------- union-find
def test_union_find_add_find_union_roots():
    uf = UnionFind(capacity=2)  # grows past its capacity
    assert uf.add(3) == 0 and uf.add(4) == 3 and uf.n == 7
    assert [uf.find(i) for i in range(7)] == list(range(7))
    uf.union(5, 2)
    uf.union(6, 5)
    uf.union(1, 4)
    assert uf.find(6) == uf.find(5) == uf.find(2) == 2  # the smaller root id stays the root
    assert uf.find(4) == 1 and uf.find(0) == 0
    assert uf.roots().tolist() == [0, 1, 2, 3, 1, 2, 2]


def test_union_find_add_with_parents_links_new_ids():
    uf = UnionFind()
    uf.add(2)
    first = uf.add(3, parents=np.array([2, 2, 1]))  # new ids 2, 3, 4: 3 joins 2, 4 joins old id 1
    assert first == 2
    assert uf.roots().tolist() == [0, 1, 2, 2, 1]
    with pytest.raises(ValueError):
        uf.add(1, parents=np.array([9]))


# --------------------------------------------------------------------------- match_overlap
def _tables(classes: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Class and thing flag per provisional id from {id: class Value}."""
    seg_class = np.zeros(max(classes) + 1, np.int64)
    for k, v in classes.items():
        seg_class[k] = v
    return seg_class, np.isin(seg_class, CLASSES.thing_values)


def test_match_overlap_pairs_same_class_things_one_to_one():
    a = np.zeros((8, 12), np.int64)
    b = np.zeros((8, 12), np.int64)
    a[1:5, 0:4], b[1:5, 0:4] = 1, 11          # identical building: IoU 1
    a[1:5, 5:9], b[1:5, 6:9] = 2, 12          # building shifted by a column: IoU 0.75
    a[6:8, 0:6], b[6:8, 0:2] = 3, 13          # tree, IoU 1/3: below the threshold
    seg_class, seg_thing = _tables({1: BUILDING, 2: BUILDING, 3: TREE, 11: BUILDING, 12: BUILDING, 13: TREE})
    pairs = match_overlap(a, b, seg_class, seg_thing, 0.5)
    assert sorted(pairs) == [(1, 11), (2, 12)]
    assert sorted(match_overlap(a, b, seg_class, seg_thing, 0.8)) == [(1, 11)]


def test_match_overlap_never_pairs_other_classes_or_stuff():
    a = np.zeros((6, 6), np.int64)
    b = np.zeros((6, 6), np.int64)
    a[:3], b[:3] = 1, 11  # same pixels, building vs tree
    a[3:], b[3:] = 2, 12  # same pixels, grass (stuff) in both
    seg_class, seg_thing = _tables({1: BUILDING, 11: TREE, 2: GRASS, 12: GRASS})
    assert match_overlap(a, b, seg_class, seg_thing, 0.5) == []


# --------------------------------------------------------------------------- the stitcher
def _truth() -> tuple[np.ndarray, np.ndarray]:
    """Grass with a road, buildings and trees; several objects cross tile borders of the grids below."""
    cls = np.full((H, W), GRASS, np.int32)
    inst = np.zeros((H, W), np.int32)
    cls[:, 60:66] = ROAD
    objects = [(BUILDING, (5, 15, 20, 50)), (BUILDING, (20, 30, 3, 12)), (TREE, (40, 52, 18, 29)),
               (BUILDING, (45, 68, 40, 56)), (TREE, (2, 9, 70, 93)), (BUILDING, (30, 37, 68, 90))]
    for k, (value, (r0, r1, c0, c1)) in enumerate(objects, start=1):
        cls[r0:r1, c0:c1] = value
        inst[r0:r1, c0:c1] = k
    return cls, inst


def _tile_result(oracle, grid: TileGrid, row: int, col: int):
    """The oracle's result for one tile and the tile's validity (False outside the raster)."""
    window = grid.tile_window(row, col)
    t = grid.tile_size
    rows = np.arange(window.row_off, window.row_off + t)[:, None]
    cols = np.arange(window.col_off, window.col_off + t)[None, :]
    valid = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    [result] = oracle.predict_tiles(np.zeros((1, oracle.n_bands, t, t), np.uint8), valid[None], windows=[window])
    return result, valid


def _stitch_tiles(grid: TileGrid, oracle, stitcher: TileStitcher, sink) -> None:
    for r, c in grid:
        sink(stitcher.add_tile(r, c, *_tile_result(oracle, grid, r, c)))


def _final_maps(stitcher: TileStitcher, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    class_lut, instance_lut, n_instances = stitcher.finalize()
    return class_lut[ids], instance_lut[ids], n_instances


def _stitch_whole_grid(grid: TileGrid, oracle) -> tuple[np.ndarray, np.ndarray, TileStitcher]:
    stitcher = TileStitcher(grid, merge_iou=0.5)
    ids = np.zeros((H, W), np.uint32)

    def write(tile):
        w = tile.core_window
        ids[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width] = tile.core_ids

    _stitch_tiles(grid, oracle, stitcher, write)
    return ids, stitcher.finalize(), stitcher


def assert_same_instances(out: np.ndarray, truth: np.ndarray) -> None:
    """Equal up to renumbering: the same pixels carry an id, and ids correspond one to one."""
    assert np.array_equal(out > 0, truth > 0)
    m = truth > 0
    pairs = np.unique(np.stack([truth[m], out[m]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("tile_size,overlap", [(32, 8), (40, 16), (24, 6)])
def test_objects_cut_by_tile_borders_become_one_instance(tile_size, overlap):
    cls, inst = _truth()
    oracle = OracleTilePredictor((cls, inst), CLASSES, view="global", seed=3)
    grid = TileGrid(H, W, tile_size, overlap)
    ids, (class_lut, instance_lut, n_instances), stitcher = _stitch_whole_grid(grid, oracle)
    assert np.array_equal(class_lut[ids], cls)
    assert_same_instances(instance_lut[ids], inst)
    assert n_instances == inst.max() == instance_lut[ids].max()  # no duplicates, ids 1..n
    assert stitcher.n_merges > 0  # objects really were cut
    # the luts: class Values per provisional id, instance ids only on things, 0 for id 0
    assert class_lut[0] == 0 and instance_lut[0] == 0
    assert set(np.unique(instance_lut[np.isin(class_lut, CLASSES.stuff_values)])) == {0}


def test_without_overlap_cut_objects_stay_split():
    cls, inst = _truth()
    oracle = OracleTilePredictor((cls, inst), CLASSES, view="global")
    ids, (class_lut, instance_lut, n_instances), stitcher = _stitch_whole_grid(TileGrid(H, W, 32, 0), oracle)
    assert np.array_equal(class_lut[ids], cls)
    assert n_instances > inst.max() and stitcher.n_merges == 0


def test_tiles_must_come_in_raster_order_and_have_the_tile_size():
    cls, inst = _truth()
    oracle = OracleTilePredictor((cls, inst), CLASSES)
    grid = TileGrid(H, W, 32, 8)
    stitcher = TileStitcher(grid, merge_iou=0.5)
    with pytest.raises(RuntimeError, match="raster order"):
        stitcher.add_tile(0, 1, None, np.ones((32, 32), bool))
    result, valid = _tile_result(oracle, TileGrid(H, W, 16, 0), 1, 1)
    with pytest.raises(ModelError, match="tile's size"):
        stitcher.add_tile(0, 0, result, np.ones((32, 32), bool))


def test_a_tile_without_result_is_empty():
    grid = TileGrid(H, W, 32, 8)
    tile = TileStitcher(grid, merge_iou=0.5).add_tile(0, 0, None, np.zeros((32, 32), bool))
    assert tile.core_window == grid.core_window(0, 0)
    assert not tile.core_ids.any() and not tile.core_conf.any() and tile.tile_ids.shape == (32, 32)


@pytest.mark.parametrize("view,tile_size,overlap,block_tiles", [("global", 32, 8, 2), ("tile", 24, 6, 2),
                                                                 ("global", 40, 16, 1)])
def test_blocks_exported_and_absorbed_give_the_single_stitcher_result(view, tile_size, overlap, block_tiles):
    cls, inst = _truth()
    oracle = OracleTilePredictor((cls, inst), CLASSES, view=view, seed=5)
    grid = TileGrid(H, W, tile_size, overlap)
    single_ids, (s_cls, s_inst, s_n), single = _stitch_whole_grid(grid, oracle)

    blocks = TileBlocks(grid, block_tiles)
    assert len(blocks) >= 4
    results = []
    for block in blocks:
        collector = BlockCollector(blocks, block)
        stitcher = TileStitcher(collector.grid, merge_iou=0.5)
        _stitch_tiles(collector.grid, oracle, stitcher, collector)
        results.append(collector.result(stitcher))
    merged = TileStitcher(grid, merge_iou=0.5)
    ids = np.zeros((H, W), np.uint32)
    for k in np.random.default_rng(0).permutation(len(results)):  # blocks arrive in any order
        res = results[k]
        w = res.core_window
        ids[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width] = merged.absorb(res)
    b_cls, b_inst, b_n = _final_maps(merged, ids)
    assert np.array_equal(b_cls, s_cls[single_ids])
    assert_same_instances(b_inst, s_inst[single_ids])
    assert b_n == s_n and merged.n_merges == single.n_merges
