"""``predict_raster``: seamless, memory-flat tiled inference to a panoptic COG and a vector layer.

Steps (memory stays flat as the raster grows -- nothing holds the whole raster):

1. read overlapping tiles by windows, row by row (boundless, no-data aware), and
   call the predictor in batches;
2. stitch: each pixel takes the label of the tile whose centre is nearest; thing
   segments of neighbouring tiles that match in the overlap are merged
   (union-find); the cores are written to scratch GeoTIFFs with provisional ids;
3. rewrite the scratch rasters block by block with final class Values and
   instance ids (unique across the raster), polygonising each block on the way;
4. convert to a cloud-optimised GeoTIFF, write the features, and only then
   rename both outputs to their final names.
"""
from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ..errors import ArgumentError, DataError, InputMismatchError, ModelError, OutputExistsError
from .stitching import TileStitcher
from .tiling import TileGrid, TileReader
from .vectorize import VECTOR_DRIVERS, PanopticVectorizer, write_features
from .writer import describe, panoptic_dtype, panoptic_profile, scratch_profile, write_cog, write_colortable_sidecar

__all__ = ["predict_raster", "RasterPrediction"]

_RASTER_EXTS = (".tif", ".tiff")
_GDAL_CACHE_MB = 64  # bounded block cache: GDAL's default (5% of RAM) would grow with the raster
_VECTOR_BLOCK = 1024


@dataclass
class RasterPrediction:
    """What :func:`predict_raster` wrote, with counts and timings.

    Attributes
    ----------
    out_raster, out_features:
        Paths written (``out_features`` is ``None`` when no features were asked for).
    n_tiles:
        Tiles in the grid (tiles without a valid pixel are not sent to the predictor).
    n_instances:
        Thing instances in the output (ids 1..n_instances).
    n_features:
        Features written (instances + connected stuff regions), ``None`` without ``out_features``.
    n_merges:
        Matches across tile overlaps that joined two tile segments.
    timings:
        Seconds spent per stage: ``read``, ``predict``, ``stitch``, ``finalize`` (rewrite +
        polygonise), ``cog``, ``features``, ``total``.
    """

    out_raster: Path
    out_features: Path | None
    n_tiles: int
    n_instances: int
    n_features: int | None
    n_merges: int
    timings: dict = field(default_factory=dict)


def _resolve_model(model):
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelError(f"Model '{path}' does not exist. Pass a model folder, .emd or .dlpk file, "
                             "or a model object.")
        try:
            from ..models.learner import MaXDeepLab
        except ImportError as exc:
            raise ModelError(f"Cannot load the model '{path}': geomax.models.learner.MaXDeepLab is not "
                             f"available in this installation ({exc}). Pass a loaded model object instead.") from exc
        model = MaXDeepLab.from_model(path)
    missing = [a for a in ("n_bands", "class_table", "predict_tiles") if not hasattr(model, a)]
    if missing:
        raise ModelError(f"{type(model).__name__} is not a per-tile predictor: it lacks {missing}. Pass a "
                         "MaXDeepLab model, a model path, or an object with n_bands, class_table, band_names "
                         "and predict_tiles(tiles, valid).")
    return model


def _check_bands(src, bands, predictor, in_raster) -> list[int]:
    n_model = int(predictor.n_bands)
    descs = list(src.descriptions)
    model_names = [str(n) for n in (getattr(predictor, "band_names", None) or [])]
    if bands is None:
        if src.count != n_model:
            hint = ""
            if model_names and all(d for d in descs) and set(model_names) <= set(descs):
                hint = f" Pass bands={[descs.index(n) + 1 for n in model_names]} to pick {model_names}."
            raise InputMismatchError(f"'{in_raster}' has {src.count} bands but the model takes {n_model} "
                                     f"({model_names or 'unnamed'}).{hint or ' Pass bands=[...] (1-based) to choose them.'}")
        bands = list(range(1, src.count + 1))
    else:
        bands = [int(b) for b in bands]
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise ArgumentError(f"bands={bands}: {bad} not in 1..{src.count} ('{in_raster}' has {src.count} bands).")
        if len(bands) != n_model:
            raise InputMismatchError(f"bands={bands} selects {len(bands)} bands but the model takes {n_model} "
                                     f"({model_names or 'unnamed'}).")
    if model_names and len(model_names) == n_model and all(d for d in descs) and set(model_names) <= set(descs):
        chosen = [descs[b - 1] for b in bands]
        if chosen != model_names:
            expected = [descs.index(n) + 1 for n in model_names]
            raise InputMismatchError(f"Band order mismatch: the selected bands of '{in_raster}' are {chosen} but the "
                                     f"model was trained on {model_names}. Pass bands={expected}.")
    return bands


