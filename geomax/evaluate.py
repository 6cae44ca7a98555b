"""Panoptic quality of a predicted panoptic raster against reference labels.

Running a model on an image first and writing the metrics file are workflow steps:
:func:`geomax.workflows.evaluate.evaluate` and :func:`~geomax.workflows.evaluate.evaluate_model`.

The prediction is a panoptic GeoTIFF as :func:`geomax.predict_raster` writes it
(band 1 class Value, band 2 instance id, 0 = void). The reference is either

* vector labels (any format geopandas reads) with a class field, burned onto the
  prediction's grid window by window with :func:`geomax.data.rasterize.rasterize_labels`
  (every thing feature is one instance), or
* a raster on the same grid: band 1 class Value and band 2 instance id, or a class
  raster plus a separate instance raster (the pair exported by ArcGIS).

Both rasters are read by windows and streamed through
:class:`geomax.metrics.PanopticEvaluator`, so memory stays flat whatever the
raster's size. Panoptic quality is computed per window, as panopticapi does per
image: an object cut by a window border counts as one segment in each window
it touches. The default window (4096 px) covers most test scenes in one piece,
which gives exactly the whole-scene result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .data.classes import ClassTable
from .data.sources import open_raster, raster_source
from .errors import ArgumentError, DataError, InputMismatchError

__all__ = ["evaluate_raster", "load_class_table", "class_table_from_tags", "format_metrics", "VECTOR_SUFFIXES",
           "CLASS_FIELD_CANDIDATES"]

#: File suffixes read as vector reference labels (anything else is opened as a raster).
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".parquet", ".sqlite")
#: Class fields tried, in order, when ``class_field`` is not given.
CLASS_FIELD_CANDIDATES = ("class_name", "Classname", "ClassName", "classname", "class", "Class",
                          "class_value", "Classvalue", "ClassValue", "classvalue", "label", "Label")


# --------------------------------------------------------------------------- class table
def load_class_table(source) -> ClassTable:
    """The class table from a :class:`ClassTable`, a model or a file that carries one.

    Parameters
    ----------
    source:
        A :class:`ClassTable`; an object with a ``class_table`` attribute (a
        ``MaXDeepLab`` model, ``DataLoaders`` from ``prepare_data``); the path of a
        model folder, ``.emd`` or ``.dlpk``; a training-data export folder (its
        ``esri_model_definition.emd``); or the string ``"synthetic"`` for the
        classes of the built-in synthetic scenes.

    Raises
    ------
    DataError
        The source holds no class list.
    """
    import json
    import zipfile

    if isinstance(source, ClassTable):
        return source
    if hasattr(source, "class_table"):
        return source.class_table
    if isinstance(source, str) and source.lower() == "synthetic":
        from .data.synthetic import SYNTHETIC_CLASSES

        return SYNTHETIC_CLASSES
    path = Path(source)
    if not path.exists():
        raise DataError(f"Class source '{path}' does not exist. Give a model folder, .emd, .dlpk or a "
                        "training-data export folder.")
    if path.is_dir():
        emds = [path / "esri_model_definition.emd"] if (path / "esri_model_definition.emd").exists() \
            else sorted(path.glob("*.emd"))
        if not emds:
            raise DataError(f"No .emd file in '{path}'. Give a model folder or a training-data export folder.")
        path = emds[0]
    try:
        if path.suffix.lower() == ".dlpk":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".emd")]
                if not names:
                    raise DataError(f"'{path}' holds no .emd file; it is not a model package. Give the .dlpk that "
                                    "geomax or ArcGIS saved (or its model folder / .emd).")
                emd = json.loads(zf.read(names[0]).decode("utf-8"))
        else:
            emd = json.loads(path.read_text())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"Cannot read classes from '{path}' ({exc}). Is it a valid .emd / .dlpk? Check that it is "
                        "an .emd (JSON) or .dlpk (zip) that is not cut short; save or copy it again.") from exc
    return ClassTable.from_emd(emd, source=str(path))


def _is_vector(path) -> bool:
    return os.path.splitext(str(path).split("?", 1)[0])[1].lower() in VECTOR_SUFFIXES


def _pick_class_field(gdf, class_field: str | None, source: Path) -> str:
    fields = [c for c in gdf.columns if c != gdf.geometry.name]
    if class_field is not None:
        if class_field not in fields:
            raise DataError(f"The reference labels '{source}' have no field '{class_field}' (fields: {fields}). "
                            "Pass the field that holds the class name or Value.")
        return class_field
    for name in CLASS_FIELD_CANDIDATES:
        if name in fields:
            return name
    raise DataError(f"Cannot tell which field of '{source}' holds the class (fields: {fields}). "
                    "Pass class_field=... (the field with class names or Values).")


# --------------------------------------------------------------------------- reading helpers
def _same_grid(a, b) -> bool:
    return (a.width, a.height) == (b.width, b.height) and a.transform.almost_equals(b.transform) and \
        (a.crs == b.crs or a.crs is None or b.crs is None)


def _windows(height: int, width: int, size: int):
    from rasterio.windows import Window

    for r0 in range(0, height, size):
        for c0 in range(0, width, size):
            yield Window(c0, r0, min(size, width - c0), min(size, height - r0))


def _instances_from_components(class_map: np.ndarray, class_table: ClassTable) -> np.ndarray:
    """Instance ids from connected components of each thing class (reference rasters without instances)."""
    from scipy import ndimage

    out = np.zeros(class_map.shape, np.int32)
    next_id = 1
    for value in class_table.thing_values:
        labels, n = ndimage.label(class_map == value)
        if n:
            out[labels > 0] = labels[labels > 0] + next_id - 1
            next_id += n
    return out


# --------------------------------------------------------------------------- evaluation
def evaluate_raster(
    prediction: str | os.PathLike,
    reference: str | os.PathLike | Any,
    class_table=None,
    class_field: str | None = None,
    reference_instances: str | os.PathLike | None = None,
    valid_raster: str | os.PathLike | None = None,
    window_size: int = 4096,
    progress: bool = True,
) -> dict:
    """Panoptic quality (PQ, SQ, RQ: all / things / stuff / per class) of a panoptic raster.

    Parameters
    ----------
    prediction:
        Panoptic GeoTIFF written by :func:`geomax.predict_raster`: band 1 class
        Value (0 = void), band 2 instance id. Every raster argument is a local path or any
        name GDAL opens (``https://`` / ``s3://`` URL, ``/vsizip/...``:
        :func:`geomax.data.sources.raster_source`).
    reference:
        Reference labels: a vector file (or a GeoDataFrame) with a class field, or a
        raster on the prediction's grid (band 1 class Value, optional band 2 instance id).
    class_table:
        The classes: a :class:`ClassTable`, a model, a model folder / ``.emd`` /
        ``.dlpk``, an export folder, or ``"synthetic"``. ``None`` reads the class
        names that :func:`geomax.predict_raster` writes in the raster's tags (or a
        model folder beside the prediction).
    class_field:
        Field of the vector labels holding class names or Values (default: the
        first of :data:`CLASS_FIELD_CANDIDATES` present).
    reference_instances:
        Separate instance raster (0 = background) when ``reference`` is a one-band
        class raster. Without any instance band, thing instances are the connected
        components of each thing class.
    valid_raster:
        Raster on the same grid (the input image the prediction was made from) whose
        no-data pixels are left out of the evaluation. Give it when the image has
        no-data: the panoptic raster's no-data value 0 is also its void class, so
        it cannot tell no-data from pixels predicted as void.
    window_size:
        Side of the windows streamed through the evaluator (pixels).
    progress:
        Show a progress bar.

    Returns
    -------
    dict
        ``{"all"|"things"|"stuff": {"pq", "sq", "rq", "n"}, "per_class": {name: {...}}}``
        as :meth:`geomax.metrics.PanopticEvaluator.compute` returns it, plus
        ``"n_pixels"`` (evaluated pixels) and ``"window_size"``.

    Raises
    ------
    DataError
        A file is missing or unreadable, the class field is missing, the labels hold
        unknown classes or do not overlap the prediction.
    InputMismatchError
        A reference / valid raster is not on the prediction's grid.
    """
    import rasterio
    from rasterio.windows import transform as window_transform

    from .data.rasterize import rasterize_labels
    from .metrics import PanopticEvaluator

    if int(window_size) < 16:
        raise ArgumentError(f"window_size={window_size} is too small; use at least 256 pixels.")
    window_size = int(window_size)
    if class_table is not None:
        class_table = load_class_table(class_table)  # fail on a bad class source before opening anything

    pred_src = open_raster(prediction, "prediction raster")
    stack = [pred_src]
    try:
        if class_table is None:
            class_table = class_table_from_tags(pred_src) or _class_table_near(prediction)
        class_table = load_class_table(class_table)
        if pred_src.count < 2:
            raise DataError(f"'{prediction}' has {pred_src.count} band; a panoptic raster has band 1 class Value and "
                            "band 2 instance id (as written by geomax predict). Pass the panoptic raster that "
                            "geomax predict wrote (to score an image, evaluate it with a model instead).")
        # the reference is either a GeoDataFrame (gdf, vector_field) or a raster (ref_src, optional inst_src)
        gdf: Any = None
        ref_src: Any = None
        inst_src: Any = None
        valid_src: Any = None
        vector_field = ""
        if not isinstance(reference, (str, os.PathLike)):
            gdf = reference  # a GeoDataFrame
            ref_path: Any = Path("<GeoDataFrame>")
        else:
            ref_path = raster_source(reference)  # a local path, or a name GDAL (and pyogrio) open
            if isinstance(ref_path, Path) and not ref_path.exists():
                raise DataError(f"The reference labels '{ref_path}' do not exist. Check the path (relative paths "
                                "start from the current folder).")
        if gdf is not None or _is_vector(ref_path):
            gdf = _read_reference_vector(gdf, ref_path, pred_src)
            vector_field = _pick_class_field(gdf, class_field, ref_path)
            # fail early on unknown classes, before any work
            from .data.rasterize import feature_class_values

            feature_class_values(gdf[vector_field].tolist(), class_table, vector_field)
        else:
            ref_src = open_raster(ref_path, "reference raster")
            stack.append(ref_src)
            if not _same_grid(pred_src, ref_src):
                raise InputMismatchError(
                    f"The reference raster '{ref_path}' ({ref_src.width}x{ref_src.height}, {ref_src.crs}) is not on the "
                    f"prediction's grid ({pred_src.width}x{pred_src.height}, {pred_src.crs}). Resample it onto the "
                    "prediction's grid, or give the labels as vectors.")
            if reference_instances is not None:
                inst_src = open_raster(reference_instances, "reference instance raster")
                stack.append(inst_src)
                if not _same_grid(pred_src, inst_src):
                    raise InputMismatchError(f"The reference instance raster '{reference_instances}' is not on the "
                                             "prediction's grid. Resample it onto the prediction's grid (same size, "
                                             "transform and CRS as the reference raster).")
        if valid_raster is not None:
            valid_src = open_raster(valid_raster, "valid-pixel raster")
            stack.append(valid_src)
            if not _same_grid(pred_src, valid_src):
                raise InputMismatchError(f"'{valid_raster}' is not on the prediction's grid; give the input image "
                                         "the prediction was made from.")

        evaluator = PanopticEvaluator(class_table)
        windows = list(_windows(pred_src.height, pred_src.width, window_size))
        n_pixels = 0
        for window in _progress(windows, progress):
            h, w = int(window.height), int(window.width)
            pred_class = pred_src.read(1, window=window).astype(np.int64)
            pred_inst = pred_src.read(2, window=window).astype(np.int64)
            # The panoptic raster's no-data value (0) is also the void class, so no-data comes from valid_raster.
            valid = np.ones((h, w), bool)
            if valid_src is not None:
                valid &= valid_src.dataset_mask(window=window) > 0
            if gdf is not None:
                gt_class, gt_inst = rasterize_labels(gdf, vector_field, class_table,
                                                     window_transform(window, pred_src.transform), (h, w))
            else:
                gt_class = ref_src.read(1, window=window).astype(np.int64)
                if _has_mask(ref_src):
                    gt_class[ref_src.read_masks(1, window=window) == 0] = 0
                if inst_src is not None:
                    gt_inst = inst_src.read(1, window=window)
                elif ref_src.count >= 2:
                    gt_inst = ref_src.read(2, window=window)
                else:
                    gt_inst = _instances_from_components(gt_class, class_table)
            gt_class = np.where(valid, gt_class, 0)
            pred_class = np.where(valid, pred_class, 0)
            n_pixels += int(valid.sum())
            evaluator.update(pred_class, pred_inst, gt_class, np.asarray(gt_inst, dtype=np.int64))
        metrics = evaluator.compute()
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"Reading the rasters failed ({exc}). Check that the prediction and reference rasters are "
                        "complete and readable (not cut short or still being written), then retry.") from exc
    finally:
        for src in stack:
            src.close()
    metrics["n_pixels"] = n_pixels
    metrics["window_size"] = window_size
    return metrics


def class_table_from_tags(src) -> ClassTable | None:
    """Class table from the tags :func:`geomax.predict_raster` writes on band 1 (``CLASS_<Value>``,
    ``THING_CLASSES``) and its colour table; ``None`` when the raster has none."""
    from .data.classes import ClassInfo

    tags = src.tags(1)
    values = sorted(int(k[6:]) for k in tags if k.startswith("CLASS_") and k[6:].isdigit())
    if not values:
        return None
    things = {int(v) for v in tags.get("THING_CLASSES", "").split(",") if v.strip().lstrip("-").isdigit()}
    try:
        cmap = src.colormap(1)
    except ValueError:  # no colour table
        cmap = {}
    classes = [ClassInfo(v, tags[f"CLASS_{v}"], tuple(cmap[v][:3]) if v in cmap else (128, 128, 128), v in things)
               for v in values]
    return ClassTable(classes)


def _has_mask(src) -> bool:
    """True when band 1 has a real no-data mask (not the all-valid default)."""
    from rasterio.enums import MaskFlags

    return MaskFlags.all_valid not in src.mask_flag_enums[0]


def _read_reference_vector(gdf, path: Path, pred_src):
    import geopandas as gpd
    import shapely

    from .data.labels import clean_label_geometries

    if gdf is None:
        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several types for unreadable files
            raise DataError(f"Cannot read the reference labels '{path}' ({exc}). Is it a vector file? Use a vector "
                            "format geopandas reads (GeoPackage, shapefile, GeoJSON) or a label raster.") from exc
    if gdf.crs is None:
        raise DataError(f"The reference labels '{path}' have no CRS. Define their CRS (e.g. in a GIS) and retry.")
    if pred_src.crs is not None and gdf.crs != pred_src.crs:
        gdf = gdf.to_crs(pred_src.crs)
    left, bottom, right, top = pred_src.bounds
    gdf = clean_label_geometries(gdf, f"The reference labels '{path}'", stacklevel=4)
    gdf = gdf[gdf.intersects(shapely.box(left, bottom, right, top))]
    if len(gdf) == 0:
        raise DataError(f"No reference label of '{path}' overlaps the prediction raster (bounds "
                        f"{tuple(round(v, 2) for v in pred_src.bounds)}, CRS {pred_src.crs}). Check the CRS and extent.")
    return gdf


def _class_table_near(prediction) -> ClassTable:
    """The class table of a model folder next to a local prediction (as ``geomax demo`` lays it out)."""
    path = raster_source(prediction)
    folders = (path.parent, path.parent / "model") if isinstance(path, Path) else ()
    for folder in folders:
        if folder.is_dir() and any(folder.glob("*.emd")):
            return load_class_table(folder)
    raise ArgumentError(f"Which classes does '{prediction}' use? Pass class_table= a model folder, .emd / .dlpk, "
                        "an export folder, or 'synthetic'.")


def _progress(items, show: bool):
    """``items``, counted on a progress bar (or the toolbox's progressor) when ``show``."""
    if not show or len(items) < 2:
        yield from items
        return
    from .inference.progress import Progress

    with Progress(len(items), True, "windows") as bar:
        for item in items:
            yield item
            bar.advance()


def format_metrics(metrics: dict) -> str:
    """Plain-text table of PQ / SQ / RQ (percent): all, things, stuff, then each class."""
    def pct(v):
        return "   n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * float(v):6.1f}"

    lines = [f"{'':<14}{'PQ':>6} {'SQ':>6} {'RQ':>6}"]
    for key in ("all", "things", "stuff"):
        if key in metrics:
            m = metrics[key]
            lines.append(f"{key:<14}{pct(m['pq'])} {pct(m['sq'])} {pct(m['rq'])}   ({m.get('n', 0)} classes)")
    per = metrics.get("per_class", {})
    if per:
        lines.append("")
        lines.append(f"{'class':<14}{'PQ':>6} {'SQ':>6} {'RQ':>6} {'TP':>6} {'FP':>6} {'FN':>6}")
        for name, m in per.items():
            lines.append(f"{str(name)[:13]:<14}{pct(m['pq'])} {pct(m['sq'])} {pct(m['rq'])} "
                         f"{m.get('tp', 0):>6} {m.get('fp', 0):>6} {m.get('fn', 0):>6}")
    return "\n".join(lines)
