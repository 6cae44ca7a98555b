"""Vectorising a panoptic raster block by block into one feature per segment.

Blocks are polygonised with :func:`rasterio.features.shapes` (4-connectivity)
in *pixel* coordinates (integers, so pieces of one object meet exactly at block
borders) and only the polygons are kept, never pixel arrays:

* a thing instance gives one feature: the union of its pieces from every block
  (holes kept);
* stuff gives one feature per connected region of one class: pieces that touch
  across a block border (4-connected, same class) are joined with a union-find,
  then dissolved. Stuff features have ``instance_id`` 0.

Every geometry is a MultiPolygon (a one-part object is a MultiPolygon of one
polygon), so a layer has one geometry type: GeoPackage and FlatGeobuf layers
declare ``MultiPolygon``, not ``Unknown``.

Fields (:data:`FEATURE_COLUMNS`): ``instance_id``, ``class_value``, ``class_name``,
``is_thing``, ``confidence`` (mean of the confidence band over the feature's pixels,
0-100), ``area`` (pixel count x pixel area, in CRS units). A Shapefile's field names
hold at most 10 characters, so ``.shp`` output names them :data:`SHAPEFILE_FIELDS`
(``instanceid``, ``classvalue``, the others unchanged) instead of letting GDAL cut them.
"""
from __future__ import annotations

import os
from collections import defaultdict
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage

from ..data.classes import BACKGROUND_NAME, ClassTable
from ..errors import ArgumentError
from .stitching import UnionFind

__all__ = ["PanopticVectorizer", "vectorize_raster", "write_features", "shapefile_frame", "FEATURE_COLUMNS",
           "SHAPEFILE_FIELDS", "FEATURE_GEOMETRY_TYPE", "VECTOR_DRIVERS"]

#: Attribute columns of the feature layer (plus ``geometry``).
FEATURE_COLUMNS = ["instance_id", "class_value", "class_name", "is_thing", "confidence", "area"]

#: Field names of a Shapefile's features (dBASE names hold at most 10 characters), in
#: :data:`FEATURE_COLUMNS` order; every other format keeps :data:`FEATURE_COLUMNS`.
SHAPEFILE_FIELDS = {"instance_id": "instanceid", "class_value": "classvalue", "class_name": "class_name",
                    "is_thing": "is_thing", "confidence": "confidence", "area": "area"}

#: Geometry type of every feature and of the layer.
FEATURE_GEOMETRY_TYPE = "MultiPolygon"

#: Longest field name a Shapefile (dBASE) holds.
_SHAPEFILE_NAME_LIMIT = 10

#: File extension -> OGR driver used by :func:`write_features`.
VECTOR_DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON",
                  ".fgb": "FlatGeobuf", ".parquet": "Parquet"}

_FOUR = ndimage.generate_binary_structure(2, 1)


def _multipolygon(geom):
    """``geom`` as a MultiPolygon: a Polygon becomes a one-part MultiPolygon; non-polygonal parts are dropped."""
    if geom is None or geom.geom_type == "MultiPolygon":
        return geom
    if geom.geom_type == "Polygon":
        return shapely.MultiPolygon([geom])
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.MultiPolygon([q for p in parts for q in shapely.get_parts(p) if not q.is_empty])


def _polygons(geojson_polygons: list[dict]) -> np.ndarray:
    """GeoJSON-like polygons (as :func:`rasterio.features.shapes` yields them) -> shapely Polygons, vectorised."""
    if not geojson_polygons:
        return np.empty(0, dtype=object)
    rings = [ring for g in geojson_polygons for ring in g["coordinates"]]
    ring_poly = np.repeat(np.arange(len(geojson_polygons)), [len(g["coordinates"]) for g in geojson_polygons])
    coords = np.array(list(chain.from_iterable(rings)), dtype=np.float64)
    ring_idx = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    return shapely.polygons(shapely.linearrings(coords, indices=ring_idx), indices=ring_poly)


