"""Writing the panoptic raster: scratch GeoTIFFs by windows, then a cloud-optimised GeoTIFF.

Layout of the final raster (one data type for all bands, the smallest of
uint8 / uint16 / uint32 that holds the largest class Value and instance id):

* band 1 ``class``: class Value. Its class table goes to the ``<name>.tif.aux.xml``
  sidecar (GDAL PAM), which GDAL, QGIS and ArcGIS read beside the raster:

  - a raster attribute table (:data:`RAT_COLUMNS`: ``Value``, ``ClassName``,
    ``IsThing``, ``Red``, ``Green``, ``Blue``; one row per class, by Value);
  - a colour table (class colours, 0 transparent), when the Values fit 0-65535.

  A TIFF holds a palette only in a one-band image and no attribute table at all, so
  neither can live inside this three-band file; the band also carries the tags
  ``CLASS_<Value>`` (name) and ``THING_CLASSES`` inside the TIFF;
* band 2 ``instance_id``: thing instance id, unique across the raster, 0 for stuff and void;
* band 3 ``confidence``: 0-100 (predicted pixels are at least 1).

The raster's no-data value is 0: a pixel with class 0 is input no-data (or a
pixel the model left void) and is 0 in all three bands.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from ..data.classes import ClassTable

__all__ = ["PANOPTIC_BANDS", "NODATA", "RAT_COLUMNS", "panoptic_dtype", "scratch_profile", "panoptic_profile",
           "colormap", "attribute_rows", "class_sidecar_xml", "write_class_sidecar",
           "write_cog", "describe"]

#: Band descriptions of the panoptic raster.
PANOPTIC_BANDS = ("class", "instance_id", "confidence")
#: No-data value of the panoptic raster (all bands).
NODATA = 0
#: Columns of band 1's raster attribute table: (name, GDAL field type, GDAL field usage).
RAT_COLUMNS = (("Value", "Integer", "MinMax"), ("ClassName", "String", "Name"), ("IsThing", "Integer", "Generic"),
               ("Red", "Integer", "Red"), ("Green", "Integer", "Green"), ("Blue", "Integer", "Blue"))
# GDAL's GDALRATFieldType and GDALRATFieldUsage codes, as PAM XML stores them
_FIELD_TYPES = {"Integer": 0, "Real": 1, "String": 2}
_FIELD_USAGES = {"Generic": 0, "PixelCount": 1, "Name": 2, "Min": 3, "Max": 4, "MinMax": 5, "Red": 6, "Green": 7,
                 "Blue": 8, "Alpha": 9}
#: Largest Value a colour table holds (GDAL colour tables cover 0-65535).
_MAX_PALETTE_VALUE = int(np.iinfo(np.uint16).max)


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


def attribute_rows(class_table: ClassTable) -> list[tuple[int, str, int, int, int, int]]:
    """Rows of band 1's raster attribute table (:data:`RAT_COLUMNS`), one per class, by Value."""
    rows = []
    for c in sorted(class_table, key=lambda c: int(c.value)):
        r, g, b = (int(x) for x in c.color[:3])
        rows.append((int(c.value), str(c.name), int(bool(c.is_thing)), r, g, b))
    return rows


def describe(dst, class_table: ClassTable) -> None:
    """Band descriptions and class tags (``CLASS_<Value>`` names, ``THING_CLASSES``) on an open panoptic dataset."""
    for i, name in enumerate(PANOPTIC_BANDS, start=1):
        dst.set_band_description(i, name)
    dst.update_tags(1, **{f"CLASS_{c.value}": c.name for c in class_table})
    dst.update_tags(1, THING_CLASSES=",".join(str(v) for v in class_table.thing_values))


def class_sidecar_xml(class_table: ClassTable) -> str:
    """GDAL PAM XML of band 1: colour table (Values up to 65535) and raster attribute table.

    Built by hand: rasterio writes neither a raster attribute table nor a colour table of
    one band of a multi-band TIFF, and GDAL's own bindings are not a dependency.
    """
    pam = ET.Element("PAMDataset")
    band = ET.SubElement(pam, "PAMRasterBand", band="1")
    cmap = colormap(class_table)
    top = max(cmap)
    if top <= _MAX_PALETTE_VALUE:
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        for v in range(top + 1):
            r, g, b, a = cmap.get(v, (0, 0, 0, 0))
            ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, field_type, usage) in enumerate(RAT_COLUMNS):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = name
        ET.SubElement(defn, "Type", typeAsString=field_type).text = str(_FIELD_TYPES[field_type])
        ET.SubElement(defn, "Usage", usageAsString=usage).text = str(_FIELD_USAGES[usage])
    for i, row in enumerate(attribute_rows(class_table)):
        elem = ET.SubElement(rat, "Row", index=str(i))
        for value in row:
            ET.SubElement(elem, "F").text = str(value)
    ET.indent(pam, space="  ")
    return ET.tostring(pam, encoding="unicode") + "\n"


def write_class_sidecar(raster_path: str | os.PathLike, class_table: ClassTable) -> Path:
    """Write band 1's class table to ``<raster>.aux.xml`` (:func:`class_sidecar_xml`); the sidecar's path.

    The sidecar is part of the raster's output set: :class:`~geomax.inference.job.RasterJob`
    publishes, replaces and removes it together with the raster.
    """
    side = Path(str(raster_path) + ".aux.xml")
    side.write_text(class_sidecar_xml(class_table), encoding="utf-8")
    return side


def write_cog(src_path: str | os.PathLike, dst_path: str | os.PathLike, blocksize: int = 256,
              compress: str = "DEFLATE") -> None:
    """Copy a GeoTIFF to a cloud-optimised GeoTIFF (tiled, compressed, nearest-neighbour overviews)."""
    rasterio.shutil.copy(
        src_path, dst_path, driver="COG", COMPRESS=compress, PREDICTOR="YES", BLOCKSIZE=blocksize,
        OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="NEAREST", RESAMPLING="NEAREST", BIGTIFF="IF_SAFER",
    )
