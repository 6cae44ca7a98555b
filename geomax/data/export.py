"""``export_training_data``: a georeferenced raster + vector labels -> ArcGIS ``Panoptic_Segmentation`` chips.

The geomax equivalent of ArcGIS Pro's *Export Training Data For Deep Learning*
with metadata format ``Panoptic_Segmentation`` (layout: :mod:`geomax.data.esri_layout`).
The raster is read window by window; labels are rasterized per chip with
:func:`geomax.data.rasterize.rasterize_labels`.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ArgumentError, DataError, OutputError, OutputExistsError
from ..publish import check_outputs_apart, check_replaceable, publish_folder, scratch_folder
from .classes import BACKGROUND_NAME, ClassInfo, ClassTable, default_color
from .esri_layout import (
    EMD_FILE,
    IMAGES_DIR,
    INSTANCES_DIR,
    LABELS_DIR,
    MAP_FILE,
    STATS_FILE,
    STATS_TXT,
    write_accumulated_stats,
    write_emd,
    write_map,
)
from .image_io import needs_band_masks, read_valid_pixels
from .labels import clean_label_geometries
from .normalize import BandStats, RunningBandStats
from .rasterize import feature_class_values, rasterize_labels
from .sources import local_path, open_raster

__all__ = ["export_training_data", "ExportInfo", "resolve_background", "BACKGROUND_NAME", "BACKGROUND_RULES",
           "LABELS_COVER"]

_PIXEL_TYPES = {"uint8": "U8", "int8": "S8", "uint16": "U16", "int16": "S16", "uint32": "U32", "int32": "S32",
                "float32": "F32", "float64": "F64"}


@dataclass
class ExportInfo:
    """Summary of an export.

    Attributes
    ----------
    out_folder:
        The export folder.
    n_chips:
        Chips written.
    n_skipped_empty, n_skipped_nodata:
        Chips skipped for too few labelled pixels / too much no-data.
    class_table:
        The classes written in the ``.emd``.
    band_names:
        Names of the exported bands.
    band_stats:
        Statistics of the exported bands over valid pixels of the written chips.
    tile_size, stride:
        Chip size and step in pixels.
    chip_format:
        ``"tif"`` or ``"png"``.
    n_instances:
        Thing instances written, per class name (an object cut by chip borders counts once per chip).
    seconds:
        Wall time of the export.
    megapixels:
        Raster area covered by the chip grid, in megapixels.
    background:
        The background rule applied (``"class"`` or ``"void"``) and why, in one sentence.
    background_value:
        Value of the background class unlabelled valid pixels became (``None``: they stay void).
    features_per_class:
        ``{class name: polygon features}`` of the label layer that overlap the raster.
    """

    out_folder: Path
    n_chips: int
    n_skipped_empty: int
    n_skipped_nodata: int
    class_table: ClassTable
    band_names: list[str]
    band_stats: BandStats
    tile_size: int
    stride: int
    chip_format: str
    n_instances: dict
    seconds: float
    megapixels: float
    background: str = ""
    background_value: int | None = None
    features_per_class: dict = field(default_factory=dict)


#: Values of ``background``: ``"auto"`` (a class when every labelled class is a thing), ``"class"``, ``"void"``.
BACKGROUND_RULES = ("auto", "class", "void")
_BACKGROUND_COLOR = (190, 190, 190)


#: ``"auto"``: labels with stuff classes that cover less than this share of the valid pixels do not
#: cover the image (a footprint layer exported without ``thing_classes``): the rest becomes ``background``.
LABELS_COVER = 0.9


def resolve_background(rule: str, class_table: ClassTable,
                       labelled_share: float | None = None) -> tuple[ClassTable, int | None, str]:
    """Apply the background rule to a class table: ``(class table, background Value or None, why)``.

    ``"auto"``: when every class is a thing (a footprint layer of buildings, trees, cars...),
    or when the labels cover less than :data:`LABELS_COVER` of the valid pixels
    (``labelled_share``, as the export measures it: a footprint layer exported without
    thing classes), pixels with no label are where there is none of the classes, so they
    become a stuff class ``background`` (Value one above the highest, so no Value clashes);
    when stuff classes cover the image (or the share is not known), unlabelled pixels stay
    void (ignored by training): the gaps of a full labelling. ``"class"`` / ``"void"`` force
    either (``"void"`` for partially labelled images).
    """
    if rule not in BACKGROUND_RULES:
        raise ArgumentError(f"background='{rule}' is not a rule: use one of {list(BACKGROUND_RULES)}.")
    existing = next((c for c in class_table if c.name == BACKGROUND_NAME and not c.is_thing), None)
    if rule == "void":
        return class_table, None, "Background rule 'void' (asked): unlabelled pixels stay void and are ignored."
    sparse = labelled_share is not None and labelled_share < LABELS_COVER
    if rule == "auto" and class_table.stuff_values and not sparse:
        covered = (f"cover {100 * labelled_share:.0f}% of the valid pixels with stuff classes"
                   if labelled_share is not None else "hold stuff classes")
        return class_table, None, (f"Background rule 'void': the labels {covered} "
                                   f"({', '.join(class_table.stuff_names)}), so unlabelled pixels stay void (ignored "
                                   "by training); pass background='class' if the labels cover only some classes.")
    if rule == "class":
        why = "asked"
    elif class_table.stuff_values and labelled_share is not None:  # (stuff labels cover too little: sparse)
        why = (f"the labels ({', '.join(class_table.names)}) cover only {100 * labelled_share:.0f}% of the valid "
               "pixels, so unlabelled pixels are where there is none of them; pass background='void' for partially "
               "labelled images")
    else:
        why = (f"every labelled class is a thing ({', '.join(class_table.thing_names)}), so unlabelled pixels are where "
               "there is none; pass background='void' for partially labelled images")
    if existing is not None:
        return class_table, existing.value, f"Background rule 'class' ({why}): unlabelled pixels become '{existing.name}'."
    value = max(class_table.values, default=0) + 1
    table = ClassTable(list(class_table) + [ClassInfo(value, BACKGROUND_NAME, _BACKGROUND_COLOR, False)])
    return table, value, (f"Background rule 'class' ({why}): unlabelled valid pixels become the stuff class "
                          f"'{BACKGROUND_NAME}' (Value {value}).")


def _labelled_share(src, geometries, side: int = 1024) -> float:
    """Share of the raster's valid pixels under one of ``geometries`` (polygons in the raster's CRS), on a grid
    of at most ``side`` px a side (rasterising clips them to the raster)."""
    from rasterio import features
    from rasterio.transform import from_bounds

    scale = max(src.width, src.height) / side
    shape = (max(1, int(round(src.height / max(scale, 1.0)))), max(1, int(round(src.width / max(scale, 1.0)))))
    valid = src.dataset_mask(out_shape=shape) > 0
    geoms = [g for g in geometries if g is not None and not g.is_empty]
    if not geoms or not valid.any():
        return 0.0
    labelled = features.rasterize(geoms, out_shape=shape, transform=from_bounds(*src.bounds, shape[1], shape[0]),
                                  fill=0, default_value=1, dtype="uint8").astype(bool)
    return float((labelled & valid).sum() / valid.sum())


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)  # last chip aligned to the edge: full coverage, no padding
    return starts


def _class_table_from_labels(values, thing_classes: Sequence[str] | None, class_field: str) -> ClassTable:
    uniq = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise DataError(f"Some label features have an empty '{class_field}'. Fill the field or delete them.")
        if v not in uniq:
            uniq.append(v)
    things = set(thing_classes or [])
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()) for v in uniq):
        vals = sorted(int(v) for v in uniq)
        if any(v <= 0 for v in vals):
            raise DataError(f"Field '{class_field}' holds Values {vals}; class Values must be positive (0 = no data).")
        names = [f"class_{v}" for v in vals]
        thing_names = {f"class_{int(t)}" if str(t).lstrip("-").isdigit() else str(t) for t in things}
        unknown = thing_names - set(names)
        if unknown:
            raise ArgumentError(f"thing_classes {sorted(unknown)} are not among the classes in '{class_field}': "
                                f"{names}. Give thing classes as Values of that field (1 or 'class_1').")
        return ClassTable([ClassInfo(v, n, default_color(i), n in thing_names) for i, (v, n) in enumerate(zip(vals, names))])
    names = sorted(str(v) for v in uniq)
    unknown = {str(t) for t in things} - set(names)
    if unknown:
        raise ArgumentError(f"thing_classes {sorted(unknown)} are not among the classes in field '{class_field}': "
                            f"{names}. Name thing classes exactly as they appear in that field (check spelling "
                            "and case).")
    return ClassTable.from_lists(names, things={str(t) for t in things})


def _write_chip(path: Path, array: np.ndarray, fmt: str, profile: dict) -> None:
    import rasterio

    if fmt == "png":
        prof = {"driver": "PNG", "width": array.shape[-1], "height": array.shape[-2], "count": array.shape[0],
                "dtype": array.dtype.name, "crs": profile.get("crs"), "transform": profile.get("transform")}
        with rasterio.Env(GDAL_PAM_ENABLED="YES"):
            with rasterio.open(path, "w", **prof, WORLDFILE="YES") as dst:
                dst.write(array)
        return
    prof = {"driver": "GTiff", "width": array.shape[-1], "height": array.shape[-2], "count": array.shape[0],
            "dtype": array.dtype.name, "crs": profile.get("crs"), "transform": profile.get("transform"),
            "compress": "deflate", "photometric": "MINISBLACK"}
    if profile.get("nodata") is not None:
        prof["nodata"] = profile["nodata"]
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(array)


def _local_path(labels) -> Path | None:
    """The path of a label layer given as a path (``None`` for a GeoDataFrame)."""
    return Path(labels) if isinstance(labels, (str, os.PathLike)) else None


def _refuse_models_inside(out_folder: Path) -> None:
    models = out_folder / "models"
    if models.is_dir() and any(models.iterdir()):
        raise OutputExistsError(f"The export folder '{out_folder}' holds trained models in '{models}'; replacing the "
                                "export would remove them. Move them elsewhere or export to a new folder.")


def _make_scratch(out_folder: Path) -> Path:
    try:
        return scratch_folder(out_folder)
    except OSError as exc:
        raise OutputError(f"Cannot write the export to '{out_folder.parent}': {exc.strerror or exc}. Choose a "
                          "writable folder.") from exc


def export_training_data(
    in_raster: str | os.PathLike,
    in_labels,
    out_folder: str | os.PathLike,
    class_field: str = "class_name",
    thing_classes: Sequence[str] | None = None,
    class_table: ClassTable | None = None,
    tile_size: int = 256,
    stride: int | None = None,
    chip_format: str = "tif",
    bands: Sequence[int] | None = None,
    min_label_fraction: float = 0.0,
    skip_empty: bool = True,
    max_nodata_fraction: float = 0.5,
    label_layer: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    background: str = "auto",
) -> ExportInfo:
    """Cut a raster and its vector labels into training chips in ArcGIS's ``Panoptic_Segmentation`` layout.

    Parameters
    ----------
    in_raster:
        Georeferenced raster (any band count and dtype GDAL reads): a local path or any name
        GDAL opens (``https://`` / ``s3://`` URLs, ``/vsizip/...``, subdataset strings; see
        :func:`geomax.data.sources.raster_source`), read by windows.
    in_labels:
        Label polygons: a path to any vector format geopandas reads, or a GeoDataFrame.
        Reprojected to the raster's CRS when they differ.
    out_folder:
        Folder to write (created; must be empty unless ``overwrite=True``).
    class_field:
        Field holding each feature's class, as a class name (e.g. ``"building"``) or
        an integer class Value.
    thing_classes:
        Names of the classes whose features are separate instances (things); every
        other class is stuff. Ignored when ``class_table`` is given. When neither is
        given every class is stuff.
    class_table:
        Full class table (Values, names, colours, things). Default: built from the
        distinct values of ``class_field`` (names sorted alphabetically, Values 1..C).
    tile_size:
        Chip width and height in pixels.
    stride:
        Step between chips in pixels (default ``tile_size``: no overlap).
    chip_format:
        ``"tif"`` (any dtype, georeferenced) or ``"png"`` (uint8/uint16, 1-4 bands, world file).
    bands:
        1-based band numbers to export (default: all bands).
    min_label_fraction:
        Skip chips whose share of labelled pixels is below this (0..1).
    skip_empty:
        Skip chips without any labelled pixel.
    max_nodata_fraction:
        Skip chips whose share of no-data pixels exceeds this (0..1).
    label_layer:
        Layer of a multi-layer vector file (GeoPackage) to read.
    overwrite:
        Replace the export files of an existing non-empty ``out_folder``.
    progress:
        Show a progress bar.
    background:
        What valid pixels under no label become (:func:`resolve_background`): ``"auto"``
        (the stuff class ``background`` when every labelled class is a thing or the labels
        cover less than :data:`LABELS_COVER` of the valid pixels, else void), ``"class"`` or
        ``"void"``. The rule used and why is in :attr:`ExportInfo.background`.

    Returns
    -------
    ExportInfo

    Raises
    ------
    DataError
        Unreadable raster or labels, labels without CRS or outside the raster,
        missing class field, classes not in the class table.
    ArgumentError
        Bad tile size, stride, format or band numbers.
    OutputExistsError
        ``out_folder`` is not empty and ``overwrite`` is False.
    """
    import geopandas as gpd
    import shapely

    t_start = time.perf_counter()
    out_folder = Path(out_folder)
    chip_format = str(chip_format).lower().lstrip(".")
    if chip_format in ("tiff", "gtiff"):
        chip_format = "tif"
    if chip_format not in ("tif", "png"):
        raise ArgumentError(f"chip_format='{chip_format}' is not supported: use 'tif' or 'png'.")
    tile_size = int(tile_size)
    if tile_size < 16:
        raise ArgumentError(f"tile_size={tile_size} is too small: use at least 16 pixels (256 is usual).")
    stride = tile_size if stride is None else int(stride)
    if not 1 <= stride:
        raise ArgumentError(f"stride={stride} must be a positive number of pixels.")
    for name, v in (("min_label_fraction", min_label_fraction), ("max_nodata_fraction", max_nodata_fraction)):
        if not 0.0 <= float(v) <= 1.0:
            raise ArgumentError(f"{name}={v} must be between 0 and 1.")

    # ---- the output folder (paths only: checked before the inputs are read) ----------
    check_outputs_apart({"input raster": local_path(in_raster), "label layer": _local_path(in_labels)},
                        {"export folder": out_folder})
    check_replaceable(out_folder, overwrite, "export", "export folder")
    _refuse_models_inside(out_folder)

    # ---- the raster ------------------------------------------------------
    src = open_raster(in_raster, "raster")  # a missing or corrupt file, a URL GDAL cannot open: DataError
    with src:
        if src.crs is None:
            raise DataError(f"Raster {in_raster} has no coordinate reference system. Define its projection first.")
        band_idx = list(range(1, src.count + 1)) if bands is None else [int(b) for b in bands]
        if not band_idx or any(b < 1 or b > src.count for b in band_idx):
            raise ArgumentError(f"bands={list(bands) if bands is not None else None} must be 1-based band numbers "
                                f"between 1 and {src.count} (the raster has {src.count} bands).")
        dtype = np.dtype(src.dtypes[band_idx[0] - 1])
        if chip_format == "png" and (dtype.name not in ("uint8", "uint16") or len(band_idx) > 4):
            raise ArgumentError(f"PNG chips hold 1-4 bands of uint8/uint16; this export has {len(band_idx)} bands of "
                                f"{dtype.name}. Use chip_format='tif' or select bands.")
        if tile_size > min(src.width, src.height):
            raise ArgumentError(f"tile_size={tile_size} is larger than the raster ({src.width} x {src.height} px). "
                                "Use a smaller tile size.")
        names = [src.descriptions[b - 1] or f"band_{b}" for b in band_idx]
        raster_crs = src.crs
        bounds = src.bounds
        res = src.res

        # ---- the labels --------------------------------------------------
        if isinstance(in_labels, gpd.GeoDataFrame):
            gdf = in_labels.copy()
            labels_name = "the label GeoDataFrame"
        else:
            labels_name = str(in_labels)
            if not Path(in_labels).exists():
                raise DataError(f"Labels {in_labels} do not exist. Check the path.")
            try:
                gdf = gpd.read_file(in_labels, layer=label_layer) if label_layer else gpd.read_file(in_labels)
            except Exception as exc:  # pyogrio / fiona raise many types
                raise DataError(f"Labels {in_labels} cannot be read ({exc}). Use a vector format geopandas reads.") from exc
        if gdf.crs is None:
            raise DataError(f"{labels_name} have no coordinate reference system. Define their projection "
                            "(e.g. GeoDataFrame.set_crs) before exporting.")
        if class_field not in gdf.columns:
            fields = [c for c in gdf.columns if c != gdf.geometry.name]
            raise DataError(f"{labels_name} have no field '{class_field}' (fields: {fields}). "
                            "Pass class_field= the field that holds the class.")
        gdf = clean_label_geometries(gdf, labels_name, stacklevel=3)
        gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
        if len(gdf) == 0:
            raise DataError(f"{labels_name} contain no polygon features. Export needs polygon labels.")
        if gdf.crs != raster_crs:
            gdf = gdf.to_crs(raster_crs)
        raster_box = shapely.box(*bounds)
        if not shapely.intersects(raster_box, shapely.box(*gdf.total_bounds)) or \
                not gdf.geometry.intersects(raster_box).any():
            raise DataError(f"{labels_name} do not overlap raster {in_raster} (raster bounds {tuple(bounds)}, "
                            f"label bounds {tuple(gdf.total_bounds)} in {raster_crs}). Check both layers.")
        if class_table is None:
            class_table = _class_table_from_labels(gdf[class_field].tolist(), thing_classes, class_field)
        feature_values = feature_class_values(gdf[class_field].tolist(), class_table, class_field)  # raises if unknown
        overlaps = gdf.geometry.intersects(raster_box).to_numpy()
        features_per_class = {c.name: int((feature_values[overlaps] == c.value).sum()) for c in class_table}
        share = (_labelled_share(src, gdf.geometry[overlaps]) if background == "auto" and class_table.stuff_values
                 else None)
        class_table, background_value, background_note = resolve_background(background, class_table, share)
        gdf = gdf.reset_index(drop=True)

        tmp = _make_scratch(out_folder)
        try:
            info = _export_chips(src, gdf, class_field, class_table, band_idx, names, tile_size, stride, chip_format,
                                 min_label_fraction, skip_empty, max_nodata_fraction, progress, tmp, dtype, res,
                                 background_value)
            publish_folder(tmp, out_folder, "export")
        except OSError as exc:
            raise OutputError(f"Cannot write the export to '{out_folder}': {exc.strerror or exc}. Free some space "
                              "or choose a writable folder; nothing already there was changed.") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    n_chips, n_empty, n_nodata, stats, n_instances, mpx = info
    return ExportInfo(out_folder, n_chips, n_empty, n_nodata, class_table, names, stats, tile_size, stride,
                      chip_format, n_instances, time.perf_counter() - t_start, mpx, background_note, background_value,
                      features_per_class)


def _export_chips(src, gdf, class_field, class_table, band_idx, names, tile_size, stride, chip_format,
                  min_label_fraction, skip_empty, max_nodata_fraction, progress, tmp: Path, dtype, res,
                  background_value: int | None = None):
    import shapely
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from rasterio.windows import transform as window_transform

    ext = "tif" if chip_format == "tif" else "png"
    (tmp / IMAGES_DIR).mkdir()
    (tmp / LABELS_DIR).mkdir()
    things = [c for c in class_table if c.is_thing]
    for c in things:
        (tmp / INSTANCES_DIR / c.name).mkdir(parents=True)
    label_dtype = np.uint8 if max(class_table.values) <= 255 else np.uint16
    rows = _tile_starts(src.height, tile_size, stride)
    cols = _tile_starts(src.width, tile_size, stride)
    windows = [(r, c) for r in rows for c in cols]
    sindex = gdf.sindex
    running = RunningBandStats(names)
    n_chips = n_empty = n_nodata = 0
    pairs = []
    feats_per_class = {c.name: 0 for c in class_table}
    pixels_per_class = {c.name: 0 for c in class_table}
    n_instances = {c.name: 0 for c in things}
    from ..inference.progress import Progress

    bar = Progress(len(windows), progress, "chips")
    nodata = src.nodata
    masks_needed = needs_band_masks(src, band_idx)
    with bar:
        for r0, c0 in windows:
            bar.advance()  # every window, written or skipped
            win = Window(c0, r0, tile_size, tile_size)
            wt = window_transform(win, src.transform)
            image = src.read(band_idx, window=win)
            valid = read_valid_pixels(src, band_idx, image, win, masks_needed)
            nodata_frac = 1.0 - valid.mean()
            if nodata_frac > max_nodata_fraction:
                n_nodata += 1
                continue
            hits = sindex.query(shapely.box(*window_bounds(win, src.transform)), predicate="intersects")
            sub = gdf.iloc[np.sort(hits)]
            class_map, instance_map = rasterize_labels(sub, class_field, class_table, wt, (tile_size, tile_size))
            class_map[~valid] = 0
            instance_map[~valid] = 0
            labelled = (class_map > 0).mean()  # of the label features (before the background fill)
            if (skip_empty and labelled == 0) or labelled < min_label_fraction:
                n_empty += 1
                continue
            if background_value is not None:
                class_map[(class_map == 0) & valid] = background_value
            chip_id = f"{n_chips:09d}"
            profile = {"crs": src.crs, "transform": wt, "nodata": nodata}
            _write_chip(tmp / IMAGES_DIR / f"{chip_id}.{ext}", image, chip_format, profile)
            _write_chip(tmp / LABELS_DIR / f"{chip_id}.{ext}", class_map[None].astype(label_dtype), chip_format,
                        {"crs": src.crs, "transform": wt})
            for c in things:
                sel = (class_map == c.value) & (instance_map > 0)
                ids = np.unique(instance_map[sel])
                lut = np.zeros(int(instance_map.max()) + 1, dtype=np.int64)
                lut[ids] = np.arange(1, ids.size + 1)
                inst = np.where(sel, lut[instance_map], 0)
                n_instances[c.name] += int(ids.size)
                inst_dtype = np.uint8 if ids.size < 256 else np.uint16
                _write_chip(tmp / INSTANCES_DIR / c.name / f"{chip_id}.{ext}", inst[None].astype(inst_dtype), chip_format,
                            {"crs": src.crs, "transform": wt})
            running.update(image, valid)
            for c in class_table:
                npx = int((class_map == c.value).sum())
                pixels_per_class[c.name] += npx
            sub_values = feature_class_values(sub[class_field].tolist(), class_table, class_field)
            for c in class_table:
                feats_per_class[c.name] += int((sub_values == c.value).sum())
            pairs.append((f"{IMAGES_DIR}/{chip_id}.{ext}", f"{LABELS_DIR}/{chip_id}.{ext}"))
            n_chips += 1
    if n_chips == 0:
        raise DataError(f"No chip was written: {n_empty} chips had too few labels and {n_nodata} too much no-data. "
                        "Lower min_label_fraction, raise max_nodata_fraction, or check that labels cover the raster.")
    stats = running.result()
    write_map(tmp / MAP_FILE, pairs)
    write_emd(tmp / EMD_FILE, class_table, (tile_size, tile_size), names, stats,
              [b - 1 for b in band_idx], _PIXEL_TYPES.get(dtype.name, dtype.name),
              extra={"ChipFormat": chip_format.upper(), "StrideX": stride, "StrideY": stride,
                     **({"BackgroundClassValue": background_value} if background_value is not None else {})})
    write_accumulated_stats(tmp / STATS_FILE, {
        "NumBands": len(band_idx),
        "TileSizeX": tile_size,
        "TileSizeY": tile_size,
        "NumTiles": n_chips,
        "ImageSpaceUsed": "MAP_SPACE",
        "MinCellSize": {"x": float(res[0]), "y": float(res[1])},
        "MaxCellSize": {"x": float(res[0]), "y": float(res[1])},
        "FeatureStats": {
            "NumFeaturesTotal": int(sum(feats_per_class.values())),
            "NumFeaturesPerClass": [feats_per_class[c.name] for c in class_table],
            "NumImagesTotal": n_chips,
        },
        "NumPixelsPerClass": [pixels_per_class[c.name] for c in class_table],
        "NumInstancesPerThingClass": n_instances,
        "BandStats": stats.to_emd(),
    })
    lines = [f"Panoptic_Segmentation export: {n_chips} chips of {tile_size} x {tile_size} px, stride {stride}",
             f"skipped: {n_empty} with too few labels, {n_nodata} with too much no-data",
             f"bands: {', '.join(names)}"]
    lines += [f"class {c.value} {c.name} ({'thing' if c.is_thing else 'stuff'}): {pixels_per_class[c.name]} px"
              + (f", {n_instances[c.name]} instances" if c.is_thing else "") for c in class_table]
    (tmp / STATS_TXT).write_text("\n".join(lines) + "\n")
    mpx = len(windows) * tile_size * tile_size / 1e6
    return n_chips, n_empty, n_nodata, stats, n_instances, mpx
