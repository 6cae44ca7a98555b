"""``predict_raster_distributed``: the tiled inference of ``predict_raster`` on a Dask cluster.

How the work is split (``pip install geomax[dist]`` installs ``dask[distributed]``):

1. each raster's tile grid (the same :class:`~geomax.inference.tiling.TileGrid` as
   :func:`~geomax.inference.predict_raster.predict_raster`) is cut into *blocks* of
   whole tiles. A block's tiles reach ``overlap // 2`` pixels past the block's core on
   the top / left and the rest of the overlap on the bottom / right: that is the halo;
2. a Dask task per block, on any worker: read the block's tiles by windows from the
   raster (workers read the input themselves, so it must be readable there: a shared
   file system or a cloud URL rasterio reads), predict them with the worker's model
   (loaded once per worker and kept), and stitch the block's tiles with the same
   :class:`~geomax.inference.stitching.TileStitcher`. The task returns the block core's
   provisional segment ids and confidence, the provisional segments' classes and
   block-local union-find roots, and the overlap strips of the tiles on the block's
   borders;
3. on the client, blocks are merged as they arrive: their provisional ids are shifted
   into one id space, the block-local roots become unions, and the tiles that face
   each other across a block border are matched in their overlap with the same
   :func:`~geomax.inference.stitching.match_overlap` as inside a block. Every pair of
   neighbouring tiles is therefore matched exactly as in the single-process run, and
   the merged instances are the same (instance ids may be numbered differently);
4. the client rewrites the stitched ids block by block to class Values and final
   instance ids, polygonises them, writes the cloud-optimised GeoTIFF and the features
   (same writer, vectoriser and temporary-name-then-rename as ``predict_raster``).

The client holds only the overlap strips of blocks whose neighbours have not arrived
yet, and a bounded number of block results; memory stays flat as the raster grows.
"""
from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ..errors import ArgumentError, DataError, InputMismatchError, ModelError
from .predict_raster import (RasterPrediction, _check_bands, _check_output, _progress, _resolve_model,
                             finish_outputs, publish_outputs)
from .stitching import TileStitcher, match_overlap
from .tiling import TileGrid, TileReader
from .vectorize import VECTOR_DRIVERS
from .writer import scratch_profile

__all__ = ["predict_raster_distributed", "BlockResult", "predict_block", "cached_predictor", "model_loads", "list_rasters", "local_cluster"]

_RASTER_EXTS = (".tif", ".tiff")
_GDAL_CACHE_MB = 64


# ----------------------------------------------------------------------------- worker side
_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()
_LOADS: dict[str, int] = {}


def model_loads() -> dict[str, int]:
    """How many times each model key was loaded in this process (once, unless the cache was cleared)."""
    return dict(_LOADS)


def cached_predictor(key: str, load: Callable[[], Any]):
    """The predictor cached under ``key`` in this process, loaded with ``load()`` the first time.

    On a Dask worker process this makes every worker load the model once and keep it
    for all its blocks (and for later jobs with the same model).
    """
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load()
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _MODELS[key]


@dataclass(frozen=True)
class _ModelRef:
    """How a worker gets its predictor: a model path, or a factory (cached by ``key``)."""

    kind: str  # "path" | "factory"
    key: str
    source: Any

    def get(self):
        if self.kind == "path":
            return cached_predictor(self.key, lambda: _resolve_model(self.source))
        return cached_predictor(self.key, lambda: _check_predictor(self.source(), "the model factory"))


def _check_predictor(predictor, what: str):
    missing = [a for a in ("n_bands", "class_table", "predict_tiles") if not hasattr(predictor, a)]
    if missing:
        raise ModelError(f"{what} returned {type(predictor).__name__}, which is not a per-tile predictor "
                         f"(it lacks {missing}).")
    return predictor


class _BlockStitcher(TileStitcher):
    """A :class:`TileStitcher` over one block that also keeps the provisional ids of the last tile.

    The strips of the tiles on the block's borders are what the client matches
    against the neighbouring blocks.
    """

    _last_prov: np.ndarray | None = None

    def _register(self, result, valid):
        prov = super()._register(result, valid)
        self._last_prov = prov
        return prov


