"""Cross-tile stitching: nearest-centre cores and instance merging across overlaps.

Every tile's segments get *provisional* ids, unique over the whole raster. Each
pixel takes the provisional id of the tile whose core holds it (the tile whose
centre is nearest). Thing segments of two neighbouring tiles are merged into one
instance when they have the same class and overlap well (IoU inside the strip
both tiles predicted) -- a union-find over provisional ids records the merges.
Only a thin band of state is kept: the bottom overlap strip of the previous
tile row (one per tile column) and the right strip of the previous tile.

Distributed inference stitches blocks of tiles the same way: a worker's stitcher
covers one block (:class:`BlockCollector` gathers its cores and the overlap strips of
its border tiles into a :class:`BlockResult`), and the client's stitcher absorbs the
blocks into one id space (:meth:`TileStitcher.absorb`), matching the tiles that face
each other across block borders with the same :func:`match_overlap`. Every pair
of neighbouring tiles is thus matched once, as in a single stitcher over the grid.

After the last tile (or block), :meth:`TileStitcher.finalize` turns the union-find
into look-up tables ``provisional id -> class Value`` and ``provisional id -> final
instance id`` (1..n, unique across the raster, 0 for stuff and void), applied when
the stitched raster is rewritten block by block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from rasterio.windows import Window

from ..errors import ModelError
from ..panoptic import PanopticResult
from .tiling import TileBlocks, TileGrid

__all__ = ["UnionFind", "match_overlap", "StitchedTile", "SegmentTable", "BlockResult", "BlockCollector",
           "TileStitcher"]


class UnionFind:
    """Disjoint sets over integer ids 0..n-1 that grow on demand (array-based)."""

    def __init__(self, capacity: int = 1024):
        self.parent = np.arange(capacity, dtype=np.int64)
        self.n = 0

    def add(self, k: int, parents: np.ndarray | None = None) -> int:
        """Create ``k`` new ids; return the first one.

        Without ``parents`` every new id is a singleton set. ``parents`` (``k`` ids, each
        below ``n + k``) links the new ids into existing or new sets, e.g. the roots of
        another union-find's ids shifted into this one.
        """
        first = self.n
        need = self.n + k
        if need > len(self.parent):
            cap = max(need, 2 * len(self.parent))
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), cap, dtype=np.int64)])
        if parents is not None:
            parents = np.asarray(parents, dtype=np.int64)
            if parents.shape != (k,) or (k and (parents.min() < 0 or parents.max() >= need)):
                raise ValueError(f"parents must be {k} ids in 0..{need - 1}")
            self.parent[first:need] = parents
        self.n = need
        return first

    def find(self, x: int) -> int:
        """Root of the set of ``x``."""
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]  # path halving
            x = p[x]
        return int(x)

    def union(self, a: int, b: int) -> None:
        """Merge the sets of ``a`` and ``b``; the smaller root id stays the root."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        """Root of every id 0..n-1 (vectorised full path compression)."""
        p = self.parent[: self.n].copy()
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def _count(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(ids, return_counts=True)


def match_overlap(a: np.ndarray, b: np.ndarray, seg_class: np.ndarray, seg_thing: np.ndarray,
                  min_iou: float) -> list[tuple[int, int]]:
    """Pairs of thing segments, one from each of two predictions of the same strip, to merge.

    Parameters
    ----------
    a, b:
        Provisional segment ids of the same pixels as predicted by two tiles (0 = none).
    seg_class, seg_thing:
        Class Value and thing flag of every provisional id.
    min_iou:
        Two same-class thing segments merge when their IoU inside the strip is at least this.
        With ``min_iou > 0.5`` a segment merges with at most one segment of the other tile.
    """
    a = a.ravel()
    b = b.ravel()
    ta, tb = seg_thing[a], seg_thing[b]
    if not (ta.any() and tb.any()):
        return []
    both = ta & tb & (seg_class[a] == seg_class[b])
    if not both.any():
        return []
    base = np.int64(max(int(a.max()), int(b.max())) + 1)
    pair_keys, inter = _count(a[both].astype(np.int64) * base + b[both])
    pa, pb = pair_keys // base, pair_keys % base
    ua, na = _count(a[ta])
    ub, nb = _count(b[tb])
    area_a = na[np.searchsorted(ua, pa)]
    area_b = nb[np.searchsorted(ub, pb)]
    iou = inter / (area_a + area_b - inter)
    keep = iou >= min_iou
    return list(zip(pa[keep].tolist(), pb[keep].tolist()))


class StitchedTile(NamedTuple):
    """One tile after :meth:`TileStitcher.add_tile`.

    Attributes
    ----------
    row, col:
        The tile in its stitcher's grid.
    core_window:
        The pixels the tile decides, in raster pixels.
    core_ids, core_conf:
        Provisional segment ids (uint32, 0 = none) and confidence 0-100 (uint8) of the core.
    tile_ids:
        Provisional ids of the whole tile (int64, ``tile_size x tile_size``; all 0 for a
        tile without a result).
    """

    row: int
    col: int
    core_window: Window
    core_ids: np.ndarray
    core_conf: np.ndarray
    tile_ids: np.ndarray


@dataclass
class SegmentTable:
    """The provisional segments 0..n-1 of a stitcher (id 0 = no segment).

    Attributes
    ----------
    classes:
        Class Value of every id.
    is_thing:
        Thing flag of every id.
    present:
        Whether the id has pixels in a core (only those get an instance id).
    roots:
        Union-find root of every id (ids with one root are one instance).
    """

    classes: np.ndarray
    is_thing: np.ndarray
    present: np.ndarray
    roots: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


#: Border side of a tile -> (side of the neighbour that faces it, row step, col step).
_FACING = {"left": ("right", 0, -1), "right": ("left", 0, 1), "top": ("bottom", -1, 0), "bottom": ("top", 1, 0)}


@dataclass
class BlockResult:
    """One block of tiles stitched on a worker (provisional ids are local to the block, 0 = none).

    Attributes
    ----------
    index:
        (block row, block column).
    core_window:
        The block core in raster pixels (the pixels it decides).
    core_ids, core_conf:
        Provisional segment id (uint32) and confidence 0-100 (uint8) of the core.
    segments:
        The block's provisional segments (:meth:`TileStitcher.export_segments`).
    strips:
        Overlap strips (provisional ids, uint32) of the block's border tiles that face a
        tile of another block, keyed by ``(side, (row, col))``: the side of the tile
        (``"left"``, ``"right"``, ``"top"``, ``"bottom"``) and the tile in the raster grid.
    n_merges:
        Tile-overlap matches inside the block.
    seconds:
        Time spent reading, predicting and stitching on the worker.
    """

    index: tuple[int, int]
    core_window: Window
    core_ids: np.ndarray
    core_conf: np.ndarray
    segments: SegmentTable
    strips: dict[tuple[str, tuple[int, int]], np.ndarray] = field(default_factory=dict)
    n_merges: int = 0
    seconds: dict = field(default_factory=dict)


class BlockCollector:
    """Gathers the stitched tiles of one block into a :class:`BlockResult` (a tile sink).

    Parameters
    ----------
    blocks:
        The raster's blocks.
    block:
        (block row, block column); :attr:`grid` is its own tile grid.
    """

    def __init__(self, blocks: TileBlocks, block: tuple[int, int]):
        self.block = block
        self.grid = blocks.block_grid(block)
        self._first = blocks.first_tile(block)
        self._n_tiles = (blocks.grid.n_rows, blocks.grid.n_cols)
        self.core_ids = np.zeros((self.grid.height, self.grid.width), dtype=np.uint32)
        self.core_conf = np.zeros((self.grid.height, self.grid.width), dtype=np.uint8)
        self.strips: dict[tuple[str, tuple[int, int]], np.ndarray] = {}

    def __call__(self, tile: StitchedTile) -> None:
        """Place a tile's core in the block and keep the strips that face other blocks."""
        g = self.grid
        w = tile.core_window
        r0, c0 = int(w.row_off) - g.row_off, int(w.col_off) - g.col_off
        sl = (slice(r0, r0 + int(w.height)), slice(c0, c0 + int(w.width)))
        self.core_ids[sl] = tile.core_ids
        self.core_conf[sl] = tile.core_conf
        t, o = g.tile_size, g.overlap
        if o == 0:
            return
        r, c = self._first[0] + tile.row, self._first[1] + tile.col  # in the raster grid
        n_rows, n_cols = self._n_tiles
        ids = tile.tile_ids
        for side, on_border, has_neighbour, strip in (
                ("left", tile.col == 0, c > 0, ids[:, :o]),
                ("right", tile.col == g.n_cols - 1, c + 1 < n_cols, ids[:, t - o:]),
                ("top", tile.row == 0, r > 0, ids[:o, :]),
                ("bottom", tile.row == g.n_rows - 1, r + 1 < n_rows, ids[t - o:, :])):
            if on_border and has_neighbour:
                self.strips[(side, (r, c))] = strip.astype(np.uint32)

    def result(self, stitcher: "TileStitcher", seconds: dict | None = None) -> BlockResult:
        """The block's result, with the segments of the ``stitcher`` that stitched its tiles."""
        return BlockResult(self.block, self.grid.window, self.core_ids, self.core_conf, stitcher.export_segments(),
                           self.strips, stitcher.n_merges, dict(seconds or {}))


