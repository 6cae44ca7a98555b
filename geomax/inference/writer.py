"""Writing the panoptic raster: scratch GeoTIFFs by windows, then a cloud-optimised GeoTIFF.

Layout of the final raster (one data type for all bands, the smallest of
uint8 / uint16 / uint32 that holds the largest class Value and instance id):

* band 1 ``class``: class Value, with the class table's colour table (uint8 / uint16 only).
  A TIFF palette needs a one-band image, so the colour table is written to the
  ``<name>.tif.aux.xml`` sidecar (GDAL PAM), which GDAL, QGIS and ArcGIS read;
* band 2 ``instance_id``: thing instance id, unique across the raster, 0 for stuff and void;
* band 3 ``confidence``: 0-100 (predicted pixels are at least 1).

The raster's no-data value is 0: a pixel with class 0 is input no-data (or a
pixel the model left void) and is 0 in all three bands.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from ..data.classes import ClassTable

__all__ = ["PANOPTIC_BANDS", "NODATA", "panoptic_dtype", "scratch_profile", "panoptic_profile", "colormap",
           "write_cog", "write_colortable_sidecar", "describe"]

#: Band descriptions of the panoptic raster.
PANOPTIC_BANDS = ("class", "instance_id", "confidence")
#: No-data value of the panoptic raster (all bands).
NODATA = 0


def panoptic_dtype(max_value: int) -> str:
    """Smallest unsigned type that holds ``max_value`` (class Values, instance ids, 100)."""
    if max_value <= np.iinfo(np.uint8).max:
        return "uint8"
    if max_value <= np.iinfo(np.uint16).max:
        return "uint16"
    return "uint32"


def _georef(src) -> dict:
    return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}


def scratch_profile(src, dtype: str, count: int = 1) -> dict:
    """Profile of an uncompressed, tiled scratch GeoTIFF on the grid of ``src``."""
    return {"driver": "GTiff", "dtype": dtype, "count": count, "tiled": True, "blockxsize": 256,
            "blockysize": 256, "BIGTIFF": "IF_SAFER", "sparse_ok": True, **_georef(src)}


def panoptic_profile(src, dtype: str) -> dict:
    """Profile of the (scratch) 3-band panoptic GeoTIFF, before conversion to a COG."""
    prof = scratch_profile(src, dtype, count=3)
    prof["nodata"] = NODATA
    prof["photometric"] = "MINISBLACK"
    prof["interleave"] = "band"
    return prof


def colormap(class_table: ClassTable) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class Value -> RGBA, 0 (no data) transparent."""
    cmap = {0: (0, 0, 0, 0)}
    for c in class_table:
        r, g, b = (int(x) for x in c.color[:3])
        cmap[int(c.value)] = (r, g, b, 255)
    return cmap


def describe(dst, class_table: ClassTable) -> None:
    """Band descriptions, colour table and class names on an open panoptic dataset."""
    for i, name in enumerate(PANOPTIC_BANDS, start=1):
        dst.set_band_description(i, name)
    dst.update_tags(1, **{f"CLASS_{c.value}": c.name for c in class_table})
    dst.update_tags(1, THING_CLASSES=",".join(str(v) for v in class_table.thing_values))


def write_colortable_sidecar(raster_path: str | os.PathLike, class_table: ClassTable) -> Path | None:
    """Write band 1's colour table to ``<raster>.aux.xml`` (GDAL PAM); ``None`` when Values exceed uint16."""
    cmap = colormap(class_table)
    top = max(cmap)
    if top > np.iinfo(np.uint16).max:
        return None
    entries = "\n".join(
        '      <Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*cmap.get(v, (0, 0, 0, 0))) for v in range(top + 1))
    xml = ("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <ColorInterp>Palette</ColorInterp>\n"
           f"    <ColorTable>\n{entries}\n    </ColorTable>\n  </PAMRasterBand>\n</PAMDataset>\n")
    side = Path(str(raster_path) + ".aux.xml")
    side.write_text(xml)
    return side


def write_cog(src_path: str | os.PathLike, dst_path: str | os.PathLike, blocksize: int = 256,
              compress: str = "DEFLATE") -> None:
    """Copy a GeoTIFF to a cloud-optimised GeoTIFF (tiled, compressed, nearest-neighbour overviews)."""
    rasterio.shutil.copy(
        src_path, dst_path, driver="COG", COMPRESS=compress, PREDICTOR="YES", BLOCKSIZE=blocksize,
        OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="NEAREST", RESAMPLING="NEAREST", BIGTIFF="IF_SAFER",
    )
