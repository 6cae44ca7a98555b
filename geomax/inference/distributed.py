"""``predict_raster_distributed``: the tiled inference of ``predict_raster`` on a Dask cluster.

How the work is split (``pip install geomax[dist]`` installs ``dask[distributed]``):

1. every raster becomes a :class:`~geomax.inference.job.RasterJob`, checked (outputs,
   input, bands) before anything is written, exactly as in
   :func:`~geomax.inference.predict_raster.predict_raster`; its tile grid (the same
   :class:`~geomax.inference.tiling.TileGrid`) is cut into blocks of whole tiles
   (:class:`~geomax.inference.tiling.TileBlocks`). A block's tiles reach
   ``overlap // 2`` pixels past the block's core on the top / left and the rest of the
   overlap on the bottom / right: that is the halo;
2. a Dask task per block, on any worker (:func:`~geomax.inference.worker.predict_block`):
   read the block's tiles by windows from the raster (workers read the input
   themselves, so it must be readable there: a shared file system or a cloud URL
   rasterio reads), predict and stitch them with the same tile loop and
   :class:`~geomax.inference.stitching.TileStitcher` as the single-process run. The
   task returns a :class:`~geomax.inference.stitching.BlockResult`: the block core's
   provisional segment ids and confidence, the provisional segments (classes,
   block-local union-find roots) and the overlap strips of the tiles on the block's
   borders;
3. on the client, blocks are merged as they arrive (:meth:`TileStitcher.absorb`):
   their provisional ids are shifted into one id space, the block-local roots become
   unions, and the tiles that face each other across a block border are matched in
   their overlap with the same :func:`~geomax.inference.stitching.match_overlap` as
   inside a block. Every pair of neighbouring tiles is therefore matched exactly as in
   the single-process run, and the merged instances are the same (instance ids may be
   numbered differently). The shifted cores go to the job's scratch rasters;
4. when a raster's last block is in, its job rewrites the stitched ids block by block
   to class Values and final instance ids, polygonises them, writes the
   cloud-optimised GeoTIFF and the features (same writer, vectoriser and
   temporary-name-then-rename as ``predict_raster``: :meth:`RasterJob.finish`).

The client holds only the overlap strips of blocks whose neighbours have not arrived
yet, and a bounded number of block results; memory stays flat as the raster grows.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import TilingConfig
from ..data.mosaic import folder_rasters
from ..data.sources import check_raster, raster_source, raster_stem
from ..errors import ArgumentError, DataError
from .job import RASTER_EXTS, RasterJob, RasterPrediction
from .predictor import TilePredictor, check_predictor
from .progress import Progress
from .stitching import BlockResult, TileStitcher
from .tiling import TileBlocks, resolve_tiling
from .worker import CachedFactory, cached_predictor, model_loads, predict_block

__all__ = ["predict_raster_distributed", "BlockResult", "predict_block", "cached_predictor", "model_loads",
           "list_rasters", "local_cluster"]

def list_rasters(in_rasters) -> list[str | Path]:
    """The input rasters of a job: one raster, a list of rasters, or a folder (its ``*.tif`` / ``*.tiff``).

    A raster is a local path or any name GDAL opens (a URL, a ``/vsi...`` or subdataset
    name: :func:`geomax.data.sources.raster_source`); each is returned in the form
    ``rasterio.open`` takes.

    Raises
    ------
    DataError
        A local path does not exist, a GDAL dataset name cannot be opened, or a folder holds
        no GeoTIFF.
    ArgumentError
        An empty list, or a URL of a scheme GDAL does not read.
    """
    if isinstance(in_rasters, (str, os.PathLike)):
        source = raster_source(in_rasters)
        if isinstance(source, Path) and source.is_dir():
            return list(folder_rasters(source, "predict"))  # as list[str | Path]
        given = [in_rasters]
    else:
        given = list(in_rasters)
        if not given:
            raise ArgumentError("in_rasters is an empty list; give at least one raster.")
    sources = [raster_source(p) for p in given]
    missing = [str(p) for p, s in zip(given, sources) if isinstance(s, Path) and not s.exists()]
    if missing:
        raise DataError(f"Input raster(s) {missing} do not exist. Check the paths (relative paths start from the "
                        "current folder).")
    for p, s in zip(given, sources):
        if isinstance(s, str):
            check_raster(p, "input raster")  # workers read it too: a dataset name must open here first
    return sources


def _outputs(rasters: list[str | Path], out_rasters, out_features) -> list[tuple[Path, Path | None]]:
    single = len(rasters) == 1 and isinstance(out_rasters, (str, os.PathLike)) \
        and Path(out_rasters).suffix.lower() in RASTER_EXTS
    if single:
        outs = [Path(out_rasters)]
    elif isinstance(out_rasters, (str, os.PathLike)):
        folder = Path(out_rasters)
        if folder.suffix.lower() in RASTER_EXTS:
            raise ArgumentError(f"{len(rasters)} input rasters need an output folder, not the file '{folder}'. "
                                "Pass a folder path (without .tif) or a list of output rasters.")
        outs = [folder / f"{raster_stem(p)}_panoptic.tif" for p in rasters]  # a URL: its last segment
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
                                "such as '.gpkg' (features next to each output raster). Pass one of those.")
        feats = [Path(out_features)]
    else:
        feats = [Path(p) for p in out_features]
        if len(feats) != len(outs):
            raise ArgumentError(f"{len(outs)} output rasters but {len(feats)} feature outputs. Give one feature "
                                "output per raster, or an extension such as '.gpkg'.")
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
        raise ArgumentError("Distributed inference needs Dask: run pip install 'geomax[dist]' "
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
            raise ArgumentError(f"Cannot reach the Dask scheduler at '{client}': {exc}. Check the address, or "
                                "start it with `dask scheduler` (and workers with `dask worker <address>`).") from exc
    if not hasattr(client, "submit"):
        raise ArgumentError(f"client must be a dask.distributed.Client, a scheduler address or None, "
                            f"got {type(client).__name__}.")
    return client, False


def _predictor_source(predictor) -> tuple[TilePredictor, TilePredictor | CachedFactory]:
    """(predictor on the client, for the checks; what the block tasks get, before scattering).

    A :class:`TilePredictor` is sent as it is; any other callable is a factory.
    """
    if isinstance(predictor, TilePredictor) or not callable(predictor):
        predictor = check_predictor(predictor, "predict_raster_distributed's predictor")
        return predictor, predictor
    return check_predictor(predictor(), "the predictor factory's result"), CachedFactory.of(predictor)


@dataclass
class _RasterRun:
    """A job on the client: its blocks, the stitcher that absorbs them and how many are in."""

    job: RasterJob
    blocks: TileBlocks
    stitcher: TileStitcher
    n_done: int = 0
    opened: bool = False


def predict_raster_distributed(
    predictor: TilePredictor | Callable[[], TilePredictor],
    in_rasters,
    out_rasters,
    out_features=None,
    *,
    tiling: TilingConfig | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    block_size: int | None = None,
    merge_iou: float | None = None,
    bands: Sequence[int] | None = None,
    simplify_tolerance: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    client=None,
    resources: dict | None = None,
    max_blocks_in_flight: int | None = None,
    **predict_options,
) -> list[RasterPrediction]:
    """Panoptic segmentation of one or many rasters on a Dask cluster, as :func:`predict_raster` does it.

    The outputs are those of :func:`~geomax.inference.predict_raster.predict_raster` with
    the same arguments: the same panoptic COG and features, up to the numbering of the
    thing instances (objects crossing block borders are merged exactly as objects
    crossing tile borders).

    Parameters
    ----------
    predictor:
        A loaded per-tile predictor (:class:`~geomax.inference.predictor.TilePredictor`;
        sent to every worker once), or a zero-argument picklable factory returning one
        (called once per worker process and kept, keyed by a deterministic token of the
        factory, and once on the client for the checks; keep it small, it travels with
        every task). For a saved model, a factory such as
        ``functools.partial(load_predictor, path)`` lets each worker load it from the path
        (onto its GPU when it has one); :func:`geomax.workflows.predict_raster` builds it.
        A model path is refused.
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
    tiling, tile_size, overlap, batch_size, merge_iou, bands, simplify_tolerance, overwrite:
        As in :func:`~geomax.inference.predict_raster.predict_raster`.
    block_size:
        Override of ``tiling.block_size``: side of a block's core in pixels, rounded down
        to whole tiles (``tile_size - overlap`` pixels each; at least one tile). One block
        is one task; its halo is the tile overlap. Larger blocks: fewer tasks and less
        per-task overhead; smaller blocks: more parallelism on small rasters.
    progress:
        Show a progress bar of blocks done / total.
    client:
        A ``dask.distributed.Client``, a scheduler address (``"tcp://host:8786"``), or
        ``None``: the current client if one exists, else a ``LocalCluster`` of worker
        processes (closed at the end).
    resources:
        Dask worker resources each block task needs, e.g. ``{"GPU": 1}`` with workers
        started as ``dask worker ... --resources GPU=1``.
    max_blocks_in_flight:
        Block tasks submitted ahead of the client (bounds the memory of finished results
        waiting for the client). Default: 4 per worker thread, at least 8.
    **predict_options:
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
    rasters = list_rasters(in_rasters)
    jobs = [RasterJob(src, out_r, out_f, overwrite=overwrite)
            for src, (out_r, out_f) in zip(rasters, _outputs(rasters, out_rasters, out_features))]
    local, source = _predictor_source(predictor)
    base = tiling if tiling is not None else local.saved_tiling  # the caller's, else the model's own
    tiling = resolve_tiling(base, local.chip_size, local.tile_multiple, tile_size=tile_size, overlap=overlap,
                            batch_size=batch_size, block_size=block_size, merge_iou=merge_iou)
    runs = []
    try:
        for job in jobs:
            job.prepare(local, tiling, bands)
            runs.append(_RasterRun(job, TileBlocks.of_size(job.grid, tiling.block_size),
                                   TileStitcher(job.grid, merge_iou=tiling.merge_iou)))
        client, own_client = _get_client(client)
    except BaseException:
        for job in jobs:  # a mosaic's VRT (a folder in the list) is the only thing prepare writes
            job.discard()
        raise
    try:
        if source is local:  # one copy per worker, deserialised once and kept while the job runs
            source = client.scatter(local, broadcast=True, hash=False)
        return _run(client, runs, source, local.class_table, tiling, predict_options, resources,
                    max_blocks_in_flight, simplify_tolerance, progress)
    except BaseException:
        for job in jobs:  # _run discards its unfinished jobs; a failed scatter left them all (safe twice)
            job.discard()
        raise
    finally:
        if own_client:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _run(client, runs: list[_RasterRun], source, class_table, tiling: TilingConfig, predict_options: dict,
         resources, max_in_flight, simplify_tolerance, progress) -> list[RasterPrediction]:
    """Submit the block tasks (bounded), absorb their results as they come, finish each raster."""
    from distributed import as_completed

    if max_in_flight is None:
        n_threads = sum(client.nthreads().values()) or 1
        max_in_flight = max(8, 4 * n_threads)
    tasks = [(j, block) for j, run in enumerate(runs) for block in run.blocks]
    queue = list(reversed(tasks))
    results: list[RasterPrediction | None] = [None] * len(runs)
    futures = as_completed()
    run_of: dict = {}

    def submit_more():
        while queue and futures.count() < max_in_flight:
            j, block = queue.pop()
            job = runs[j].job
            fut = client.submit(predict_block, source, job.in_raster_name, job.bands, runs[j].blocks,
                                block, tiling, predict_options, key=f"geomax-block-{uuid.uuid4().hex}",
                                resources=resources, pure=False)
            run_of[fut.key] = j
            futures.add(fut)

    try:
        with Progress(len(tasks), progress, "blocks") as bar:
            submit_more()
            for fut in futures:
                j = run_of.pop(fut.key)
                block = fut.result()
                del fut
                run = runs[j]
                job = run.job
                if not run.opened:
                    job.open()
                    job.timings["merge"] = 0.0
                    run.opened = True
                t0 = time.perf_counter()
                job.write_core(block.core_window, run.stitcher.absorb(block), block.core_conf)
                for stage in ("read", "predict", "stitch"):
                    job.timings[stage] += block.seconds.get(stage, 0.0)
                job.timings["merge"] += time.perf_counter() - t0
                run.n_done += 1
                submit_more()
                bar.advance()
                if run.n_done == len(run.blocks):
                    results[j] = job.finish(run.stitcher, class_table, simplify_tolerance)
    except BaseException:
        for fut in list(futures.futures):
            fut.cancel()
        for j, run in enumerate(runs):
            if results[j] is None:
                run.job.discard()
        raise
    return [r for r in results if r is not None]  # every job finished
