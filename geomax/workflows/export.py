"""Export: a raster + vector labels -> training chips (ArcGIS ``Panoptic_Segmentation`` layout).

The defaults are those of :func:`geomax.data.export.export_training_data` (read from its
signature, so they are written once, there).
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..data.export import ExportInfo, export_training_data
from ..data.sources import check_raster
from ..errors import DataError
from ..log import get_logger

__all__ = ["export"]

_DEFAULTS = {name: p.default for name, p in inspect.signature(export_training_data).parameters.items()}


def export(raster: str | os.PathLike, labels, out: str | os.PathLike, *,
           class_field: str = _DEFAULTS["class_field"], thing_classes: Sequence[str] | None = None,
           class_table_source: Any = None, tile_size: int = _DEFAULTS["tile_size"], stride: int | None = None,
           chip_format: str = _DEFAULTS["chip_format"], bands: Sequence[int] | None = None,
           keep_empty: bool = not _DEFAULTS["skip_empty"],
           max_nodata_fraction: float = _DEFAULTS["max_nodata_fraction"], label_layer: str | None = None,
           background: str = _DEFAULTS["background"], overwrite: bool = False,
           log: Callable[[str], Any] | None = None, progress: bool = False) -> ExportInfo:
    """Export training chips with :func:`geomax.data.export.export_training_data` and log a summary.

    Parameters
    ----------
    raster:
        Georeferenced input raster: a local path or any name GDAL opens (``https://`` /
        ``s3://`` URLs, ``/vsizip/...``, subdataset strings).
    labels:
        Label polygons (a vector file or a GeoDataFrame) with a class field.
    out:
        Export folder (new or empty unless ``overwrite``).
    class_field:
        Field holding each feature's class name or Value.
    thing_classes:
        Classes whose features are separate instances. Without them and without
        ``class_table_source`` every class is exported as stuff (said in the log).
    class_table_source:
        Take Values, colours and thing classes from a :class:`~geomax.data.classes.ClassTable`,
        an ``.emd``, a model or export folder, or ``"synthetic"``
        (:func:`geomax.evaluate.load_class_table`).
    tile_size, stride, chip_format, bands, max_nodata_fraction, label_layer, background, overwrite:
        As :func:`~geomax.data.export.export_training_data`.
    keep_empty:
        Also export chips without any label (``skip_empty=False``).
    log:
        Where the note and the summary line go (default: the ``geomax.workflows`` logger).
    progress:
        Show the chips done (a progress bar, or the toolbox's progressor).

    Returns
    -------
    ExportInfo
        Chips written and skipped, classes, bands and their statistics.

    Raises
    ------
    DataError
        The raster or the labels do not exist, or GDAL cannot open the raster's name (checked
        before anything is written), or
        :func:`~geomax.data.export.export_training_data`'s errors.
    """
    log = log or get_logger("geomax.workflows").info
    check_raster(raster, "input raster")  # a missing file, or a URL / GDAL name that does not open
    if isinstance(labels, (str, os.PathLike)) and not Path(labels).exists():
        raise DataError(f"Label file '{labels}' does not exist. Check the path (relative paths start from the current "
                        "folder).")
    class_table = None
    if class_table_source is not None:
        from ..evaluate import load_class_table

        class_table = load_class_table(class_table_source)
    info = export_training_data(raster, labels, out, class_field=class_field, thing_classes=thing_classes,
                                class_table=class_table, tile_size=tile_size, stride=stride, chip_format=chip_format,
                                bands=bands, skip_empty=not keep_empty, max_nodata_fraction=max_nodata_fraction,
                                label_layer=label_layer, overwrite=overwrite, progress=progress, background=background)
    if class_table is None and not thing_classes:
        log("note: no thing classes given: every class is exported as stuff (no instances)."
            + _thing_hint(info.features_per_class))
    log(f"Exported {info.n_chips} chips of {info.tile_size} px to {info.out_folder} "
        f"(classes: {', '.join(info.class_table.names)}; things: {', '.join(info.class_table.thing_names) or 'none'})")
    log(info.background)
    return info


#: A class with at least this many features is named as a possible thing class when none is given.
MANY_FEATURES = 10


def _thing_hint(features_per_class: dict) -> str:
    """`` Classes with many separate features: ...`` (the classes that look like objects), or ``""``."""
    many = sorted(((n, name) for name, n in features_per_class.items() if n >= MANY_FEATURES), reverse=True)[:3]
    if not many:
        return ""
    names = [name for _, name in many]
    listed = ", ".join(f"'{name}' {n}" for n, name in many)
    return (f" Classes with many separate features ({listed}): if each feature is one object, pass --things "
            f"{' '.join(names)} (thing_classes={names}) for one instance each.")