class PanopticVectorizer:
    """Accumulates polygons of a panoptic raster fed block by block in raster order.

    Parameters
    ----------
    class_table:
        Classes of the raster's class band (names and thing flags).
    transform:
        Affine transform of the raster (pixel -> CRS coordinates).
    width:
        Raster width in pixels (size of the one-row border state).
    skip_values:
        Class Values to leave out of the features (default: a stuff class named
        :data:`~geomax.data.classes.BACKGROUND_NAME`, the complement of the things).
    """

    def __init__(self, class_table: ClassTable, transform: Affine, width: int,
                 skip_values: Sequence[int] | None = None):
        self.class_table = class_table
        self.skip_values = np.asarray(
            [c.value for c in class_table if c.name == BACKGROUND_NAME and not c.is_thing]
            if skip_values is None else list(skip_values), dtype=np.int64)
        self.transform = transform
        self.width = int(width)
        self._thing_polys: dict[int, list] = defaultdict(list)
        self._thing_stats: dict[int, list] = {}  # id -> [class, count, conf_sum]
        self._stuff_polys: list[list] = [[]]  # index = stuff piece id (0 unused)
        self._stuff_class: list[int] = [0]
        self._stuff_count: list[int] = [0]
        self._stuff_conf: list[float] = [0.0]
        self._uf = UnionFind()
        self._uf.add(1)
        self._top = np.zeros(self.width, dtype=np.int64)  # stuff piece ids of the last row above
        self._left: np.ndarray | None = None
        self._last_row_off = -1
        self._last_col_end = 0

    def _join(self, a: np.ndarray, b: np.ndarray) -> None:
        cls = np.asarray(self._stuff_class)
        both = (a > 0) & (b > 0)
        if not both.any():
            return
        a, b = a[both], b[both]
        same = cls[a] == cls[b]
        for x, y in set(zip(a[same].tolist(), b[same].tolist())):
            self._uf.union(x, y)

    def add_block(self, row_off: int, col_off: int, class_block: np.ndarray, instance_block: np.ndarray,
                  confidence_block: np.ndarray) -> None:
        """Add one block (class Values, instance ids, confidence 0-100) at ``(row_off, col_off)``.

        Blocks must come row by row, left to right, and tile the raster.
        """
        class_block = np.asarray(class_block)
        inst = np.asarray(instance_block).astype(np.int64)
        conf = np.asarray(confidence_block, dtype=np.float64)
        h, w = class_block.shape
        labelled = class_block > 0
        if self.skip_values.size:
            labelled &= ~np.isin(class_block, self.skip_values)
        lab = np.zeros((h, w), dtype=np.int32)
        keys: list[tuple[bool, int]] = [(False, 0)]
        # things: local label = instance id - (smallest id in the block) + 1 (ids of a block span a
        # narrow range, so counting by bincount is cheap and needs no sort)
        thing_px = labelled & (inst > 0)
        if thing_px.any():
            ids_px = inst[thing_px]
            lo, hi = int(ids_px.min()), int(ids_px.max())
            lab[thing_px] = (ids_px - (lo - 1)).astype(np.int32)
            cls_of = np.zeros(hi - lo + 2, dtype=np.int64)
            cls_of[ids_px - (lo - 1)] = class_block[thing_px]
            keys.extend((True, i) for i in range(lo, hi + 1))
            for i in np.flatnonzero(cls_of).tolist():
                iid = i + lo - 1
                if iid not in self._thing_stats:
                    self._thing_stats[iid] = [int(cls_of[i]), 0, 0.0]
        # stuff: one local label per 4-connected region of one class
        stuff_px = labelled & (inst == 0)
        stuff_ids = np.zeros((h, w), dtype=np.int64)
        if stuff_px.any():
            for c in np.unique(class_block[stuff_px]).tolist():
                comp, n = ndimage.label(stuff_px & (class_block == c), structure=_FOUR)
                if n == 0:
                    continue
                first = self._uf.add(n)
                self._stuff_polys.extend([] for _ in range(n))
                self._stuff_class.extend([c] * n)
                self._stuff_count.extend([0] * n)
                self._stuff_conf.extend([0.0] * n)
                m = comp > 0
                stuff_ids[m] = comp[m] + (first - 1)
                base = len(keys)
                lab[m] = comp[m] + (base - 1)
                keys.extend((False, first + k) for k in range(n))
        n_lab = len(keys)
        counts = np.bincount(lab.ravel(), minlength=n_lab)
        sums = np.bincount(lab.ravel(), weights=conf.ravel(), minlength=n_lab)
        for k in np.flatnonzero(counts).tolist():
            if k == 0:
                continue
            is_thing, key = keys[k]
            if is_thing:
                st = self._thing_stats[key]
                st[1] += int(counts[k])
                st[2] += float(sums[k])
            else:
                self._stuff_count[key] += int(counts[k])
                self._stuff_conf[key] += float(sums[k])
        if n_lab > 1:
            found = list(shapes(lab, mask=lab > 0, connectivity=4, transform=Affine.translation(col_off, row_off)))
            for poly, (_, value) in zip(_polygons([g for g, _ in found]), found):
                is_thing, key = keys[int(value)]
                if is_thing:
                    self._thing_polys[key].append(poly)
                else:
                    self._stuff_polys[key].append(poly)
        # stuff continuity across the block's top and left borders
        if row_off != self._last_row_off:
            self._last_row_off = row_off
            self._left = None
        if row_off > 0:
            self._join(self._top[col_off: col_off + w], stuff_ids[0])
        if self._left is not None and col_off > 0 and len(self._left) == h:
            self._join(self._left, stuff_ids[:, 0])
        self._left = stuff_ids[:, -1].copy()
        self._top[col_off: col_off + w] = stuff_ids[-1]

    def _finish(self, polys: list, simplify_tolerance: float | None):
        """One feature's pieces (pixel coordinates) -> its MultiPolygon in CRS coordinates."""
        geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
        t = self.transform
        geom = shapely.affinity.affine_transform(geom, [t.a, t.b, t.d, t.e, t.c, t.f])
        if simplify_tolerance:
            geom = geom.simplify(simplify_tolerance, preserve_topology=True)
        return _multipolygon(geom)

    def to_geodataframe(self, crs=None, simplify_tolerance: float | None = None):
        """All features as a GeoDataFrame: things by instance id, then stuff regions.

        Columns :data:`FEATURE_COLUMNS`; every geometry a MultiPolygon (:data:`FEATURE_GEOMETRY_TYPE`).

        Parameters
        ----------
        crs:
            CRS of the features (the raster's).
        simplify_tolerance:
            Optional Douglas-Peucker tolerance in CRS units (topology of each
            feature kept; shared borders of neighbouring features may then differ).
        """
        import geopandas as gpd

        px_area = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        rows, geoms = [], []

        def info(value):
            try:
                ci = self.class_table.by_value(int(value))
                return ci.name, bool(ci.is_thing)
            except Exception:  # a Value the class table does not know
                return f"class_{int(value)}", False

        for iid in sorted(self._thing_polys):
            c, n, s = self._thing_stats[iid]
            name, _ = info(c)
            rows.append((iid, c, name, True, s / max(n, 1), n * px_area))
            geoms.append(self._finish(self._thing_polys[iid], simplify_tolerance))
        if len(self._stuff_class) > 1:
            roots = self._uf.roots()
            groups: dict[int, list[int]] = defaultdict(list)
            for pid in range(1, len(self._stuff_class)):
                groups[int(roots[pid])].append(pid)
            for root in sorted(groups):
                members = groups[root]
                polys = [p for m in members for p in self._stuff_polys[m]]
                if not polys:
                    continue
                n = sum(self._stuff_count[m] for m in members)
                s = sum(self._stuff_conf[m] for m in members)
                c = self._stuff_class[root]
                name, is_thing = info(c)
                rows.append((0, c, name, is_thing, s / max(n, 1), n * px_area))
                geoms.append(self._finish(polys, simplify_tolerance))
        import pandas as pd

        df = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
        df = df.astype({"instance_id": "int64", "class_value": "int64", "is_thing": "bool",
                        "confidence": "float64", "area": "float64"})
        return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)


