"""What a Dask worker runs for distributed inference: its predictor cache and one block's task.

A worker gets its predictor either as a scattered predictor object (Dask hands the
task the object itself) or as a :class:`CachedFactory`: a zero-argument picklable
factory, called once per worker process and kept under a deterministic token of the
factory (:func:`cached_predictor`), so every block of every job with the same
factory reuses one predictor.

:func:`predict_block` reads one block's tiles from the raster, predicts and stitches
them with the same tile loop as the single-process run
(:func:`~geomax.inference.tile_loop.run_tiles`) and returns a
:class:`~geomax.inference.stitching.BlockResult` for the client to merge.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import rasterio

from ..config import TilingConfig
from .job import gdal_env
from .predictor import TilePredictor, check_predictor
from .stitching import BlockCollector, BlockResult, TileStitcher
from .tile_loop import run_tiles
from .tiling import TileBlocks, TileReader

__all__ = ["CachedFactory", "cached_predictor", "model_loads", "predict_block"]

_PREDICTORS: dict[str, TilePredictor] = {}
_PREDICTORS_LOCK = threading.Lock()
_LOADS: dict[str, int] = {}


def model_loads() -> dict[str, int]:
    """How many times each predictor key was loaded in this process (once, unless the cache was cleared)."""
    return dict(_LOADS)


def cached_predictor(key: str, load: Callable[[], TilePredictor]) -> TilePredictor:
    """The predictor cached under ``key`` in this process, loaded with ``load()`` the first time.

    On a Dask worker process this makes every worker load the model once and keep it
    for all its blocks (and for later jobs with the same model).
    """
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = load()
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _PREDICTORS[key]


@dataclass(frozen=True)
class CachedFactory:
    """A predictor factory that each process calls once, caching its result under ``key``.

    Attributes
    ----------
    factory:
        Zero-argument picklable callable returning a :class:`TilePredictor`.
    key:
        Cache key: ``"factory:"`` and a deterministic token of the factory.
    """

    factory: Callable[[], TilePredictor]
    key: str

    @classmethod
    def of(cls, factory: Callable[[], TilePredictor]) -> "CachedFactory":
        """Wrap ``factory``, keyed by Dask's deterministic token of it."""
        from dask.base import tokenize

        return cls(factory, f"factory:{tokenize(factory)}")

    def __call__(self) -> TilePredictor:
        """This process's predictor (built on the first call)."""
        return cached_predictor(self.key, lambda: check_predictor(self.factory(), "the predictor factory's result"))


def predict_block(predictor: TilePredictor | CachedFactory, in_raster: str, bands: list[int], blocks: TileBlocks,
                  block: tuple[int, int], tiling: TilingConfig, predict_options: dict | None = None) -> BlockResult:
    """Predict and stitch the tiles of one block of a raster's tile grid (the task a worker runs).

    Parameters
    ----------
    predictor:
        The predictor, or a :class:`CachedFactory` giving this process's predictor.
    in_raster:
        The raster (readable from this process).
    bands:
        1-based band indexes, in the predictor's order.
    blocks:
        The raster's blocks (their grid is the single-process run's grid).
    block:
        (block row, block column).
    tiling:
        Resolved tiling settings (``batch_size``, ``merge_iou``).
    predict_options:
        Keywords for ``predict_tiles``.
    """
    t_start = time.perf_counter()
    predictor = predictor() if isinstance(predictor, CachedFactory) else predictor
    collector = BlockCollector(blocks, block)
    stitcher = TileStitcher(collector.grid, merge_iou=tiling.merge_iou)
    with gdal_env(), rasterio.open(in_raster) as src:
        timings = run_tiles(predictor, TileReader(src, bands), stitcher, collector, tiling.batch_size,
                            predict_options)
    timings["total"] = time.perf_counter() - t_start
    return collector.result(stitcher, timings)
