"""Cross-tile stitching: nearest-centre cores and instance merging across overlaps.

Every tile's segments get *provisional* ids, unique over the whole raster. Each
pixel takes the provisional id of the tile whose core holds it (the tile whose
centre is nearest). Thing segments of two neighbouring tiles are merged into one
instance when they have the same class and overlap well (IoU inside the strip
both tiles predicted) -- a union-find over provisional ids records the merges.
Only a thin band of state is kept: the bottom overlap strip of the previous
tile row (one per tile column) and the right strip of the previous tile.

After the last tile, :meth:`TileStitcher.finalize` turns the union-find into
look-up tables ``provisional id -> class Value`` and ``provisional id -> final
instance id`` (1..n, unique across the raster, 0 for stuff and void), applied
when the stitched raster is rewritten block by block.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..panoptic import PanopticResult
from .tiling import TileGrid

__all__ = ["UnionFind", "TileStitcher", "match_overlap"]


class UnionFind:
    """Disjoint sets over integer ids 0..n-1 that grow on demand (array-based)."""

    def __init__(self, capacity: int = 1024):
        self.parent = np.arange(capacity, dtype=np.int64)
        self.n = 0

    def add(self, k: int) -> int:
        """Create ``k`` new singleton sets; return the first new id."""
        first = self.n
        need = self.n + k
        if need > len(self.parent):
            cap = max(need, 2 * len(self.parent))
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), cap, dtype=np.int64)])
        self.n = need
        return first

    def find(self, x: int) -> int:
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


class TileStitcher:
    """Stitches per-tile panoptic results, tile by tile in raster order.

    Parameters
    ----------
    grid:
        The tile grid (tiles must be added row by row, left to right).
    merge_iou:
        IoU inside the overlap strip above which two same-class thing segments of
        neighbouring tiles are the same instance.
    """

    def __init__(self, grid: TileGrid, merge_iou: float = 0.5):
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
        self.n_merges = 0

    @property
    def n_segments(self) -> int:
        """Provisional segments registered so far (id 0 not counted)."""
        return self.uf.n - 1

    def _grow(self, need: int) -> None:
        if need > len(self._cls):
            cap = max(need, 2 * len(self._cls))
            for name in ("_cls", "_thing", "_present"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)

    def _register(self, result: PanopticResult, valid: np.ndarray) -> np.ndarray:
        """Provisional id of every pixel of one tile's result."""
        seg_map = np.asarray(result.segment_map)
        table = result.segments
        if len(table) == 0:
            return np.zeros(seg_map.shape, dtype=np.int64)
        local = table["id"].to_numpy(dtype=np.int64)
        top = int(max(local.max(), seg_map.max()))
        if local.min() < 1:
            raise ModelError("The predictor returned a segment with id < 1; segment ids start at 1 (0 = void).")
        if self.uf.n + len(local) >= np.iinfo(np.uint32).max:
            raise ModelError("More than 4 billion segments in one raster; split the raster into parts.")
        first = self.uf.add(len(local))
        self._grow(self.uf.n)
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[local] = np.arange(first, first + len(local), dtype=np.int64)
        self._cls[first: first + len(local)] = table["class_value"].to_numpy(dtype=np.int64)
        self._thing[first: first + len(local)] = table["is_thing"].to_numpy(dtype=bool)
        prov = lut[seg_map]
        if np.count_nonzero(prov) != np.count_nonzero(seg_map):  # unknown ids map to 0
            raise ModelError("The predictor's segment_map holds ids that are not in its segments table.")
        prov[~valid] = 0
        return prov

    def add_tile(self, row: int, col: int, result: PanopticResult | None,
                 valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the next tile; return its core as ``(provisional ids uint32, confidence 0-100 uint8)``.

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
                                 f"{t} x {t} tile; results must have the tile's size.")
            prov = self._register(result, valid)
            conf = np.asarray(result.confidence, dtype=np.float32)
        if o > 0:
            pairs = []
            if col > 0 and self._right is not None:
                pairs += match_overlap(self._right, prov[:, :o], self._cls, self._thing, self.merge_iou)
            above = self._bottom[col]
            if row > 0 and above is not None:
                pairs += match_overlap(above, prov[:o, :], self._cls, self._thing, self.merge_iou)
            for a, b in pairs:
                self.uf.union(a, b)
            self.n_merges += len(pairs)
            # uint32 like the scratch raster: half the memory of the strip state
            self._right = prov[:, t - o:].astype(np.uint32)
            self._bottom[col] = prov[t - o:, :].astype(np.uint32)
        rs, cs = g.core_slices(row, col)
        core = prov[rs, cs]
        self._present[core.ravel()] = True
        core_conf = np.where(core > 0, np.clip(np.rint(conf[rs, cs] * 100), 1, 100), 0).astype(np.uint8)
        self._next = (row, col + 1) if col + 1 < g.n_cols else (row + 1, 0)
        return core.astype(np.uint32), core_conf

    def finalize(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Return ``(class_lut, instance_lut, n_instances)`` indexed by provisional id.

        Final instance ids 1..n follow the order in which instances first appear
        (tile order); only instances with pixels in the stitched raster get one.
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