def vectorize_raster(panoptic_raster: str | os.PathLike, class_table: ClassTable, block_size: int = 1024,
                     simplify_tolerance: float | None = None):
    """Vectorise a panoptic raster written by :func:`~geomax.inference.predict_raster.predict_raster`.

    Reads the raster by ``block_size`` windows (band 1 class Value, band 2
    instance id, band 3 confidence) and returns a GeoDataFrame with
    :data:`FEATURE_COLUMNS`, in the raster's CRS.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(panoptic_raster) as src:
        vec = PanopticVectorizer(class_table, src.transform, src.width)
        for r0 in range(0, src.height, block_size):
            for c0 in range(0, src.width, block_size):
                win = Window(c0, r0, min(block_size, src.width - c0), min(block_size, src.height - r0))
                cls, inst, conf = src.read([1, 2, 3], window=win)
                vec.add_block(r0, c0, cls, inst, conf)
        return vec.to_geodataframe(crs=src.crs, simplify_tolerance=simplify_tolerance)


def shapefile_frame(gdf):
    """``gdf`` with the field names a Shapefile holds: :data:`SHAPEFILE_FIELDS`, other names kept if short enough.

    Raises
    ------
    ArgumentError
        A field name is still longer than 10 characters (a column the caller added).
    """
    out = gdf.rename(columns=SHAPEFILE_FIELDS)
    geometry = out.geometry.name
    long = [str(c) for c in out.columns if c != geometry and len(str(c)) > _SHAPEFILE_NAME_LIMIT]
    if long:
        raise ArgumentError(f"A Shapefile holds field names of at most {_SHAPEFILE_NAME_LIMIT} characters; {long} "
                            "are longer. Write the features to a GeoPackage (.gpkg) instead, or rename those "
                            "columns.")
    return out


def write_features(gdf, path: str | os.PathLike, layer: str | None = None) -> None:
    """Write features with the driver its extension names (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, Parquet).

    Every geometry is written as a MultiPolygon and the layer declares ``MultiPolygon``
    (:data:`FEATURE_GEOMETRY_TYPE`), also when the layer is empty. A Shapefile gets the
    field names :data:`SHAPEFILE_FIELDS` (:func:`shapefile_frame`); every other format
    keeps the frame's column names.

    Parameters
    ----------
    gdf:
        The features (:meth:`PanopticVectorizer.to_geodataframe`).
    path:
        Output file; its extension is a key of :data:`VECTOR_DRIVERS`.
    layer:
        Layer name of a GeoPackage (default: the file's stem, GDAL's choice).

    Raises
    ------
    ArgumentError
        An unknown extension, or a Shapefile field name over 10 characters.
    """
    import geopandas as gpd

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VECTOR_DRIVERS:
        raise ArgumentError(f"Cannot write features to '{path}': unknown extension '{ext}'. "
                            f"Use one of {sorted(VECTOR_DRIVERS)}.")
    if len(gdf) and not (gdf.geom_type == FEATURE_GEOMETRY_TYPE).all():
        gdf = gdf.set_geometry(gpd.GeoSeries([_multipolygon(g) for g in gdf.geometry], index=gdf.index,
                                             crs=gdf.crs, name=gdf.geometry.name))
    if ext == ".shp":
        gdf = shapefile_frame(gdf)
    if ext == ".parquet":
        gdf.to_parquet(path)
        return
    kwargs: dict[str, Any] = {"driver": VECTOR_DRIVERS[ext], "engine": "pyogrio",
                              "geometry_type": FEATURE_GEOMETRY_TYPE, "promote_to_multi": True}
    if ext == ".gpkg" and layer:
        kwargs["layer"] = layer
    gdf.to_file(path, **kwargs)
