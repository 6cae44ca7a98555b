"""One raster inference job: checks, scratch outputs, the final rewrite and publishing.

A :class:`RasterJob` owns one input raster and its outputs, for local
(:func:`~geomax.inference.predict_raster.predict_raster`) and distributed
(:func:`~geomax.inference.distributed.predict_raster_distributed`) inference alike.
The input is any raster GDAL opens -- a local file, a URL (``https://``, ``s3://``...),
a ``/vsi...`` or subdataset name (:func:`geomax.data.sources.raster_source`) -- or, for
one mosaic, a folder of rasters or a list of them (:class:`geomax.data.mosaic.Mosaic`):

1. ``RasterJob(...)`` checks the output names: GeoTIFF raster, known vector
   extension, the raster is not the input (nor inside the input folder), the features
   are not the raster, and no output exists unless ``overwrite``;
2. :meth:`~RasterJob.prepare` reads the input's header: a missing or unreadable input,
   the band selection and order (:func:`check_bands`), writable output folders, a
   warning when there is no CRS; it lays out the tile grid. No output is written before
   it returns; a mosaic's VRT goes to a hidden scratch folder beside the output raster
   (removed again when ``prepare`` fails), later the job's scratch folder;
3. :meth:`~RasterJob.open` creates a scratch folder next to the output raster and two
   scratch GeoTIFFs (provisional ids, confidence) that :meth:`~RasterJob.write_core`
   fills with stitched cores;
4. :meth:`~RasterJob.finish` rewrites the scratch rasters block by block with final
   class Values and instance ids (the stitcher's look-up tables), polygonising each
   block on the way and appending the features complete after each row of blocks
   to the partial features file (so only the features that may still grow are held),
   converts to a cloud-optimised GeoTIFF, all under temporary names, and only then
   renames the outputs to their final names;
5. :meth:`~RasterJob.discard` removes everything the job wrote when it fails.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from ..config import TilingConfig
from ..data.classes import ClassTable
from ..data.input_rules import InputSample, band_labels, check_sample, names_give_order, select_bands
from ..data.mosaic import Mosaic, mosaic_inputs
from ..data.sources import check_raster, local_path, open_raster, raster_source
from ..errors import ArgumentError
from ..publish import check_outputs_apart, check_replaceable, publish_files, scratch_folder
from .predictor import TilePredictor
from .stitching import TileStitcher
from .tiling import TileGrid, TileReader
from .vectorize import VECTOR_DRIVERS, FeatureWriter, PanopticVectorizer
from .writer import describe, panoptic_dtype, panoptic_profile, scratch_profile, write_class_sidecar, write_cog

__all__ = ["RasterJob", "RasterPrediction", "check_bands", "gdal_env", "RASTER_EXTS"]

#: Extensions of the GeoTIFF rasters inference reads from folders and writes.
RASTER_EXTS = (".tif", ".tiff")
_GDAL_CACHE_MB = 64  # bounded block cache: GDAL's default (5% of RAM) would grow with the raster
_REWRITE_BLOCK = 1024  # side of the blocks of the final rewrite and polygonising
_SAMPLE_SIDE = 256  # side of the 3 x 3 windows sampled to compare the input with the training statistics


def gdal_env() -> rasterio.Env:
    """The GDAL settings of inference (a bounded block cache, so memory stays flat)."""
    return rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_MB)


@dataclass
class RasterPrediction:
    """What one raster's inference wrote, with counts and timings.

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
    tiling:
        The tiling settings used, resolved for the predictor (tile size and overlap filled in).
    timings:
        Seconds spent per stage: ``read``, ``predict``, ``stitch``, ``finalize`` (rewrite +
        polygonise), ``cog``, ``features`` (joining the polygons into features and writing
        them, within the rewrite), ``total`` (distributed runs add ``merge``, the
        client's block merging, and sum the workers' ``read`` / ``predict`` / ``stitch``).
    """

    out_raster: Path
    out_features: Path | None
    n_tiles: int
    n_instances: int
    n_features: int | None
    n_merges: int
    tiling: TilingConfig
    timings: dict = field(default_factory=dict)


def check_bands(src, bands: Sequence[int] | None, predictor: TilePredictor, in_raster) -> list[int]:
    """The 1-based bands to read from ``src`` for ``predictor``: :func:`geomax.data.input_rules.select_bands`.

    A raster with another band count than the predictor's is read at the predictor's
    ``extract_bands`` (the source bands of its training chips), the same rule as
    :meth:`MaXDeepLab.predict <geomax.models.learner.MaXDeepLab.predict>`.

    Raises
    ------
    ArgumentError
        A band index is not in the raster.
    InputMismatchError
        The band count differs from the predictor's, or the selected bands' descriptions
        are the predictor's band names in another order (the message gives the right ``bands``).
    """
    source = predictor.extract_bands
    return select_bands(list(src.descriptions), src.count, bands, int(predictor.n_bands), predictor.band_names,
                        in_raster, default_bands=None if source is None else [int(b) + 1 for b in source])


def _fit_to_raster(tiling: TilingConfig, height: int, width: int, multiple: int, in_raster: str) -> TilingConfig:
    """A tile over twice the raster's size is cut down to the raster (rounded up to ``multiple``), with a warning.

    Without this a mistyped tile size (``100000``) would allocate tiles of that size.
    """
    assert tiling.tile_size is not None and tiling.overlap is not None
    side = -(-max(height, width) // multiple) * multiple
    if tiling.tile_size <= 2 * side:
        return tiling
    warnings.warn(f"tile_size={tiling.tile_size} is larger than '{in_raster}' ({width} x {height} px): predicting it "
                  f"as one tile of {side} px.", UserWarning, stacklevel=5)
    return tiling.replace(tile_size=side, overlap=min(tiling.overlap, side // 2))


def _check_writable(path: Path, what: str) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".geomax-write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ArgumentError(f"Cannot write the {what} to '{folder}': {exc.strerror or exc}. "
                            "Choose a writable output folder.") from exc


#: Files beside an output that belong to it (GDAL's PAM sidecar, a shapefile's parts).
_SIDECARS = {".tif": (".tif.aux.xml",), ".tiff": (".tiff.aux.xml",),
             ".shp": (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".shp.xml")}


def _family(final: Path) -> list[Path]:
    """``final`` and the sidecar files that go with it."""
    return [final] + [final.parent / (final.stem + ext) for ext in _SIDECARS.get(final.suffix.lower(), ())]


class _CoreRows:
    """Where the cores written so far end: a bound of the last row of every provisional id's pixels.

    Each core records the range of provisional ids it holds and its last row. The ids of
    one core come from one tile (or one block of tiles) and are numbered together, so
    the ranges are narrow; an id in the range of a core it has no pixel in only gets a
    later bound from that core than needed, never an earlier one.
    """

    def __init__(self) -> None:
        self._spans: list[tuple[int, int, int]] = []  # (first id, last id, last row of the core)

    def add(self, window: Window, ids: np.ndarray) -> None:
        """Record one core's provisional ids (0 = none)."""
        hi = int(ids.max(initial=0))
        if hi:
            lo = int(ids.min(where=ids > 0, initial=hi))
            self._spans.append((lo, hi, int(window.row_off) + int(window.height) - 1))

    def instance_last_rows(self, instance_lut: np.ndarray, n_instances: int) -> np.ndarray:
        """Indexed by final instance id (``instance_lut``: provisional id -> instance id): its last row, -1 for none."""
        prov_last = np.full(len(instance_lut), -1, dtype=np.int64)
        for lo, hi, last in self._spans:
            np.maximum(prov_last[lo: hi + 1], last, out=prov_last[lo: hi + 1])
        last_rows = np.full(n_instances + 1, -1, dtype=np.int64)
        np.maximum.at(last_rows, instance_lut, prov_last)
        last_rows[0] = -1
        return last_rows


