"""Several rasters as one: a GDAL VRT mosaic of a folder of tiles or a list of rasters.

``predict_raster`` predicts a folder or a list of rasters through one VRT, so an object
crossing a file border is stitched like one crossing a tile border. :class:`Mosaic`
checks that the rasters fit together (one CRS, band count, data type, no-data value and
pixel size, north-up, on one pixel grid) and writes the VRT XML itself: GDAL's Python
bindings and ``gdalbuildvrt`` are not a geomax dependency and rasterio has no VRT
builder, so this small writer is hand-made (``SimpleSource`` / ``ComplexSource``
entries, as ``gdalbuildvrt`` writes them).
"""
from __future__ import annotations

import math
import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import ArgumentError, DataError
from .sources import open_raster, raster_source

__all__ = ["MOSAIC_EXTS", "Mosaic", "MosaicPart", "folder_rasters", "mosaic_inputs", "write_mosaic_vrt"]

#: Extensions of the rasters a folder mosaic is made of.
MOSAIC_EXTS = (".tif", ".tiff")
#: GDAL's names of the data types a VRT band may have.
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64"}
_GRID_TOLERANCE = 1e-3  # of a pixel: offsets closer than this to whole pixels are on the grid


def folder_rasters(folder: Path, purpose: str) -> list[Path]:
    """The GeoTIFFs (:data:`MOSAIC_EXTS`) of a folder, sorted; a :class:`DataError` naming ``purpose``
    (``"mosaic"``, ``"predict"``) when it holds none."""
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in MOSAIC_EXTS and p.is_file())
    if not found:
        raise DataError(f"The folder '{folder}' holds no GeoTIFF (.tif / .tiff) to {purpose}. Check the folder, "
                        "or give the rasters as a list of paths.")
    return found


def mosaic_inputs(rasters) -> list[str | Path] | None:
    """The rasters of a mosaic, or ``None`` when ``rasters`` is one raster.

    Parameters
    ----------
    rasters:
        One raster (path or GDAL dataset name: ``None`` is returned), a local folder (its
        ``.tif`` / ``.tiff`` files, in name order) or a list of rasters (in its order).

    Returns
    -------
    list or None
        The rasters as :func:`~geomax.data.sources.raster_source` gives them.

    Raises
    ------
    DataError
        The folder holds no GeoTIFF.
    ArgumentError
        An empty list, or an entry that is not a path or a dataset name.
    """
    if isinstance(rasters, (str, os.PathLike)):
        source = raster_source(rasters)
        if isinstance(source, Path) and source.is_dir():
            return list(folder_rasters(source, "mosaic"))  # as list[str | Path]
        return None
    try:
        items = list(rasters)
    except TypeError:
        raise ArgumentError(f"A raster is a path, a GDAL dataset name, a folder or a list of those; got "
                            f"{type(rasters).__name__}.") from None
    if not items:
        raise ArgumentError("The list of rasters is empty; give at least one raster.")
    return [raster_source(r) for r in items]


@dataclass(frozen=True)
class MosaicPart:
    """One raster of a :class:`Mosaic` and where it lies in the mosaic's pixel grid."""

    source: str | Path   # what rasterio opens (a local path or a GDAL dataset name)
    row: int
    col: int
    height: int
    width: int
    block: tuple[int, int]  # (rows, cols) of its band 1 blocks

    @property
    def filename(self) -> str:
        """The name written in the VRT: an absolute path, or the dataset name."""
        return os.path.abspath(self.source) if isinstance(self.source, Path) else self.source


