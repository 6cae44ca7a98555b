"""The tile loop that local and distributed inference share.

For the tiles of a stitcher's grid, in raster order and in batches of ``batch_size``:

1. read the tiles by windows (:class:`~geomax.inference.tiling.TileReader`: boundless,
   no-data aware);
2. send the tiles with at least one valid pixel to
   ``predictor.predict_tiles(tiles, valid, windows=..., **options)`` in a background
   thread: the predictor works on batch k+1 (GPU kernels and torch release the GIL)
   while this thread stitches batch k and reads the tiles of batch k+2;
3. check that the predictor returned one result per tile;
4. add every tile to the stitcher (a tile without a valid pixel as an empty one) and
   hand the :class:`~geomax.inference.stitching.StitchedTile` to the sink, which writes
   or collects its core.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, NamedTuple

import numpy as np
from rasterio.windows import Window

from ..errors import ModelError
from ..panoptic import PanopticResult
from .predictor import TilePredictor
from .stitching import StitchedTile, TileStitcher
from .tiling import TileGrid, TileReader

__all__ = ["run_tiles"]

#: The stages :func:`run_tiles` times (seconds, summed over the tiles).
STAGES = ("read", "predict", "stitch")


class _Tile(NamedTuple):
    row: int
    col: int
    window: Window
    data: np.ndarray
    valid: np.ndarray


def _batches(grid: TileGrid, reader: TileReader, batch_size: int, timings: dict) -> Iterator[list[_Tile]]:
    batch: list[_Tile] = []
    for row, col in grid:
        t0 = time.perf_counter()
        window = grid.tile_window(row, col)
        data, valid = reader.read(window)
        timings["read"] += time.perf_counter() - t0
        batch.append(_Tile(row, col, window, data, valid))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_tiles(predictor: TilePredictor, reader: TileReader, stitcher: TileStitcher,
              sink: Callable[[StitchedTile], None], batch_size: int, predict_options: dict | None = None,
              timings: dict | None = None) -> dict:
    """Read, predict and stitch every tile of ``stitcher.grid``, handing each stitched tile to ``sink``.

    Parameters
    ----------
    predictor:
        The per-tile predictor.
    reader:
        Reads the tiles from the input raster (bands in the predictor's order).
    stitcher:
        A fresh stitcher over the grid to run (a raster's grid, or a block's).
    sink:
        Called with every :class:`~geomax.inference.stitching.StitchedTile`, in raster order.
    batch_size:
        Tiles per ``predict_tiles`` call.
    predict_options:
        Keywords for ``predict_tiles``.
    timings:
        Where to add the seconds spent per stage (``read``, ``predict``, ``stitch``; the
        sink's time counts as stitching); a new dict when ``None``.

    Returns
    -------
    dict
        ``timings``.

    Raises
    ------
    ModelError
        The predictor returned a wrong number of results, or malformed ones.
    """
    timings = {} if timings is None else timings
    for stage in STAGES:
        timings.setdefault(stage, 0.0)
    options = dict(predict_options or {})

    def predict(todo: list[_Tile]) -> list[PanopticResult]:
        t0 = time.perf_counter()
        results = predictor.predict_tiles(np.stack([t.data for t in todo]), np.stack([t.valid for t in todo]),
                                          windows=[t.window for t in todo], **options)
        timings["predict"] += time.perf_counter() - t0
        if len(results) != len(todo):
            raise ModelError(f"predict_tiles returned {len(results)} results for {len(todo)} tiles. Make the "
                             "predictor return one result per tile, in order (with a geomax model, report this as a "
                             "bug).")
        return results

    def stitch(batch: list[_Tile], todo: list[_Tile], future: Future | None) -> None:
        results = dict(zip([(t.row, t.col) for t in todo], future.result())) if future is not None else {}
        t0 = time.perf_counter()
        for tile in batch:
            sink(stitcher.add_tile(tile.row, tile.col, results.get((tile.row, tile.col)), tile.valid))
        timings["stitch"] += time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = None
        try:
            for batch in _batches(stitcher.grid, reader, batch_size, timings):
                todo = [t for t in batch if t.valid.any()]  # all-no-data tiles skip the predictor
                previous, in_flight = in_flight, (batch, todo, pool.submit(predict, todo) if todo else None)
                if previous is not None:
                    stitch(*previous)
            if in_flight is not None:
                previous, in_flight = in_flight, None
                stitch(*previous)
        except BaseException:
            if in_flight is not None and in_flight[2] is not None:
                in_flight[2].cancel()
            raise
    return timings
