"""``predict_raster``: seamless, memory-flat tiled inference to a panoptic COG and a vector layer.

Steps (memory stays flat as the raster grows -- nothing holds the whole raster):

1. check the predictor, resolve the tiling settings and check the input and outputs
   (:class:`~geomax.inference.job.RasterJob`) before anything is written;
2. read overlapping tiles by windows, row by row (boundless, no-data aware), and
   call the predictor in batches in a background thread
   (:func:`~geomax.inference.tile_loop.run_tiles`);
3. stitch: each pixel takes the label of the tile whose centre is nearest; thing
   segments of neighbouring tiles that match in the overlap are merged
   (union-find, :class:`~geomax.inference.stitching.TileStitcher`); the cores are
   written to scratch GeoTIFFs with provisional ids;
4. rewrite the scratch rasters block by block with final class Values and
   instance ids (unique across the raster), polygonising each block on the way;
5. convert to a cloud-optimised GeoTIFF, write the features, and only then
   rename both outputs to their final names.
"""
from __future__ import annotations

import os
from typing import Sequence

import rasterio

from ..config import TilingConfig
from ..errors import GeomaxError, OutputError
from .job import RasterJob, RasterPrediction, gdal_env
from .predictor import TilePredictor, check_predictor
from .progress import Progress
from .stitching import TileStitcher
from .tile_loop import run_tiles
from .tiling import TileReader, resolve_tiling

__all__ = ["predict_raster", "RasterPrediction"]


def predict_raster(
    predictor: TilePredictor,
    in_raster: str | os.PathLike | Sequence[str | os.PathLike],
    out_raster: str | os.PathLike,
    out_features: str | os.PathLike | None = None,
    *,
    tiling: TilingConfig | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    merge_iou: float | None = None,
    bands: Sequence[int] | None = None,
    simplify_tolerance: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **predict_options,
) -> RasterPrediction:
    """Panoptic segmentation of a whole raster, tile by tile, to a COG and a vector layer.

    Parameters
    ----------
    predictor:
        A loaded per-tile predictor (:class:`~geomax.inference.predictor.TilePredictor`).
        A model path is refused: :func:`geomax.workflows.predict_raster` loads one.
    in_raster:
        Input raster: a local file in any format GDAL reads, or a name GDAL opens -- a URL
        (``https://``, ``s3://``, ``gs://``, ``az://``: read by windows with HTTP range
        requests, never downloaded whole), a ``/vsi...`` name (``/vsizip/``...), a subdataset
        string (``NETCDF:"f.nc":var``) -- see :func:`geomax.data.sources.raster_source`. Or a
        folder of rasters (its ``.tif`` / ``.tiff``) or a list of rasters, predicted as one
        mosaic through a VRT (:class:`geomax.data.mosaic.Mosaic`; they must share CRS, band
        count, data type, no-data value and pixel grid), so objects crossing file borders are
        merged like those crossing tile borders; the VRT lives in the job's scratch folder
        beside ``out_raster``, never in the input folder. A pixel that is NaN, equal to the
        no-data value or masked by the raster's mask in any band read is no data (void in the
        output).
    out_raster:
        Output GeoTIFF (``.tif``), written as a cloud-optimised GeoTIFF: band 1 class
        Value (colour table in the ``.tif.aux.xml`` sidecar), band 2 instance id (unique across the raster, 0 for stuff
        and void), band 3 confidence 0-100. No-data value 0 in all bands. Same CRS and
        transform as the input.
    out_features:
        Optional vector output; the extension picks the format (``.gpkg`` default choice,
        ``.shp``, ``.geojson``, ``.fgb``, ``.parquet``). One feature per thing instance
        and per 4-connected stuff region of one class (stuff features have
        ``instance_id`` 0), fields ``instance_id``, ``class_value``, ``class_name``,
        ``is_thing``, ``confidence`` (mean, 0-100), ``area`` (CRS units); the raster's CRS.
    tiling:
        Tiling settings (:class:`~geomax.config.TilingConfig`; ``None``: the predictor's
        ``saved_tiling``, else the config's defaults). The
        keyword overrides below replace its fields when not ``None``; a tile size left
        ``None`` is the predictor's ``chip_size`` rounded to its ``tile_multiple``, an
        overlap left ``None`` a quarter of the tile.
    tile_size:
        Tile side in pixels; a multiple of the predictor's ``tile_multiple`` and at least
        ``2 * overlap``.
    overlap:
        Pixels shared by neighbouring tiles. Each tile decides only its core (the
        overlap is split in the middle); objects cut by tile borders are merged by
        matching them inside the overlap, so use an overlap wider than the usual
        edge effects of the model. ``0`` disables merging.
    batch_size:
        Tiles per ``predict_tiles`` call.
    merge_iou:
        IoU inside the overlap above which two same-class thing segments of
        neighbouring tiles are one instance (>= 0.5 makes matches one-to-one).
    bands:
        1-based band indexes to read, in the model's band order (default: all).
    simplify_tolerance:
        Optional polygon simplification tolerance in CRS units.
    overwrite:
        Replace existing outputs (otherwise an existing output raises before any work).
    progress:
        Show a progress bar of tiles done / total.
    **predict_options:
        Passed to ``predictor.predict_tiles`` (e.g. post-processing thresholds).

    Returns
    -------
    RasterPrediction
        Output paths, counts, the resolved tiling and per-stage timings.

    Raises
    ------
    DataError
        The input raster is missing or unreadable.
    ModelError
        ``predictor`` is not a per-tile predictor (or is a model path), or returns
        malformed results.
    InputMismatchError
        Band count or order does not match the model; tile size not a multiple of the
        model's ``tile_multiple``.
    ArgumentError
        Invalid tile size / overlap / batch size / bands / output extension, or an
        unwritable output folder.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    """
    predictor = check_predictor(predictor, "predict_raster's predictor")
    base = tiling if tiling is not None else predictor.saved_tiling  # the caller's, else the model's own
    tiling = resolve_tiling(base, predictor.chip_size, predictor.tile_multiple, tile_size=tile_size,
                            overlap=overlap, batch_size=batch_size, merge_iou=merge_iou)
    job = RasterJob(in_raster, out_raster, out_features, overwrite=overwrite)
    job.prepare(predictor, tiling, bands)
    try:
        stitcher = TileStitcher(job.grid, merge_iou=tiling.merge_iou)  # in here: a mosaic's VRT is removed on error
        job.open()
        with Progress(len(job.grid), progress, "tiles") as bar, gdal_env(), \
                rasterio.open(job.in_raster) as src:

            def write(tile):
                job.write_core(tile.core_window, tile.core_ids, tile.core_conf)
                bar.advance()

            run_tiles(predictor, TileReader(src, job.bands), stitcher, write, tiling.batch_size, predict_options,
                      job.timings)
        return job.finish(stitcher, predictor.class_table, simplify_tolerance)
    except OSError as exc:
        job.discard()
        if isinstance(exc, GeomaxError):
            raise
        raise OutputError(f"Writing the prediction of '{job.in_label}' failed ({exc.strerror or exc}): the disk may "
                          f"be full or '{job.out_raster.parent}' not writable. Free some space or choose another "
                          "output folder; earlier outputs there are unchanged.") from exc
    except BaseException:
        job.discard()
        raise