def _same(a, b) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@dataclass(frozen=True)
class Mosaic:
    """Rasters on one pixel grid, as one raster (:meth:`vrt_xml`, :meth:`write_vrt`).

    Where rasters overlap, the later one in the list wins (its no-data pixels do not
    cover the earlier ones'). Pixels no raster covers are no data: the no-data value, or
    masked when the rasters have none.
    """

    parts: tuple[MosaicPart, ...]
    width: int
    height: int
    transform: Any     # affine.Affine of the mosaic's top-left corner
    crs: Any           # rasterio CRS (or None)
    count: int
    dtypes: tuple[str, ...]
    nodata: tuple      # per band
    descriptions: tuple
    masked: bool       # a mask band: the rasters have no no-data value, or masks of their own

    @classmethod
    def of(cls, rasters: Sequence) -> "Mosaic":
        """Read the headers of ``rasters`` (paths or dataset names) and lay them out on one grid.

        Raises
        ------
        DataError
            A raster is missing or unreadable, or the rasters do not fit together (CRS,
            band count, data types, no-data values, pixel size, rotation, pixel grid): the
            message names the raster, both values and the fix.
        ArgumentError
            An empty list.
        """
        from rasterio.enums import MaskFlags

        sources = [raster_source(r) for r in rasters]
        if not sources:
            raise ArgumentError("A mosaic needs at least one raster.")
        headers: list[dict[str, Any]] = []
        for source in sources:
            with open_raster(source, "mosaic raster") as src:
                headers.append(dict(source=source, crs=src.crs, count=src.count, dtypes=tuple(src.dtypes),
                                    nodata=tuple(src.nodatavals), transform=src.transform, width=src.width,
                                    height=src.height, descriptions=tuple(src.descriptions),
                                    block=tuple(src.block_shapes[0]),
                                    masks=any(f not in ([MaskFlags.all_valid], [MaskFlags.nodata])
                                              for f in src.mask_flag_enums)))
        first = headers[0]
        fix = "Reproject or resample them onto one grid first (e.g. gdalwarp), or predict them one by one."
        for h in headers:
            t = h["transform"]
            if t.b != 0 or t.d != 0 or t.e >= 0:
                raise DataError(f"Mosaic raster '{h['source']}' is rotated, south-up or not georeferenced (transform "
                                f"{tuple(t)[:6]}); a mosaic takes georeferenced north-up rasters. {fix}")
        for h in headers[1:]:
            for key, label in (("crs", "CRS"), ("count", "band count"), ("dtypes", "data types")):
                if h[key] != first[key]:
                    raise DataError(f"Mosaic rasters '{first['source']}' and '{h['source']}' differ in {label} "
                                    f"({first[key]} vs {h[key]}): the rasters of a mosaic share their CRS, bands and "
                                    f"data type. {fix}")
            if not all(_same(a, b) for a, b in zip(first["nodata"], h["nodata"])):
                raise DataError(f"Mosaic rasters '{first['source']}' and '{h['source']}' have different no-data values "
                                f"({first['nodata']} vs {h['nodata']}). Give them one no-data value (gdal_translate "
                                "-a_nodata) first.")
            a, b = first["transform"], h["transform"]
            if not (math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)):
                raise DataError(f"Mosaic rasters '{first['source']}' and '{h['source']}' differ in pixel size "
                                f"({a.a}, {-a.e} vs {b.a}, {-b.e}). {fix}")
        res_x, res_y = first["transform"].a, -first["transform"].e
        left = min(h["transform"].c for h in headers)
        top = max(h["transform"].f for h in headers)
        parts = []
        for h in headers:
            col, row = (h["transform"].c - left) / res_x, (top - h["transform"].f) / res_y
            if abs(col - round(col)) > _GRID_TOLERANCE or abs(row - round(row)) > _GRID_TOLERANCE:
                raise DataError(f"Mosaic raster '{h['source']}' is not on the pixel grid of '{first['source']}' (it "
                                f"starts {col:.3f} columns, {row:.3f} rows from the mosaic's corner). {fix}")
            parts.append(MosaicPart(h["source"], int(round(row)), int(round(col)), h["height"], h["width"],
                                    (int(h["block"][0]), int(h["block"][1]))))
        width = max(p.col + p.width for p in parts)
        height = max(p.row + p.height for p in parts)
        for dtype in first["dtypes"]:
            if dtype not in _GDAL_TYPES:
                raise DataError(f"Mosaic raster '{first['source']}' has bands of type {dtype}, which geomax cannot "
                                f"mosaic (types: {', '.join(_GDAL_TYPES)}).")
        from affine import Affine

        descriptions = tuple(next((h["descriptions"][i] for h in headers if h["descriptions"][i]), None)
                             for i in range(first["count"]))
        masked = any(v is None for v in first["nodata"]) or any(h["masks"] for h in headers)
        return cls(tuple(parts), width, height, Affine(res_x, 0.0, left, 0.0, -res_y, top), first["crs"],
                   first["count"], first["dtypes"], first["nodata"], descriptions, masked)

    def vrt_xml(self) -> str:
        """The mosaic as GDAL VRT XML (absolute source paths: the VRT may be anywhere)."""
        root = ET.Element("VRTDataset", rasterXSize=str(self.width), rasterYSize=str(self.height))
        if self.crs is not None:
            ET.SubElement(root, "SRS").text = self.crs.to_wkt()
        t = self.transform
        ET.SubElement(root, "GeoTransform").text = ", ".join(f"{v:.17g}" for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        for band in range(1, self.count + 1):
            dtype = self.dtypes[band - 1]
            gdal_type = _GDAL_TYPES[dtype]
            nodata = self.nodata[band - 1]
            vrt_band = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(band))
            if nodata is not None:
                ET.SubElement(vrt_band, "NoDataValue").text = _number(nodata, dtype)
            if self.descriptions[band - 1]:
                ET.SubElement(vrt_band, "Description").text = str(self.descriptions[band - 1])
            for part in self.parts:
                # a ComplexSource with NODATA lets the pixels under a part's no-data show through
                source = ET.SubElement(vrt_band, "SimpleSource" if nodata is None else "ComplexSource")
                self._source(source, part, str(band), gdal_type)
                if nodata is not None:
                    ET.SubElement(source, "NODATA").text = _number(nodata, dtype)
        if self.masked:
            # the parts' masks, 0 where no part lies (gdalbuildvrt's per-dataset mask band)
            mask_band = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
            for part in self.parts:
                self._source(ET.SubElement(mask_band, "SimpleSource"), part, "mask,1", "Byte")
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"

    @staticmethod
    def _source(source: ET.Element, part: MosaicPart, band: str, gdal_type: str) -> None:
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = part.filename
        ET.SubElement(source, "SourceBand").text = band
        ET.SubElement(source, "SourceProperties", RasterXSize=str(part.width), RasterYSize=str(part.height),
                      DataType=gdal_type, BlockXSize=str(part.block[1]), BlockYSize=str(part.block[0]))
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(part.width), ySize=str(part.height))
        ET.SubElement(source, "DstRect", xOff=str(part.col), yOff=str(part.row), xSize=str(part.width),
                      ySize=str(part.height))

    def write_vrt(self, path: str | os.PathLike) -> Path:
        """Write :meth:`vrt_xml` to ``path`` (under a temporary name, renamed when complete); the path."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            partial.write_text(self.vrt_xml(), encoding="utf-8")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path


def _number(value, dtype: str) -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    if dtype.startswith(("uint", "int")) and value.is_integer():
        return str(int(value))
    return repr(value)


def write_mosaic_vrt(rasters, out_vrt: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a VRT mosaic of a folder of rasters or a list of them (any raster geomax reads: a VRT too).

    Parameters
    ----------
    rasters:
        A folder (its ``.tif`` / ``.tiff``) or a list of rasters (paths or GDAL dataset names).
    out_vrt:
        The ``.vrt`` to write (source paths in it are absolute). Not inside an input folder.
    overwrite:
        Replace an existing ``out_vrt``.

    Returns
    -------
    pathlib.Path
        ``out_vrt``.

    Raises
    ------
    DataError
        See :meth:`Mosaic.of`.
    OutputExistsError
        ``out_vrt`` exists and ``overwrite`` is False.
    ArgumentError
        ``out_vrt`` is inside an input folder, or ``rasters`` is one raster.
    """
    from ..publish import check_outputs_apart, check_replaceable

    inputs = mosaic_inputs(rasters)
    if inputs is None:
        raise ArgumentError(f"'{rasters}' is one raster; a mosaic is made of a folder or a list of rasters.")
    folder = {"input folder": rasters} if isinstance(rasters, (str, os.PathLike)) else {}
    files = {f"input raster {i}": p for i, p in enumerate(inputs, start=1) if isinstance(p, Path)}
    check_outputs_apart({**folder, **files}, {"mosaic VRT": out_vrt})
    check_replaceable(out_vrt, overwrite, None, "mosaic VRT")
    mosaic = Mosaic.of(inputs)
    Path(out_vrt).parent.mkdir(parents=True, exist_ok=True)
    return mosaic.write_vrt(out_vrt)
