"""Export: a raster + vector labels -> training chips (ArcGIS ``Panoptic_Segmentation`` layout)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DataError

__all__ = ["export"]


def export(raster, labels, out, *, class_field: str = "class_name", thing_classes: Sequence[str] | None = None,
           class_table_source: Any = None, tile_size: int = 256, stride: int | None = None,
           chip_format: str = "tif", bands: Sequence[int] | None = None, keep_empty: bool = False,
           max_nodata_fraction: float = 0.5, label_layer: str | None = None, overwrite: bool = False,
           log: Callable[[str], Any] = print):
    """Export training chips with :func:`geomax.data.export.export_training_data`.

    ``class_table_source``: a ClassTable, or an ``.emd`` / model / export folder /
    ``"synthetic"`` to take Values, colours and thing classes from. Without it and
    without ``thing_classes`` every class is exported as stuff (said in the log).
    Returns the export info.
    """
    from ..data.classes import ClassTable
    from ..data.export import export_training_data

    for path, what in ((raster, "Input raster"), (labels, "Label file")):
        if isinstance(path, (str, os.PathLike)) and not Path(path).exists():
            raise DataError(f"{what} '{path}' does not exist.")
    class_table = class_table_source
    if class_table_source is not None and not isinstance(class_table_source, ClassTable):
        from ..evaluate import load_class_table

        class_table = load_class_table(class_table_source)
    elif class_table_source is None and not thing_classes:
        log("note: no thing classes given: every class is exported as stuff (no instances).")
    info = export_training_data(raster, labels, out, class_field=class_field, thing_classes=thing_classes,
                                class_table=class_table, tile_size=tile_size, stride=stride, chip_format=chip_format,
                                bands=bands, skip_empty=not keep_empty, max_nodata_fraction=max_nodata_fraction,
                                label_layer=label_layer, overwrite=overwrite, progress=False)
    log(f"Exported {info.n_chips} chips of {info.tile_size} px to {info.out_folder} "
        f"(classes: {', '.join(info.class_table.names)}; things: {', '.join(info.class_table.thing_names) or 'none'})")
    return info