@dataclass
class BlockResult:
    """What a worker returns for one block (provisional ids are local to the block, 0 = none).

    Attributes
    ----------
    index:
        (block row, block column).
    core_window:
        The block core in raster pixels (the pixels it decides).
    core_ids, core_conf:
        Provisional segment id (uint32) and confidence 0-100 (uint8) of the core.
    seg_class, seg_thing, seg_present, seg_root:
        Class Value, thing flag, "has pixels in the core" and block-local union-find
        root of every provisional id 0..n-1.
    left, right, top, bottom:
        Overlap strips (provisional ids, uint32) of the tiles on each border of the
        block, keyed by the tile's (row, col) in the raster grid; only for borders that
        have a neighbouring block.
    n_merges:
        Tile-overlap matches inside the block.
    seconds:
        Time spent reading, predicting and stitching on the worker.
    """

    index: tuple[int, int]
    core_window: Window
    core_ids: np.ndarray
    core_conf: np.ndarray
    seg_class: np.ndarray
    seg_thing: np.ndarray
    seg_present: np.ndarray
    seg_root: np.ndarray
    left: dict = field(default_factory=dict)
    right: dict = field(default_factory=dict)
    top: dict = field(default_factory=dict)
    bottom: dict = field(default_factory=dict)
    n_merges: int = 0
    seconds: dict = field(default_factory=dict)


def _block_tiles(grid: TileGrid, block_tiles: int, block: tuple[int, int]) -> tuple[range, range]:
    br, bc = block
    rows = range(br * block_tiles, min((br + 1) * block_tiles, grid.n_rows))
    cols = range(bc * block_tiles, min((bc + 1) * block_tiles, grid.n_cols))
    return rows, cols