def _check_output(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"The {what} '{path}' already exists. Pass overwrite=True to replace it, "
                                "or choose another name.")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".geomax-write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ArgumentError(f"Cannot write the {what} to '{folder}': {exc.strerror or exc}. "
                            "Choose a writable output folder.") from exc


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from fastprogress.fastprogress import progress_bar
    except ImportError:  # fastprogress comes with fastai; fall back to silence
        return None
    pb = progress_bar(range(total), total=total, leave=False)
    pb.update(0)
    return pb


def _rename_outputs(partial: Path, final: Path) -> None:
    """Rename a finished output (and its sidecar files, e.g. a shapefile's .dbf) to its final name."""
    for p in sorted(partial.parent.glob(partial.stem + ".*")):
        os.replace(p, final.parent / (final.stem + p.name[len(partial.stem):]))


def predict_raster(
    model,
    in_raster: str | os.PathLike,
    out_raster: str | os.PathLike,
    out_features: str | os.PathLike | None = None,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    bands: Sequence[int] | None = None,
    simplify_tolerance: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    merge_iou: float = 0.5,
    **predict_kwargs,
) -> RasterPrediction:
    """Panoptic segmentation of a whole raster, tile by tile, to a COG and a vector layer.

    Parameters
    ----------
    model:
        A per-tile predictor (:class:`~geomax.inference.predictor.TilePredictor`: a trained
        ``MaXDeepLab`` or any object with ``n_bands``, ``class_table``, ``band_names`` and
        ``predict_tiles``), or the path of a model folder / ``.emd`` / ``.dlpk``.
    in_raster:
        Input raster (any format rasterio reads). Pixels equal to its no-data value in
        every band, or masked by its mask, are no data.
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
    tile_size:
        Tile side in pixels; a multiple of the model's ``tile_multiple`` and at least
        ``2 * overlap``.
    overlap:
        Pixels shared by neighbouring tiles. Each tile decides only its core (the
        overlap is split in the middle); objects cut by tile borders are merged by
        matching them inside the overlap, so use an overlap wider than the usual
        edge effects of the model. ``0`` disables merging.
    batch_size:
        Tiles per ``predict_tiles`` call.
    bands:
        1-based band indexes to read, in the model's band order (default: all).
    simplify_tolerance:
        Optional polygon simplification tolerance in CRS units.
    overwrite:
        Replace existing outputs (otherwise an existing output raises before any work).
    progress:
        Show a progress bar of tiles done / total.
    merge_iou:
        IoU inside the overlap above which two same-class thing segments of
        neighbouring tiles are one instance (>= 0.5 makes matches one-to-one).
    **predict_kwargs:
        Passed to ``model.predict_tiles`` (e.g. post-processing thresholds).

    Returns
    -------
    RasterPrediction
        Output paths, counts and per-stage timings.

    Raises
    ------
    DataError
        The input raster is missing or unreadable.
    ModelError
        ``model`` is not a predictor, cannot be loaded, or returns malformed results.
    InputMismatchError
        Band count or order does not match the model; tile size not a multiple of the
        model's ``tile_multiple``.
    ArgumentError
        Invalid tile size / overlap / batch size / bands / output extension, or an
        unwritable output folder.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    """
    t_start = time.perf_counter()
    in_raster, out_raster = Path(in_raster), Path(out_raster)
    out_features = Path(out_features) if out_features is not None else None
    for out, what in ((out_raster, "output raster"), (out_features, "output features")):
        if out is not None and out.exists() and not overwrite:  # before loading a model or reading anything
            raise OutputExistsError(f"The {what} '{out}' already exists. Pass overwrite=True to replace it, "
                                    "or choose another name.")
    predictor = _resolve_model(model)

    # ---- arguments ------------------------------------------------------------------
    tile_size, overlap, batch_size = int(tile_size), int(overlap), int(batch_size)
    if tile_size < 1 or overlap < 0 or batch_size < 1:
        raise ArgumentError(f"tile_size ({tile_size}) and batch_size ({batch_size}) must be >= 1 and "
                            f"overlap ({overlap}) >= 0.")
    if tile_size < 2 * overlap:
        raise ArgumentError(f"tile_size={tile_size} is smaller than 2 * overlap ({2 * overlap}); only neighbouring "
                            f"tiles may overlap. Use tile_size >= {2 * overlap} or a smaller overlap.")
    multiple = int(getattr(predictor, "tile_multiple", 1) or 1)
    if tile_size % multiple:
        raise InputMismatchError(f"tile_size={tile_size} is not a multiple of {multiple}, which the model needs. "
                                 f"Use tile_size={max(multiple, tile_size // multiple * multiple)}.")
    if not 0.0 < merge_iou <= 1.0:
        raise ArgumentError(f"merge_iou must be in (0, 1], got {merge_iou}.")
    if out_raster.suffix.lower() not in _RASTER_EXTS:
        raise ArgumentError(f"out_raster '{out_raster}' must be a GeoTIFF (.tif).")
    if out_features is not None and out_features.suffix.lower() not in VECTOR_DRIVERS:
        raise ArgumentError(f"out_features '{out_features}': unknown extension '{out_features.suffix}'. "
                            f"Use one of {sorted(VECTOR_DRIVERS)} (.gpkg recommended).")
    if out_raster.resolve() == in_raster.resolve():
        raise ArgumentError(f"out_raster is the input raster '{in_raster}'; choose another output name.")
    if out_features is not None and out_features.resolve() == out_raster.resolve():
        raise ArgumentError("out_features and out_raster are the same file.")

    # ---- input ----------------------------------------------------------------------
    if not in_raster.exists():
        raise DataError(f"Input raster '{in_raster}' does not exist.")
    try:
        src = rasterio.open(in_raster)
    except RasterioIOError as exc:
        raise DataError(f"Cannot read the input raster '{in_raster}' (corrupt or not a raster): {exc}") from exc
    with src:
        band_idx = _check_bands(src, bands, predictor, in_raster)
        _check_output(out_raster, overwrite, "output raster")
        if out_features is not None:
            _check_output(out_features, overwrite, "output features")
        if src.crs is None:
            warnings.warn(f"'{in_raster}' has no CRS: the outputs will have none either, and areas are in "
                          "pixel-grid units.", UserWarning, stacklevel=2)
        takes_windows = "windows" in inspect.signature(predictor.predict_tiles).parameters
        grid = TileGrid(src.height, src.width, tile_size, overlap)
        timings = dict.fromkeys(("read", "predict", "stitch", "finalize", "cog", "features"), 0.0)

        work = Path(tempfile.mkdtemp(prefix=".geomax-predict-", dir=out_raster.parent))
        tag = uuid.uuid4().hex[:8]
        partial_raster = out_raster.parent / f".{out_raster.stem}.partial-{tag}{out_raster.suffix}"
        partial_features = (out_features.parent / f".{out_features.stem}.partial-{tag}{out_features.suffix}"
                            if out_features is not None else None)
        try:
            with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB):
                ids_path, conf_path = work / "ids.tif", work / "conf.tif"
                stitcher = TileStitcher(grid, merge_iou=merge_iou)
                reader = TileReader(src, band_idx)
                pbar = _progress(len(grid), progress)
                done = 0
                with rasterio.open(ids_path, "w", **scratch_profile(src, "uint32")) as ids_dst, \
                        rasterio.open(conf_path, "w", **scratch_profile(src, "uint8")) as conf_dst:
                    # The predictor works on batch k+1 (in a worker thread: GPU kernels and
                    # torch release the GIL) while this thread stitches and writes batch k
                    # and reads the tiles of batch k+2.
                    def call(tiles, valid, kw):
                        t0 = time.perf_counter()
                        out = predictor.predict_tiles(tiles, valid, **kw)
                        timings["predict"] += time.perf_counter() - t0
                        return out

                    def submit(batch):
                        todo = [p for p in batch if p[4].any()]  # all-no-data tiles skip the predictor
                        if not todo:
                            return batch, todo, None
                        kw = dict(predict_kwargs)
                        if takes_windows:
                            kw["windows"] = [p[2] for p in todo]
                        tiles = np.stack([p[3] for p in todo])
                        valid = np.stack([p[4] for p in todo])
                        return batch, todo, pool.submit(call, tiles, valid, kw)

                    def complete(item):
                        nonlocal done
                        batch, todo, future = item
                        results = {}
                        if future is not None:
                            out = future.result()
                            if len(out) != len(todo):
                                raise ModelError(f"predict_tiles returned {len(out)} results for {len(todo)} tiles.")
                            results = {(p[0], p[1]): r for p, r in zip(todo, out)}
                        t0 = time.perf_counter()
                        for r, c, _, _, valid_tile in batch:
                            core_ids, core_conf = stitcher.add_tile(r, c, results.get((r, c)), valid_tile)
                            win = grid.core_window(r, c)
                            ids_dst.write(core_ids, 1, window=win)
                            conf_dst.write(core_conf, 1, window=win)
                        timings["stitch"] += time.perf_counter() - t0
                        done += len(batch)
                        if pbar is not None:
                            pbar.comment = f"tiles {done}/{len(grid)}"
                            pbar.update(done)

                    pending: list = []
                    in_flight = None
                    with ThreadPoolExecutor(max_workers=1) as pool:
                        try:
                            for r, c in grid:
                                t0 = time.perf_counter()
                                win = grid.tile_window(r, c)
                                data, valid = reader.read(win)
                                timings["read"] += time.perf_counter() - t0
                                pending.append((r, c, win, data, valid))
                                if len(pending) == batch_size or (r, c) == (grid.n_rows - 1, grid.n_cols - 1):
                                    item = submit(pending)
                                    pending = []
                                    if in_flight is not None:
                                        complete(in_flight)
                                    in_flight = item
                            if in_flight is not None:
                                complete(in_flight)
                        except BaseException:
                            if in_flight is not None and in_flight[2] is not None:
                                in_flight[2].cancel()
                            raise

                n_instances, n_features = finish_outputs(
                    src, stitcher, work, predictor.class_table, partial_raster, partial_features,
                    out_features, simplify_tolerance, timings)
            publish_outputs(partial_raster, out_raster, partial_features, out_features, overwrite)
        except BaseException:
            for p in [partial_raster, partial_features]:
                if p is not None:
                    for q in p.parent.glob(p.stem + ".*"):
                        q.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if "pbar" in locals() and pbar is not None:
                try:
                    pbar.on_iter_end()
                except Exception:  # the bar's own clean-up must never hide the real outcome
                    pass
    timings["total"] = time.perf_counter() - t_start
    return RasterPrediction(out_raster, out_features, len(grid), n_instances, n_features,
                            stitcher.n_merges, timings)