class TileStitcher:
    """Stitches per-tile panoptic results into one provisional id space.

    Two ways to feed it, not to be mixed: :meth:`add_tile` for every tile of
    :attr:`grid` in raster order, or :meth:`absorb` for the :class:`BlockResult` of
    every block of the grid (in any order).

    Parameters
    ----------
    grid:
        The tile grid (tiles must be added row by row, left to right).
    merge_iou:
        IoU inside the overlap strip above which two same-class thing segments of
        neighbouring tiles are the same instance.
    """

    def __init__(self, grid: TileGrid, merge_iou: float):
        self.grid = grid
        self.merge_iou = float(merge_iou)
        self.uf = UnionFind()
        self.uf.add(1)  # id 0 = no segment
        self._cls = np.zeros(1024, dtype=np.int64)
        self._thing = np.zeros(1024, dtype=bool)
        self._present = np.zeros(1024, dtype=bool)
        self._bottom: list[np.ndarray | None] = [None] * grid.n_cols
        self._right: np.ndarray | None = None
        self._next = (0, 0)
        self._seams: dict[tuple[str, tuple[int, int]], np.ndarray] = {}
        self.n_merges = 0

    @property
    def n_segments(self) -> int:
        """Provisional segments registered so far (id 0 not counted)."""
        return self.uf.n - 1

    def _append(self, classes: np.ndarray, is_thing: np.ndarray, present: np.ndarray | None = None,
                parents: np.ndarray | None = None) -> int:
        """New provisional ids for segments of the given classes; return the first one."""
        k = len(classes)
        if self.uf.n + k >= np.iinfo(np.uint32).max:
            raise ModelError("More than 4 billion segments in one raster; split the raster into parts and run the "
                             "prediction on each part.")
        first = self.uf.add(k, parents)
        need = self.uf.n
        if need > len(self._cls):
            cap = max(need, 2 * len(self._cls))
            for name in ("_cls", "_thing", "_present"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        self._cls[first:need] = classes
        self._thing[first:need] = is_thing
        if present is not None:
            self._present[first:need] = present
        return first

    def _register(self, result: PanopticResult, valid: np.ndarray) -> np.ndarray:
        """Provisional id of every pixel of one tile's result."""
        seg_map = np.asarray(result.segment_map)
        table = result.segments
        if len(table) == 0:
            return np.zeros(seg_map.shape, dtype=np.int64)
        local = table["id"].to_numpy(dtype=np.int64)
        top = int(max(local.max(), seg_map.max()))
        if local.min() < 1:
            raise ModelError("The predictor returned a segment with id < 1; segment ids start at 1 (0 = void). Make "
                             "its predict_tiles number segments from 1 (with a geomax model, report this as a bug).")
        first = self._append(table["class_value"].to_numpy(dtype=np.int64), table["is_thing"].to_numpy(dtype=bool))
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[local] = np.arange(first, first + len(local), dtype=np.int64)
        prov = lut[seg_map]
        if np.count_nonzero(prov) != np.count_nonzero(seg_map):  # unknown ids map to 0
            raise ModelError("The predictor's segment_map holds ids that are not in its segments table. Make its "
                             "predict_tiles list every id of segment_map (except 0) in segments (with a geomax "
                             "model, report this as a bug).")
        prov[~valid] = 0
        return prov

    def merge_strips(self, a: np.ndarray, b: np.ndarray) -> int:
        """Join the thing segments that match in two predictions of one overlap strip.

        ``a`` comes from the tile on the left / above, ``b`` from its neighbour (provisional
        ids of this stitcher, same shape). Returns the number of matches (added to
        :attr:`n_merges`).
        """
        pairs = match_overlap(a, b, self._cls, self._thing, self.merge_iou)
        for x, y in pairs:
            self.uf.union(x, y)
        self.n_merges += len(pairs)
        return len(pairs)

    def add_tile(self, row: int, col: int, result: PanopticResult | None, valid: np.ndarray) -> StitchedTile:
        """Add the next tile of :attr:`grid` and match it with its left and upper neighbours.

        ``result`` may be ``None`` for a tile without a single valid pixel.
        """
        if (row, col) != self._next:
            raise RuntimeError(f"tiles must be added in raster order: expected {self._next}, got {(row, col)}")
        g = self.grid
        t, o = g.tile_size, g.overlap
        if result is None:
            prov = np.zeros((t, t), dtype=np.int64)
            conf = np.zeros((t, t), dtype=np.float32)
        else:
            if tuple(result.segment_map.shape) != (t, t):
                raise ModelError(f"The predictor returned a {tuple(result.segment_map.shape)} result for a "
                                 f"{t} x {t} tile; results must have the tile's size. Make its predict_tiles "
                                 "crop any padding off (with a geomax model, report this as a bug).")
            prov = self._register(result, valid)
            conf = np.asarray(result.confidence, dtype=np.float32)
        if o > 0:
            if col > 0 and self._right is not None:
                self.merge_strips(self._right, prov[:, :o])
            above = self._bottom[col]
            if row > 0 and above is not None:
                self.merge_strips(above, prov[:o, :])
            # uint32 like the scratch raster: half the memory of the strip state
            self._right = prov[:, t - o:].astype(np.uint32)
            self._bottom[col] = prov[t - o:, :].astype(np.uint32)
        rs, cs = g.core_slices(row, col)
        core = prov[rs, cs]
        self._present[core.ravel()] = True
        core_conf = np.where(core > 0, np.clip(np.rint(conf[rs, cs] * 100), 1, 100), 0).astype(np.uint8)
        self._next = (row, col + 1) if col + 1 < g.n_cols else (row + 1, 0)
        return StitchedTile(row, col, g.core_window(row, col), core.astype(np.uint32), core_conf, prov)

    def export_segments(self) -> SegmentTable:
        """Classes, thing flags, presence and union-find roots of the provisional ids 0..n-1."""
        n = self.uf.n
        return SegmentTable(self._cls[:n].copy(), self._thing[:n].copy(), self._present[:n].copy(), self.uf.roots())

    def absorb(self, block: BlockResult) -> np.ndarray:
        """Take one block stitched elsewhere; return its core ids shifted into this stitcher's ids.

        The block's ids 1..n-1 become new ids (its unions kept), and each of its border
        strips is matched with the strip of the facing tile of a block absorbed earlier
        (or kept until that block arrives).
        """
        seg = block.segments
        offset = self.uf.n - 1  # block id i >= 1 -> offset + i
        self._append(seg.classes[1:], seg.is_thing[1:], seg.present[1:], parents=seg.roots[1:] + offset)
        self.n_merges += block.n_merges

        def shift(ids: np.ndarray) -> np.ndarray:
            return np.where(ids > 0, ids.astype(np.int64) + offset, 0)

        for (side, (r, c)), strip in block.strips.items():
            other_side, dr, dc = _FACING[side]
            facing = self._seams.pop((other_side, (r + dr, c + dc)), None)
            if facing is None:
                self._seams[(side, (r, c))] = shift(strip)
            elif side in ("left", "top"):  # the facing tile is on the left / above
                self.merge_strips(facing, shift(strip))
            else:
                self.merge_strips(shift(strip), facing)
        return shift(block.core_ids).astype(np.uint32)

    def finalize(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Return ``(class_lut, instance_lut, n_instances)`` indexed by provisional id.

        Final instance ids 1..n follow the order of the provisional ids (tile order, or
        block arrival order after :meth:`absorb`); only instances with pixels in a core
        get one.
        """
        n = self.uf.n
        roots = self.uf.roots()
        cls = self._cls[:n].copy()
        thing = self._thing[:n]
        present = self._present[:n].copy()
        present[0] = False
        live_roots = np.unique(roots[present & thing])
        inst_of_root = np.zeros(n, dtype=np.int64)
        inst_of_root[live_roots] = np.arange(1, len(live_roots) + 1)
        instance_lut = np.where(thing, inst_of_root[roots], 0)
        cls[0] = 0
        return cls, instance_lut, int(len(live_roots))