def predict_block(model, in_raster: str, bands: Sequence[int], grid: TileGrid, block_tiles: int,
                  block: tuple[int, int], batch_size: int = 4, merge_iou: float = 0.5,
                  pass_windows: bool = False, predict_kwargs: dict | None = None) -> BlockResult:
    """Predict and stitch the tiles of one block of a raster's tile grid (the task a worker runs).

    Parameters
    ----------
    model:
        A per-tile predictor, or a model reference resolved to the worker's cached predictor.
    in_raster:
        The raster (readable from this process).
    bands:
        1-based band indexes, in the model's order.
    grid:
        The raster's tile grid (the same as the single-process run's).
    block_tiles:
        Tiles per block side.
    block:
        (block row, block column).
    batch_size:
        Tiles per ``predict_tiles`` call.
    merge_iou:
        IoU in the overlap above which two same-class thing segments are one instance.
    pass_windows:
        Pass the tiles' raster windows to ``predict_tiles`` (``windows=``).
    predict_kwargs:
        More keywords for ``predict_tiles``.

    Returns
    -------
    BlockResult
    """
    t_start = time.perf_counter()
    predictor = model.get() if isinstance(model, _ModelRef) else model
    rows, cols = _block_tiles(grid, block_tiles, block)
    t, o, s = grid.tile_size, grid.overlap, grid.stride
    r_first, c_first = rows.start * s, cols.start * s
    core_h = min(len(rows) * s, grid.height - r_first)
    core_w = min(len(cols) * s, grid.width - c_first)
    # the block's own grid: same tiles, shifted to the block's origin (edge clipping agrees with the raster's)
    sub = TileGrid(core_h, core_w, t, o)
    stitcher = _BlockStitcher(sub, merge_iou=merge_iou)
    core_ids = np.zeros((core_h, core_w), dtype=np.uint32)
    core_conf = np.zeros((core_h, core_w), dtype=np.uint8)
    out = BlockResult(block, Window(c_first, r_first, core_w, core_h), core_ids, core_conf,
                      *(np.zeros(0),) * 4)
    timings = {"read": 0.0, "predict": 0.0, "stitch": 0.0}
    tiles = [(r, c) for r in rows for c in cols]
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB), rasterio.open(in_raster) as src:
        reader = TileReader(src, bands)
        for k in range(0, len(tiles), batch_size):
            batch = []
            for r, c in tiles[k: k + batch_size]:
                t0 = time.perf_counter()
                win = grid.tile_window(r, c)
                data, valid = reader.read(win)
                timings["read"] += time.perf_counter() - t0
                batch.append((r, c, win, data, valid))
            todo = [p for p in batch if p[4].any()]  # all-no-data tiles skip the predictor, as in predict_raster
            results = {}
            if todo:
                t0 = time.perf_counter()
                kw = dict(predict_kwargs or {})
                if pass_windows:
                    kw["windows"] = [p[2] for p in todo]
                got = predictor.predict_tiles(np.stack([p[3] for p in todo]), np.stack([p[4] for p in todo]), **kw)
                if len(got) != len(todo):
                    raise ModelError(f"predict_tiles returned {len(got)} results for {len(todo)} tiles.")
                results = {(p[0], p[1]): res for p, res in zip(todo, got)}
                timings["predict"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for r, c, _, _, valid in batch:
                lr, lc = r - rows.start, c - cols.start
                stitcher._last_prov = None
                ids, conf = stitcher.add_tile(lr, lc, results.get((r, c)), valid)
                w = sub.core_window(lr, lc)
                sl = (slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
                core_ids[sl] = ids
                core_conf[sl] = conf
                if o > 0:
                    prov = stitcher._last_prov
                    if prov is None:  # a tile without a valid pixel (or without segments)
                        prov = np.zeros((t, t), dtype=np.int64)
                    if lc == 0 and c > 0:
                        out.left[(r, c)] = prov[:, :o].astype(np.uint32)
                    if lc == len(cols) - 1 and c + 1 < grid.n_cols:
                        out.right[(r, c)] = prov[:, t - o:].astype(np.uint32)
                    if lr == 0 and r > 0:
                        out.top[(r, c)] = prov[:o, :].astype(np.uint32)
                    if lr == len(rows) - 1 and r + 1 < grid.n_rows:
                        out.bottom[(r, c)] = prov[t - o:, :].astype(np.uint32)
            timings["stitch"] += time.perf_counter() - t0
    n = stitcher.uf.n
    out.seg_class = stitcher._cls[:n].copy()
    out.seg_thing = stitcher._thing[:n].copy()
    out.seg_present = stitcher._present[:n].copy()
    out.seg_root = stitcher.uf.roots()
    out.n_merges = stitcher.n_merges
    timings["total"] = time.perf_counter() - t_start
    out.seconds = timings
    return out


# ----------------------------------------------------------------------------- client side
class _RasterMerge(TileStitcher):
    """Merges the block results of one raster into one provisional id space (client side).

    Reuses :class:`TileStitcher`'s union-find, segment tables and :meth:`finalize`.
    """

    def __init__(self, grid: TileGrid, block_tiles: int, merge_iou: float):
        super().__init__(grid, merge_iou=merge_iou)
        self.block_tiles = block_tiles
        self.n_block_rows = -(-grid.n_rows // block_tiles)
        self.n_block_cols = -(-grid.n_cols // block_tiles)
        self._strips: dict[tuple[int, int], dict[str, dict]] = {}
        self.n_done = 0

    @property
    def n_blocks(self) -> int:
        return self.n_block_rows * self.n_block_cols

    def add_block(self, res: BlockResult) -> np.ndarray:
        """Take one block; return its core ids in the raster's provisional id space."""
        n_local = len(res.seg_class)
        offset = self.uf.n - 1  # local id i >= 1 -> offset + i
        first = self.uf.add(n_local - 1)
        assert first == offset + 1
        self._grow(self.uf.n)
        sl = slice(first, first + n_local - 1)
        self._cls[sl] = res.seg_class[1:]
        self._thing[sl] = res.seg_thing[1:]
        self._present[sl] = res.seg_present[1:]
        # block-local roots are roots of fresh singletons here: link them directly
        self.uf.parent[sl] = res.seg_root[1:].astype(np.int64) + offset
        self.n_merges += res.n_merges

        def shift(a: np.ndarray) -> np.ndarray:
            return np.where(a > 0, a.astype(np.int64) + offset, 0)

        strips = {side: {k: shift(v) for k, v in getattr(res, side).items()}
                  for side in ("left", "right", "top", "bottom")}
        br, bc = res.index
        self._strips[(br, bc)] = strips
        # match every pair of tiles facing each other across a block border, as predict_raster does
        for (nr, nc), mine, theirs in (((br, bc - 1), "left", "right"), ((br, bc + 1), "right", "left"),
                                       ((br - 1, bc), "top", "bottom"), ((br + 1, bc), "bottom", "top")):
            other = self._strips.get((nr, nc))
            if other is None:
                continue
            for (r, c), strip in strips[mine].items():
                key = {"left": (r, c - 1), "right": (r, c + 1), "top": (r - 1, c), "bottom": (r + 1, c)}[mine]
                a, b = other[theirs].pop(key), strip
                if mine in ("left", "top"):  # a = the tile on the left / above, as in TileStitcher
                    pairs = match_overlap(a, b, self._cls, self._thing, self.merge_iou)
                else:
                    pairs = match_overlap(b, a, self._cls, self._thing, self.merge_iou)
                for x, y in pairs:
                    self.uf.union(x, y)
                self.n_merges += len(pairs)
            strips[mine] = {}
        for key in [k for k, v in self._strips.items() if not any(v.values())]:
            del self._strips[key]
        self.n_done += 1
        return shift(res.core_ids).astype(np.uint32)


@dataclass
class _Job:
    in_raster: Path
    out_raster: Path
    out_features: Path | None
    bands: list[int]
    grid: TileGrid | None = None
    merge: _RasterMerge | None = None
    work: Path | None = None
    partial_raster: Path | None = None
    partial_features: Path | None = None
    ids_dst: Any = None
    conf_dst: Any = None
    timings: dict = field(default_factory=dict)
    t_start: float = 0.0


def list_rasters(in_rasters) -> list[Path]:
    """The input rasters of a job: one path, a list of paths, or a folder (its ``*.tif`` / ``*.tiff``).

    Raises
    ------
    DataError
        A path does not exist, or a folder holds no GeoTIFF.
    """
    if isinstance(in_rasters, (str, os.PathLike)):
        path = Path(in_rasters)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _RASTER_EXTS and p.is_file())
            if not found:
                raise DataError(f"The folder '{path}' holds no GeoTIFF (.tif / .tiff) to predict.")
            return found
        paths = [path]
    else:
        paths = [Path(p) for p in in_rasters]
        if not paths:
            raise ArgumentError("in_rasters is an empty list; give at least one raster.")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"Input raster(s) {missing} do not exist.")
    return paths


def _outputs(rasters: list[Path], out_rasters, out_features) -> list[tuple[Path, Path | None]]:
    single = len(rasters) == 1 and isinstance(out_rasters, (str, os.PathLike)) \
        and Path(out_rasters).suffix.lower() in _RASTER_EXTS
    if single:
        outs = [Path(out_rasters)]
    elif isinstance(out_rasters, (str, os.PathLike)):
        folder = Path(out_rasters)
        if folder.suffix.lower() in _RASTER_EXTS:
            raise ArgumentError(f"{len(rasters)} input rasters need an output folder, not the file '{folder}'.")
        outs = [folder / f"{p.stem}_panoptic.tif" for p in rasters]
    else:
        outs = [Path(p) for p in out_rasters]
        if len(outs) != len(rasters):
            raise ArgumentError(f"{len(rasters)} input rasters but {len(outs)} output rasters; give one output "
                                "per input, or an output folder.")
    if len({p.resolve() for p in outs}) != len(outs):
        raise ArgumentError("Two inputs would write the same output raster (same file name in different "
                            "folders?); give the output paths as a list.")
    if out_features is None:
        feats: list = [None] * len(outs)
    elif isinstance(out_features, str) and out_features.startswith(".") and "/" not in out_features:
        feats = [o.with_name(o.stem + out_features) for o in outs]  # an extension: next to each raster
    elif isinstance(out_features, (str, os.PathLike)):
        if len(outs) != 1:
            raise ArgumentError("Several rasters need out_features as a list of paths or an extension "
                                "such as '.gpkg' (features next to each output raster).")
        feats = [Path(out_features)]
    else:
        feats = [Path(p) for p in out_features]
        if len(feats) != len(outs):
            raise ArgumentError(f"{len(outs)} output rasters but {len(feats)} feature outputs.")
    return list(zip(outs, feats))


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A ``dask.distributed.LocalCluster`` of worker processes set up for model inference.

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off
    glibc's adaptive allocation thresholds: every large tensor is then mapped and
    unmapped anew, and a PyTorch forward on the CPU runs about 2-3 times slower (measured
    on this project's networks). This cluster's workers start without it.

    Parameters
    ----------
    n_workers:
        Worker processes (default: Dask's choice from the CPU count).
    threads_per_worker:
        Threads per worker (1: one block at a time per worker, one model copy each).
    **kwargs:
        More ``LocalCluster`` arguments.
    """
    import dask
    from distributed import LocalCluster

    kwargs.setdefault("dashboard_address", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, **kwargs)


def _get_client(client):
    try:
        from distributed import Client, get_client
    except ImportError as exc:
        raise ArgumentError("Distributed inference needs Dask: pip install 'geomax[dist]' "
                            "(dask[distributed]).") from exc
    if client is None:
        try:
            return get_client(), False
        except ValueError:
            return Client(local_cluster()), True
    if isinstance(client, str):
        try:
            return Client(client), True
        except OSError as exc:
            raise ArgumentError(f"Cannot reach the Dask scheduler at '{client}': {exc}. Start it with "
                                "`dask scheduler` (and workers with `dask worker <address>`).") from exc
    if not hasattr(client, "submit"):
        raise ArgumentError(f"client must be a dask.distributed.Client, a scheduler address or None, "
                            f"got {type(client).__name__}.")
    return client, False


def _model_reference(model, client):
    """(predictor on the client for checks, what the tasks get)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model).resolve()
        predictor = _resolve_model(path)
        return predictor, _ModelRef("path", f"path:{path}", str(path))
    if callable(model) and not hasattr(model, "predict_tiles"):
        from dask.base import tokenize

        predictor = _check_predictor(model(), "the model factory")
        return predictor, _ModelRef("factory", f"factory:{tokenize(model)}", model)
    predictor = _resolve_model(model)
    # one copy per worker, deserialised once and kept while the job runs
    return predictor, client.scatter(predictor, broadcast=True, hash=False)


def predict_raster_distributed(
    model,
    in_rasters,
    out_rasters,
    out_features=None,
    client=None,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    block_size: int = 2048,
    bands: Sequence[int] | None = None,
    simplify_tolerance: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    merge_iou: float = 0.5,
    resources: dict | None = None,
    max_blocks_in_flight: int | None = None,
    **predict_kwargs,
) -> list[RasterPrediction]:
    """Panoptic segmentation of one or many rasters on a Dask cluster, as :func:`predict_raster` does it.

    The outputs are those of :func:`~geomax.inference.predict_raster.predict_raster` with
    the same arguments: the same panoptic COG and features, up to the numbering of the
    thing instances (objects crossing block borders are merged exactly as objects
    crossing tile borders).

    Parameters
    ----------
    model:
        A model path (folder, ``.emd`` or ``.dlpk``; recommended: each worker loads it once
        from that path, onto its GPU when it has one, so the path must be readable by the
        workers; the client loads it too, once, to check bands and tile size), a
        zero-argument picklable factory returning a per-tile predictor (called once per
        worker and once on the client; keep it small, it travels with every task), or a
        per-tile predictor object (sent to every worker once).
    in_rasters:
        One raster path, a list of paths, or a folder (all its ``.tif`` / ``.tiff``).
        All rasters run as one job. Workers read them, so they must be readable there
        (shared file system, or a URL / ``/vsis3/`` path rasterio reads).
    out_rasters:
        For one input: the output ``.tif``. Otherwise an output folder (``<stem>_panoptic.tif``
        per input) or a list of ``.tif`` paths. Written by the client process.
    out_features:
        ``None`` (no features), a path (one input), a list of paths, or an extension such
        as ``".gpkg"``: features next to each output raster with that extension.
    client:
        A ``dask.distributed.Client``, a scheduler address (``"tcp://host:8786"``), or
        ``None``: the current client if one exists, else a ``LocalCluster`` of worker
        processes (closed at the end).
    tile_size, overlap, batch_size, bands, simplify_tolerance, overwrite, merge_iou:
        As in :func:`~geomax.inference.predict_raster.predict_raster`.
    progress:
        Show a progress bar of blocks done / total.
    block_size:
        Side of a block's core in pixels, rounded down to whole tiles (``tile_size -
        overlap`` pixels each; at least one tile). One block is one task; its halo is the
        tile overlap. Larger blocks: fewer tasks and less per-task overhead; smaller
        blocks: more parallelism on small rasters.
    resources:
        Dask worker resources each block task needs, e.g. ``{"GPU": 1}`` with workers
        started as ``dask worker ... --resources GPU=1``.
    max_blocks_in_flight:
        Block tasks submitted ahead of the client (bounds the memory of finished results
        waiting for the client). Default: 4 per worker thread, at least 8.
    **predict_kwargs:
        Passed to ``predict_tiles`` (e.g. post-processing thresholds).

    Returns
    -------
    list of RasterPrediction
        One per input raster, in input order (``timings`` sums the workers' ``read`` /
        ``predict`` / ``stitch`` seconds; ``merge`` is the client's block merging).

    Raises
    ------
    DataError, ModelError, InputMismatchError, ArgumentError, OutputExistsError
        As :func:`predict_raster`, for any of the rasters, before any output is written.
    """
    t_job = time.perf_counter()
    rasters = list_rasters(in_rasters)
    pairs = _outputs(rasters, out_rasters, out_features)

    tile_size, overlap, batch_size, block_size = int(tile_size), int(overlap), int(batch_size), int(block_size)
    if tile_size < 1 or overlap < 0 or batch_size < 1 or block_size < 1:
        raise ArgumentError(f"tile_size ({tile_size}), batch_size ({batch_size}) and block_size ({block_size}) "
                            f"must be >= 1 and overlap ({overlap}) >= 0.")
    if tile_size < 2 * overlap:
        raise ArgumentError(f"tile_size={tile_size} is smaller than 2 * overlap ({2 * overlap}). Use tile_size >= "
                            f"{2 * overlap} or a smaller overlap.")
    if not 0.0 < merge_iou <= 1.0:
        raise ArgumentError(f"merge_iou must be in (0, 1], got {merge_iou}.")
    for out_r, out_f in pairs:
        if out_r.suffix.lower() not in _RASTER_EXTS:
            raise ArgumentError(f"out_raster '{out_r}' must be a GeoTIFF (.tif).")
        if out_f is not None and out_f.suffix.lower() not in VECTOR_DRIVERS:
            raise ArgumentError(f"out_features '{out_f}': unknown extension '{out_f.suffix}'. "
                                f"Use one of {sorted(VECTOR_DRIVERS)} (.gpkg recommended).")
    for src_path, (out_r, out_f) in zip(rasters, pairs):
        if out_r.resolve() == src_path.resolve():
            raise ArgumentError(f"out_raster is the input raster '{src_path}'; choose another output name.")
        if out_f is not None and out_f.resolve() == out_r.resolve():
            raise ArgumentError(f"out_features and out_raster are the same file ('{out_r}').")
        _check_output(out_r, overwrite, "output raster")
        if out_f is not None:
            _check_output(out_f, overwrite, "output features")

    client, own_client = _get_client(client)
    try:
        predictor, model_ref = _model_reference(model, client)
        multiple = int(getattr(predictor, "tile_multiple", 1) or 1)
        if tile_size % multiple:
            raise InputMismatchError(f"tile_size={tile_size} is not a multiple of {multiple}, which the model needs. "
                                     f"Use tile_size={max(multiple, tile_size // multiple * multiple)}.")
        pass_windows = "windows" in inspect.signature(predictor.predict_tiles).parameters
        block_tiles = max(1, block_size // (tile_size - overlap))

        jobs: list[_Job] = []
        for src_path, (out_r, out_f) in zip(rasters, pairs):
            try:
                src = rasterio.open(src_path)
            except RasterioIOError as exc:
                raise DataError(f"Cannot read the input raster '{src_path}' (corrupt or not a raster): {exc}") from exc
            with src:
                band_idx = _check_bands(src, bands, predictor, src_path)
                if src.crs is None:
                    warnings.warn(f"'{src_path}' has no CRS: the outputs will have none either, and areas are in "
                                  "pixel-grid units.", UserWarning, stacklevel=2)
                job = _Job(src_path.resolve(), out_r, out_f, band_idx)
                job.grid = TileGrid(src.height, src.width, tile_size, overlap)
            jobs.append(job)

        tasks = []
        for j, job in enumerate(jobs):
            job.merge = _RasterMerge(job.grid, block_tiles, merge_iou)
            tasks += [(j, (br, bc)) for br in range(job.merge.n_block_rows) for bc in range(job.merge.n_block_cols)]
        return _run(client, jobs, tasks, model_ref, predictor, block_tiles, batch_size, merge_iou, pass_windows,
                    predict_kwargs, resources, max_blocks_in_flight, simplify_tolerance, overwrite, progress, t_job)
    finally:
        if own_client:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _open_job(job: _Job) -> None:
    job.t_start = time.perf_counter()
    job.timings = dict.fromkeys(("read", "predict", "stitch", "merge", "finalize", "cog", "features"), 0.0)
    out_r, out_f = job.out_raster, job.out_features
    job.work = Path(tempfile.mkdtemp(prefix=".geomax-predict-", dir=out_r.parent))
    tag = uuid.uuid4().hex[:8]
    job.partial_raster = out_r.parent / f".{out_r.stem}.partial-{tag}{out_r.suffix}"
    job.partial_features = (out_f.parent / f".{out_f.stem}.partial-{tag}{out_f.suffix}" if out_f is not None else None)
    with rasterio.open(job.in_raster) as src:
        job.ids_dst = rasterio.open(job.work / "ids.tif", "w", **scratch_profile(src, "uint32"))
        job.conf_dst = rasterio.open(job.work / "conf.tif", "w", **scratch_profile(src, "uint8"))


def _close_job(job: _Job) -> None:
    for name in ("ids_dst", "conf_dst"):
        dst = getattr(job, name)
        if dst is not None and not dst.closed:
            dst.close()


def _discard_job(job: _Job) -> None:
    _close_job(job)
    for p in (job.partial_raster, job.partial_features):
        if p is not None:
            for q in p.parent.glob(p.stem + ".*"):
                q.unlink(missing_ok=True)
    if job.work is not None:
        shutil.rmtree(job.work, ignore_errors=True)


def _finish_job(job: _Job, class_table, simplify_tolerance, overwrite) -> RasterPrediction:
    """Final ids, block rewrite, polygons, COG and features (as predict_raster's last steps)."""
    _close_job(job)
    try:
        with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB), rasterio.open(job.in_raster) as src:
            n_instances, n_features = finish_outputs(
                src, job.merge, job.work, class_table, job.partial_raster, job.partial_features,
                job.out_features, simplify_tolerance, job.timings)
        publish_outputs(job.partial_raster, job.out_raster, job.partial_features, job.out_features, overwrite)
    except BaseException:
        _discard_job(job)
        raise
    shutil.rmtree(job.work, ignore_errors=True)
    job.timings["total"] = time.perf_counter() - job.t_start
    return RasterPrediction(job.out_raster, job.out_features, len(job.grid), n_instances, n_features,
                            job.merge.n_merges, job.timings)


def _run(client, jobs, tasks, model_ref, predictor, block_tiles, batch_size, merge_iou, pass_windows,
         predict_kwargs, resources, max_in_flight, simplify_tolerance, overwrite, progress, t_job):
    from distributed import as_completed

    if max_in_flight is None:
        n_threads = sum(client.nthreads().values()) or 1
        max_in_flight = max(8, 4 * n_threads)
    results: list[RasterPrediction | None] = [None] * len(jobs)
    pbar = _progress(len(tasks), progress)
    queue = list(reversed(tasks))
    done = 0
    opened: set[int] = set()
    finished: set[int] = set()
    futures = as_completed()
    job_of: dict = {}

    def submit_more():
        while queue and futures.count() < max_in_flight:
            j, block = queue.pop()
            job = jobs[j]
            fut = client.submit(predict_block, model_ref, str(job.in_raster), job.bands, job.grid, block_tiles,
                                block, batch_size, merge_iou, pass_windows, predict_kwargs,
                                key=f"geomax-block-{uuid.uuid4().hex}", resources=resources, pure=False)
            job_of[fut.key] = j
            futures.add(fut)

    try:
        submit_more()
        for fut in futures:
            j = job_of.pop(fut.key)
            res = fut.result()
            del fut
            job = jobs[j]
            if j not in opened:
                _open_job(job)
                opened.add(j)
            t0 = time.perf_counter()
            core_ids = job.merge.add_block(res)
            job.ids_dst.write(core_ids, 1, window=res.core_window)
            job.conf_dst.write(res.core_conf, 1, window=res.core_window)
            for k in ("read", "predict", "stitch"):
                job.timings[k] += res.seconds.get(k, 0.0)
            job.timings["merge"] += time.perf_counter() - t0
            submit_more()
            done += 1
            if pbar is not None:
                pbar.comment = f"blocks {done}/{len(tasks)}"
                pbar.update(done)
            if job.merge.n_done == job.merge.n_blocks:
                results[j] = _finish_job(job, predictor.class_table, simplify_tolerance, overwrite)
                finished.add(j)
    except BaseException:
        for fut in list(futures.futures):
            fut.cancel()
        for j in opened - finished:
            _discard_job(jobs[j])
        raise
    finally:
        if pbar is not None:
            try:
                pbar.on_iter_end()
            except Exception:  # the bar's own clean-up must never hide the real outcome
                pass
    return results