def finish_outputs(src, stitcher, work: Path, class_table, partial_raster: Path, partial_features: Path | None,
                   out_features: Path | None, simplify_tolerance: float | None, timings: dict) -> tuple[int, int | None]:
    """Last stage shared by :func:`predict_raster` and its distributed twin.

    Reads the scratch rasters ``work/ids.tif`` (provisional ids) and ``work/conf.tif``
    block by block, writes final class Values and instance ids (``stitcher.finalize()``
    luts), polygonises each block when features are asked for, converts to a COG at
    ``partial_raster`` and writes the features to ``partial_features``. The scratch
    files are removed. Returns ``(n_instances, n_features)``; fills ``timings``.
    """
    t0 = time.perf_counter()
    class_lut, instance_lut, n_instances = stitcher.finalize()
    dtype = panoptic_dtype(max(int(class_lut.max(initial=0)), n_instances, 100))
    ids_path, conf_path, stitched = work / "ids.tif", work / "conf.tif", work / "panoptic.tif"
    vectorizer = PanopticVectorizer(class_table, src.transform, src.width) if out_features is not None else None
    with rasterio.open(ids_path) as ids_src, rasterio.open(conf_path) as conf_src, \
            rasterio.open(stitched, "w", **panoptic_profile(src, dtype)) as dst:
        describe(dst, class_table)
        for r0 in range(0, src.height, _VECTOR_BLOCK):
            for c0 in range(0, src.width, _VECTOR_BLOCK):
                win = Window(c0, r0, min(_VECTOR_BLOCK, src.width - c0), min(_VECTOR_BLOCK, src.height - r0))
                prov = ids_src.read(1, window=win)
                conf = conf_src.read(1, window=win)
                cls, inst = class_lut[prov], instance_lut[prov]
                dst.write(np.stack([cls, inst, conf]).astype(dtype), window=win)
                if vectorizer is not None:
                    vectorizer.add_block(r0, c0, cls, inst, conf)
    timings["finalize"] = time.perf_counter() - t0
    ids_path.unlink()
    conf_path.unlink()

    t0 = time.perf_counter()
    write_cog(stitched, partial_raster)
    write_colortable_sidecar(partial_raster, class_table)
    timings["cog"] = time.perf_counter() - t0

    n_features = None
    if vectorizer is not None:
        t0 = time.perf_counter()
        gdf = vectorizer.to_geodataframe(crs=src.crs, simplify_tolerance=simplify_tolerance)
        n_features = len(gdf)
        write_features(gdf, partial_features, layer=out_features.stem)
        timings["features"] = time.perf_counter() - t0
    return n_instances, n_features


def publish_outputs(partial_raster: Path, out_raster: Path, partial_features: Path | None,
                    out_features: Path | None, overwrite: bool) -> None:
    """Give complete outputs their final names (replacing earlier ones only when ``overwrite``)."""
    if overwrite:
        _remove_output(out_raster)
        _remove_output(Path(str(out_raster) + ".aux.xml"))
        if out_features is not None:
            _remove_output(out_features)
    _rename_outputs(partial_raster, out_raster)
    if partial_features is not None:
        _rename_outputs(partial_features, out_features)


def _remove_output(path: Path) -> None:
    """Remove an existing output (and a shapefile's sidecars) before replacing it."""
    if path.suffix.lower() == ".shp":
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".shp.xml"):
            (path.parent / (path.stem + ext)).unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