class _FeatureStream:
    """A job's features: polygonised block by block, appended to the partial features file once complete.

    Joining the polygons into features and writing them counts as ``timings["features"]``.
    """

    def __init__(self, vectorizer: PanopticVectorizer, writer: FeatureWriter, crs,
                 simplify_tolerance: float | None, timings: dict):
        self.vectorizer = vectorizer
        self.writer = writer
        self.crs = crs
        self.simplify_tolerance = simplify_tolerance
        self.timings = timings

    def add_block(self, row_off: int, col_off: int, class_block: np.ndarray, instance_block: np.ndarray,
                  confidence_block: np.ndarray) -> None:
        """Polygonise one block of the final raster (:meth:`PanopticVectorizer.add_block`)."""
        self.vectorizer.add_block(row_off, col_off, class_block, instance_block, confidence_block)

    def write_complete(self) -> None:
        """Append the features complete after the last row of blocks."""
        t0 = time.perf_counter()
        self.writer.write(self.vectorizer.take_complete(crs=self.crs, simplify_tolerance=self.simplify_tolerance))
        self.timings["features"] += time.perf_counter() - t0

    def close(self) -> int:
        """Write the remaining features (after the last block) and close the file; the feature count."""
        t0 = time.perf_counter()
        self.writer.write(self.vectorizer.to_geodataframe(crs=self.crs, simplify_tolerance=self.simplify_tolerance))
        n_features = self.writer.close()
        self.timings["features"] += time.perf_counter() - t0
        return n_features


@dataclass
class _Scratch:
    """What :meth:`RasterJob.open` creates: scratch folders beside the outputs, partial output names, writers."""

    work: Path                      # beside the output raster: scratch rasters and the partial raster
    partial_raster: Path
    partial_features: Path | None   # in ``features_work``
    features_work: Path | None = None
    ids: Any = None   # open rasterio writer of the provisional ids
    conf: Any = None  # open rasterio writer of the confidence

    def close(self) -> None:
        for dst in (self.ids, self.conf):
            if dst is not None and not dst.closed:
                dst.close()

    def remove(self) -> None:
        """Remove the scratch folders (and the partial outputs in them)."""
        self.close()
        for folder in (self.work, self.features_work):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


class RasterJob:
    """Inference of one input raster (or one mosaic of rasters) into a panoptic GeoTIFF and optional features.

    The constructor checks the output names (no raster is read or written);
    :meth:`prepare` checks the input and sets :attr:`bands`, :attr:`grid` and :attr:`tiling`.

    Parameters
    ----------
    in_raster:
        The input raster: a local path or any name GDAL opens (a URL such as
        ``https://...`` or ``s3://...``, ``/vsizip/...``, a subdataset string; see
        :func:`geomax.data.sources.raster_source`). Or a folder of rasters (its ``.tif`` /
        ``.tiff``) or a list of rasters, predicted as one mosaic through a VRT
        (:class:`geomax.data.mosaic.Mosaic`: one CRS, band count, data type and pixel
        grid), so objects crossing file borders are merged like those crossing tiles.
    out_raster:
        The output GeoTIFF (``.tif`` / ``.tiff``).
    out_features:
        Optional vector output (extension in :data:`~geomax.inference.vectorize.VECTOR_DRIVERS`).
    overwrite:
        Replace existing outputs; otherwise an existing output raises.

    Raises
    ------
    ArgumentError
        A wrong output extension, an output that is the input (or inside the input
        folder), features that are the raster, an empty list of rasters or a URL scheme
        GDAL does not read.
    DataError
        A folder without GeoTIFF.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    """

    #: What ``rasterio.open`` reads: a local path or a GDAL dataset name (a mosaic's VRT, set by
    #: :meth:`prepare`).
    in_raster: str | Path
    #: 1-based bands to read, in the predictor's order (set by :meth:`prepare`).
    bands: list[int]
    #: The raster's tile grid (set by :meth:`prepare`).
    grid: TileGrid
    #: The resolved tiling settings (set by :meth:`prepare`).
    tiling: TilingConfig

    def __init__(self, in_raster, out_raster: str | os.PathLike,
                 out_features: str | os.PathLike | None = None, *, overwrite: bool = False):
        self.t_start = time.perf_counter()
        self.out_raster = Path(out_raster)
        self.out_features = Path(out_features) if out_features is not None else None
        self.overwrite = bool(overwrite)
        parts = mosaic_inputs(in_raster)
        if parts is not None and len(parts) == 1:
            in_raster, parts = parts[0], None  # a folder or list of one raster is that raster
        #: The rasters of a mosaic (``None`` for one raster).
        self.mosaic_parts: list[str | Path] | None = parts
        self._given = in_raster
        self._mosaic_work: Path | None = None  # the scratch folder holding the mosaic's VRT
        if parts is None:
            self.in_raster = raster_source(in_raster)
            #: The input as messages name it (as given; for a mosaic, its folder or its rasters).
            self.in_label = str(self.in_raster) if isinstance(self.in_raster, Path) else str(in_raster)
            inputs = {"input raster": local_path(self.in_raster)}
        else:
            if isinstance(in_raster, (str, os.PathLike)):
                self.in_label = f"the mosaic of {len(parts)} rasters in '{in_raster}'"
                inputs = {"input folder": Path(in_raster)}
            else:
                shown = ", ".join(f"'{p}'" for p in parts[:3]) + (", ..." if len(parts) > 3 else "")
                self.in_label = f"the mosaic of {len(parts)} rasters ({shown})"
                inputs = {f"input raster {i}": local_path(p) for i, p in enumerate(parts, start=1)}
        if self.out_raster.suffix.lower() not in RASTER_EXTS:
            raise ArgumentError(f"out_raster '{self.out_raster}' must be a GeoTIFF (.tif).")
        if self.out_features is not None and self.out_features.suffix.lower() not in VECTOR_DRIVERS:
            raise ArgumentError(f"out_features '{self.out_features}': unknown extension '{self.out_features.suffix}'. "
                                f"Use one of {sorted(VECTOR_DRIVERS)} (.gpkg recommended).")
        check_outputs_apart(inputs, dict((what, path) for path, what in self._outputs()))
        if self.out_features is not None:
            check_outputs_apart({"output raster": self.out_raster}, {"output features": self.out_features})
        for path, what in self._outputs():
            check_replaceable(path, self.overwrite, None, what)  # also undoes what an interrupted run left
        self.timings = dict.fromkeys(("read", "predict", "stitch", "finalize", "cog", "features"), 0.0)
        self._scratch: _Scratch | None = None
        self._core_rows = _CoreRows()  # where each instance ends: features are written once complete
        self._any_class = False  # set when a written block holds a class: a void prediction is said

    def _outputs(self) -> list[tuple[Path, str]]:
        outputs = [(self.out_raster, "output raster")]
        if self.out_features is not None:
            outputs.append((self.out_features, "output features"))
        return outputs

    @property
    def in_raster_name(self) -> str:
        """The input as another process opens it: an absolute path, or the GDAL dataset name."""
        return str(self.in_raster.resolve()) if isinstance(self.in_raster, Path) else self.in_raster

    def check_input(self) -> None:
        """Check, reading headers only, that the input can be read; nothing is written.

        One raster: a local file exists, a GDAL dataset name opens
        (:func:`geomax.data.sources.check_raster`). A mosaic: every raster opens and they fit
        together (:meth:`geomax.data.mosaic.Mosaic.of`). :meth:`prepare` checks the same.

        Raises
        ------
        DataError
            The input is missing or cannot be opened, or the mosaic's rasters do not fit together.
        """
        if self.mosaic_parts is not None:
            Mosaic.of(self.mosaic_parts)
        else:
            check_raster(self._given, "input raster")

    def prepare(self, predictor: TilePredictor, tiling: TilingConfig, bands: Sequence[int] | None = None) -> None:
        """Check the input against the predictor and lay out the tile grid.

        Parameters
        ----------
        predictor:
            The predictor (its band count and names are checked).
        tiling:
            Resolved tiling settings (tile size and overlap given).
        bands:
            1-based band indexes to read, in the predictor's band order (``None``: all).

        Raises
        ------
        DataError
            The input is missing or unreadable; the rasters of a mosaic do not fit together.
        ArgumentError, InputMismatchError
            See :func:`check_bands`; an output folder is not writable.
        """
        if tiling.tile_size is None or tiling.overlap is None:
            raise ValueError("RasterJob.prepare needs a resolved TilingConfig (TilingConfig.resolve).")
        if self.mosaic_parts is not None and self._mosaic_work is None:
            self._write_mosaic()
        try:
            self._prepare(predictor, tiling, bands)
        except BaseException:
            self._remove_mosaic()
            raise

    def _write_mosaic(self) -> None:
        """Check the mosaic's rasters, then write their VRT to a scratch folder beside the output raster."""
        assert self.mosaic_parts is not None
        mosaic = Mosaic.of(self.mosaic_parts)  # reads headers only: every error comes before anything is written
        for path, what in self._outputs():
            _check_writable(path, what)
        self._mosaic_work = scratch_folder(self.out_raster)
        try:
            self.in_raster = mosaic.write_vrt(self._mosaic_work / f"{self.out_raster.stem}_mosaic.vrt")
        except OSError as exc:
            self._remove_mosaic()
            raise ArgumentError(f"Cannot write the mosaic's VRT beside '{self.out_raster}': {exc.strerror or exc}. "
                                "Choose a writable output folder.") from exc

    def _remove_mosaic(self) -> None:
        if self._mosaic_work is not None:
            shutil.rmtree(self._mosaic_work, ignore_errors=True)
            self._mosaic_work = None

    def _prepare(self, predictor: TilePredictor, tiling: TilingConfig, bands: Sequence[int] | None) -> None:
        with open_raster(self.in_raster if self.mosaic_parts is not None else self._given, "input raster") as src:
            self.bands = check_bands(src, bands, predictor, self.in_label)
            for path, what in self._outputs():
                _check_writable(path, what)
            if src.crs is None:
                warnings.warn(f"'{self.in_label}' has no CRS: the outputs will have none either, and areas are in "
                              "pixel-grid units.", UserWarning, stacklevel=4)
            tiling = _fit_to_raster(tiling, src.height, src.width, int(predictor.tile_multiple), self.in_label)
            assert tiling.tile_size is not None and tiling.overlap is not None  # resolved, checked above
            self.grid = TileGrid(src.height, src.width, tiling.tile_size, tiling.overlap)
            if predictor.band_stats is not None:
                self._check_values(src, predictor)
        self.tiling = tiling

    def _check_values(self, src, predictor: TilePredictor) -> None:
        """Warn when sampled input values or the band order do not look like the model's training data.

        Reads a 3 x 3 grid of windows of :data:`_SAMPLE_SIDE` px spread over the raster (fewer
        distinct ones on a small raster).
        """
        assert predictor.band_stats is not None
        reader = TileReader(src, self.bands)
        sample = InputSample(len(self.bands), reader.dtype)
        side = min(_SAMPLE_SIDE, src.height, src.width)
        rows = np.linspace(0, src.height - side, 3).astype(int)
        cols = np.linspace(0, src.width - side, 3).astype(int)
        for r0, c0 in dict.fromkeys((int(r), int(c)) for r in rows for c in cols):
            data, valid = reader.read(Window(c0, r0, side, side))
            sample.update(data, valid)
        descs = list(src.descriptions)
        check_sample(sample, predictor.band_stats, f"'{self.in_label}'", band_labels(descs, self.bands),
                     order_known=names_give_order(descs, predictor.band_names),
                     fix=lambda order: f"pass bands={[self.bands[i] for i in order]}", stacklevel=6)

    def open(self) -> None:
        """Create the scratch folders beside the outputs, the partial names and the scratch writers."""
        out_r, out_f = self.out_raster, self.out_features
        # a mosaic's scratch folder (its VRT) becomes the job's: removed with it
        work = self._mosaic_work if self._mosaic_work is not None else scratch_folder(out_r)
        features_work = None
        if out_f is not None:
            features_work = work if out_f.parent.resolve() == out_r.parent.resolve() else scratch_folder(out_f)
        # the partial outputs keep their final names, in a sub-folder apart from the scratch rasters
        for folder in (work, features_work):
            if folder is not None:
                (folder / "out").mkdir(exist_ok=True)
        scratch = _Scratch(work, work / "out" / out_r.name,
                           (features_work / "out" / out_f.name) if features_work is not None and out_f else None,
                           features_work if features_work is not work else None)
        self._scratch = scratch
        self._mosaic_work = None  # removed with the scratch from now on
        with rasterio.open(self.in_raster) as src:
            scratch.ids = rasterio.open(scratch.work / "ids.tif", "w", **scratch_profile(src, "uint32"))
            scratch.conf = rasterio.open(scratch.work / "conf.tif", "w", **scratch_profile(src, "uint8"))

    @property
    def scratch(self) -> _Scratch:
        """The scratch state of an opened job."""
        if self._scratch is None:
            raise RuntimeError("RasterJob.open() has not been called.")
        return self._scratch

    def write_core(self, window: Window, ids: np.ndarray, conf: np.ndarray) -> None:
        """Write stitched provisional ids (uint32) and confidence (uint8, 0-100) to the scratch rasters."""
        self.scratch.ids.write(ids, 1, window=window)
        self.scratch.conf.write(conf, 1, window=window)
        self._core_rows.add(window, ids)

    def finish(self, stitcher: TileStitcher, class_table: ClassTable,
               simplify_tolerance: float | None = None) -> RasterPrediction:
        """Write the final outputs from the scratch rasters and give them their final names.

        Parameters
        ----------
        stitcher:
            The stitcher that produced the provisional ids (its :meth:`~TileStitcher.finalize`
            look-up tables give the final class Values and instance ids).
        class_table:
            The predictor's classes (band descriptions, colour table, feature class names).
        simplify_tolerance:
            Optional polygon simplification tolerance in CRS units.
        """
        scratch = self.scratch
        scratch.close()
        with gdal_env(), rasterio.open(self.in_raster) as src:
            n_instances, n_features = self._write_outputs(src, scratch, stitcher, class_table, simplify_tolerance)
        self._publish(scratch)
        scratch.remove()
        self._scratch = None
        if not self._any_class:
            warnings.warn(f"The prediction of '{self.in_label}' is void everywhere: the model found none of its "
                          "classes there. If the model's validation PQ was low, train it longer; otherwise lower the "
                          "class threshold (--class-threshold 0.5) or check that the raster is like the training data "
                          "(bands, resolution, value range).", UserWarning, stacklevel=3)
        self.timings["total"] = time.perf_counter() - self.t_start
        return RasterPrediction(self.out_raster, self.out_features, len(self.grid), n_instances, n_features,
                                stitcher.n_merges, self.tiling, self.timings)

    def _write_outputs(self, src, scratch: _Scratch, stitcher: TileStitcher, class_table: ClassTable,
                       simplify_tolerance: float | None) -> tuple[int, int | None]:
        """Final ids block by block, the features on the way, then the COG; the instance and feature counts.

        After each row of blocks the features complete so far are appended to the partial
        features file (:class:`FeatureWriter`); the rest are written after the last row.
        """
        t0 = time.perf_counter()
        class_lut, instance_lut, n_instances = stitcher.finalize()
        dtype = panoptic_dtype(max(int(class_lut.max(initial=0)), n_instances, 100))
        features = None
        if scratch.partial_features is not None:
            assert self.out_features is not None  # set together
            vectorizer = PanopticVectorizer(class_table, src.transform, src.width,
                                            thing_last_rows=self._core_rows.instance_last_rows(instance_lut,
                                                                                               n_instances))
            writer = FeatureWriter(scratch.partial_features, layer=self.out_features.stem)
            features = _FeatureStream(vectorizer, writer, src.crs, simplify_tolerance, self.timings)
        work = scratch.work
        ids_path, conf_path, stitched = work / "ids.tif", work / "conf.tif", work / "panoptic.tif"
        with rasterio.open(ids_path) as ids_src, rasterio.open(conf_path) as conf_src, \
                rasterio.open(stitched, "w", **panoptic_profile(src, dtype)) as dst:
            describe(dst, class_table)
            for r0 in range(0, src.height, _REWRITE_BLOCK):
                for c0 in range(0, src.width, _REWRITE_BLOCK):
                    win = Window(c0, r0, min(_REWRITE_BLOCK, src.width - c0), min(_REWRITE_BLOCK, src.height - r0))
                    prov = ids_src.read(1, window=win)
                    conf = conf_src.read(1, window=win)
                    cls, inst = class_lut[prov], instance_lut[prov]
                    self._any_class = self._any_class or bool(cls.any())
                    dst.write(np.stack([cls, inst, conf]).astype(dtype), window=win)
                    if features is not None:
                        features.add_block(r0, c0, cls, inst, conf)
                if features is not None:
                    features.write_complete()
        n_features = features.close() if features is not None else None
        self.timings["finalize"] = time.perf_counter() - t0 - self.timings["features"]
        ids_path.unlink()
        conf_path.unlink()

        t0 = time.perf_counter()
        write_cog(stitched, scratch.partial_raster)
        write_class_sidecar(scratch.partial_raster, class_table)
        self.timings["cog"] = time.perf_counter() - t0
        return n_instances, n_features

    def _publish(self, scratch: _Scratch) -> None:
        """Move the complete outputs and their sidecars in as one set (:func:`geomax.publish.publish_files`).

        Old files of the set (an earlier raster's ``.aux.xml`` included) are replaced; only
        outputs already checked by :func:`~geomax.publish.check_replaceable` exist here.
        """
        moves, old_only = [], []
        pairs = [(scratch.partial_raster, self.out_raster)]
        if scratch.partial_features is not None and self.out_features is not None:
            pairs.append((scratch.partial_features, self.out_features))
        for partial, final in pairs:
            for new, dest in zip(_family(partial), _family(final)):
                if new.exists():
                    moves.append((new, dest))
                elif dest.exists():
                    old_only.append(dest)
        publish_files(moves, remove=old_only)

    def discard(self) -> None:
        """Remove the partial outputs and the scratch folder (after a failure; safe to call twice)."""
        if self._scratch is not None:
            self._scratch.remove()
            self._scratch = None
        self._remove_mosaic()
