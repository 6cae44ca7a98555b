"""Vectorising a panoptic raster block by block into one feature per segment.

Blocks are polygonised with :func:`rasterio.features.shapes` (4-connectivity)
in *pixel* coordinates (integers, so pieces of one object meet exactly at block
borders) and only the polygons are kept, never pixel arrays:

* a thing instance gives one feature: the union of its pieces from every block
  (holes kept);
* stuff gives one feature per connected region of one class: pieces that touch
  across a block border (4-connected, same class) are joined with a union-find,
  then dissolved. Stuff features have ``instance_id`` 0.

A feature can be taken out (:meth:`PanopticVectorizer.take_complete`) once every
pixel it may hold has been added, so features are written while the blocks come
(:class:`FeatureWriter` appends them to the file) and only those that may still
grow are kept:

* a stuff region may still grow while it touches the last row of the blocks added
  (4-connectivity reaches no further);
* a thing instance may have parts anywhere (two trees of one instance), so it is
  taken out only when the caller says where it ends (``thing_last_rows``: the
  last raster row that may hold one of its pixels); without it, things are kept
  to the end.

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
import warnings
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

__all__ = ["PanopticVectorizer", "vectorize_raster", "FeatureWriter", "write_features", "shapefile_frame",
           "FEATURE_COLUMNS", "SHAPEFILE_FIELDS", "FEATURE_GEOMETRY_TYPE", "VECTOR_DRIVERS"]

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


class _Piece:
    """The pixels of one thing instance or one stuff piece seen so far."""

    __slots__ = ("value", "polys", "count", "conf_sum")

    def __init__(self, value: int):
        self.value = value  # class Value
        self.polys: list = []  # polygons in pixel coordinates, in the order the blocks came
        self.count = 0  # pixels
        self.conf_sum = 0.0  # sum of the confidence over the pixels


class PanopticVectorizer:
    """Accumulates polygons of a panoptic raster fed block by block in raster order.

    Features come out all at once (:meth:`to_geodataframe`) or while the blocks come
    (:meth:`take_complete` after each row of blocks, then :meth:`to_geodataframe` for the
    rest); either way the same features, with the same attributes and geometries.

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
    thing_last_rows:
        Indexed by instance id: the last raster row that may hold a pixel of the instance
        (an upper bound; -1 for none). An instance is complete once the rows added go past
        it. Instances it does not cover (all of them when ``None``) are kept to the end.
    """

    def __init__(self, class_table: ClassTable, transform: Affine, width: int,
                 skip_values: Sequence[int] | None = None, thing_last_rows: np.ndarray | None = None):
        self.class_table = class_table
        self.skip_values = np.asarray(
            [c.value for c in class_table if c.name == BACKGROUND_NAME and not c.is_thing]
            if skip_values is None else list(skip_values), dtype=np.int64)
        self.transform = transform
        self.width = int(width)
        self._thing_last_rows = None if thing_last_rows is None else np.asarray(thing_last_rows, dtype=np.int64)
        self._things: dict[int, _Piece] = {}  # instance id -> its pixels so far (not taken yet)
        self._stuff: dict[int, _Piece] = {}  # stuff piece id -> its pixels (pieces not taken yet)
        self._piece_class = np.zeros(1024, dtype=np.int64)  # class Value of every stuff piece id (0 unused)
        self._uf = UnionFind()  # stuff pieces of one region (4-connected across block borders, one class)
        self._uf.add(1)
        self._top = np.zeros(self.width, dtype=np.int64)  # stuff piece ids of the last row above
        self._left: np.ndarray | None = None
        self._last_row_off = -1
        self._rows_done = 0  # rows whose every block has been added
        self._open_pieces = np.zeros(0, dtype=np.int64)  # stuff pieces in row ``_rows_done - 1``
        self._row_first_piece = 1  # first stuff piece id of the row of blocks being added

    def _join(self, a: np.ndarray, b: np.ndarray) -> None:
        cls = self._piece_class
        both = (a > 0) & (b > 0)
        if not both.any():
            return
        a, b = a[both], b[both]
        same = cls[a] == cls[b]
        for x, y in set(zip(a[same].tolist(), b[same].tolist())):
            self._uf.union(x, y)

    def _new_pieces(self, value: int, n: int) -> int:
        """``n`` new stuff pieces of class ``value``; the first id."""
        first = self._uf.add(n)
        if self._uf.n > len(self._piece_class):
            grown = np.zeros(max(self._uf.n, 2 * len(self._piece_class)), dtype=np.int64)
            grown[: len(self._piece_class)] = self._piece_class
            self._piece_class = grown
        self._piece_class[first: first + n] = value
        for k in range(first, first + n):
            self._stuff[k] = _Piece(value)
        return first

    def add_block(self, row_off: int, col_off: int, class_block: np.ndarray, instance_block: np.ndarray,
                  confidence_block: np.ndarray) -> None:
        """Add one block (class Values, instance ids, confidence 0-100) at ``(row_off, col_off)``.

        Blocks must come row by row, left to right, and tile the raster.

        Raises
        ------
        ValueError
            A thing instance has a pixel below its ``thing_last_rows`` bound.
        """
        class_block = np.asarray(class_block)
        inst = np.asarray(instance_block).astype(np.int64)
        conf = np.asarray(confidence_block, dtype=np.float64)
        h, w = class_block.shape
        labelled = class_block > 0
        if self.skip_values.size:
            labelled &= ~np.isin(class_block, self.skip_values)
        lab = np.zeros((h, w), dtype=np.int32)
        keys: list[_Piece | None] = [None]  # local label -> the thing or stuff piece it adds to
        # things: local label = instance id - (smallest id in the block) + 1 (ids of a block span a
        # narrow range, so counting by bincount is cheap and needs no sort)
        thing_px = labelled & (inst > 0)
        if thing_px.any():
            ids_px = inst[thing_px]
            lo, hi = int(ids_px.min()), int(ids_px.max())
            lab[thing_px] = (ids_px - (lo - 1)).astype(np.int32)
            cls_of = np.zeros(hi - lo + 2, dtype=np.int64)
            cls_of[ids_px - (lo - 1)] = class_block[thing_px]
            present = np.flatnonzero(cls_of) + (lo - 1)
            self._check_last_rows(present, row_off)
            for iid in present.tolist():
                if iid not in self._things:
                    self._things[iid] = _Piece(int(cls_of[iid - lo + 1]))
            keys.extend(self._things.get(i) for i in range(lo, hi + 1))
        # stuff: one local label per 4-connected region of one class
        stuff_px = labelled & (inst == 0)
        stuff_ids = np.zeros((h, w), dtype=np.int64)
        if stuff_px.any():
            for c in np.unique(class_block[stuff_px]).tolist():
                comp, n = ndimage.label(stuff_px & (class_block == c), structure=_FOUR)
                if n == 0:
                    continue
                first = self._new_pieces(c, n)
                m = comp > 0
                stuff_ids[m] = comp[m] + (first - 1)
                base = len(keys)
                lab[m] = comp[m] + (base - 1)
                keys.extend(self._stuff[first + k] for k in range(n))
        n_lab = len(keys)
        counts = np.bincount(lab.ravel(), minlength=n_lab)
        sums = np.bincount(lab.ravel(), weights=conf.ravel(), minlength=n_lab)
        for k in np.flatnonzero(counts).tolist():
            piece = keys[k]
            if piece is not None:  # None: label 0 (no feature)
                piece.count += int(counts[k])
                piece.conf_sum += float(sums[k])
        if n_lab > 1:
            found = list(shapes(lab, mask=lab > 0, connectivity=4, transform=Affine.translation(col_off, row_off)))
            for poly, (_, value) in zip(_polygons([g for g, _ in found]), found):
                piece = keys[int(value)]
                assert piece is not None  # every labelled pixel belongs to a thing or a stuff piece
                piece.polys.append(poly)
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
        if col_off + w >= self.width:  # the row of blocks is complete
            self._rows_done = row_off + h
            self._open_pieces = np.unique(self._top[self._top > 0])
            self._row_first_piece = self._uf.n

    def _check_last_rows(self, instance_ids: np.ndarray, row_off: int) -> None:
        last = self._thing_last_rows
        if last is None:
            return
        known = instance_ids[instance_ids < len(last)]
        late = known[last[known] < row_off]
        if late.size:
            raise ValueError(f"Instance {int(late[0])} has pixels from row {row_off} on, below its last row "
                             f"{int(last[late[0]])} in thing_last_rows: its feature may already be complete. "
                             "thing_last_rows must bound every instance's pixels.")

    def _stuff_groups(self, pieces: list[int]) -> list[tuple[int, list[int]]]:
        """``pieces`` (whole regions) grouped by region: ``(root, members by id)``, by root."""
        pids = np.asarray(sorted(pieces), dtype=np.int64)
        if len(pids) * 8 > self._uf.n:  # most pieces: one vectorised pass over the union-find
            roots = self._uf.roots()[pids].tolist()
        else:
            roots = [self._uf.find(p) for p in pids.tolist()]
        groups: dict[int, list[int]] = defaultdict(list)
        for pid, root in zip(pids.tolist(), roots):
            groups[root].append(pid)
        return sorted(groups.items())

    def _finish(self, polys: list, simplify_tolerance: float | None):
        """One feature's pieces (pixel coordinates) -> its MultiPolygon in CRS coordinates."""
        geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
        t = self.transform
        geom = shapely.affinity.affine_transform(geom, [t.a, t.b, t.d, t.e, t.c, t.f])
        if simplify_tolerance:
            geom = geom.simplify(simplify_tolerance, preserve_topology=True)
        return _multipolygon(geom)

    def _frame(self, thing_ids: list[int], stuff_groups: list[tuple[int, list[int]]], crs,
               simplify_tolerance: float | None):
        """The features of the given things (in that order), then of the given stuff regions."""
        import geopandas as gpd
        import pandas as pd

        px_area = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        rows, geoms = [], []

        def name_of(value):
            try:
                ci = self.class_table.by_value(int(value))
                return ci.name, bool(ci.is_thing)
            except Exception:  # a Value the class table does not know
                return f"class_{int(value)}", False

        for iid in thing_ids:
            thing = self._things[iid]
            if not thing.polys:
                continue
            name, _ = name_of(thing.value)
            rows.append((iid, thing.value, name, True, thing.conf_sum / max(thing.count, 1), thing.count * px_area))
            geoms.append(self._finish(thing.polys, simplify_tolerance))
        for root, members in stuff_groups:
            polys = [p for m in members for p in self._stuff[m].polys]
            if not polys:
                continue
            n = sum(self._stuff[m].count for m in members)
            s = sum(self._stuff[m].conf_sum for m in members)
            c = int(self._piece_class[root])
            name, is_thing = name_of(c)
            rows.append((0, c, name, is_thing, s / max(n, 1), n * px_area))
            geoms.append(self._finish(polys, simplify_tolerance))
        df = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
        df = df.astype({"instance_id": "int64", "class_value": "int64", "is_thing": "bool",
                        "confidence": "float64", "area": "float64"})
        return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)

    @property
    def n_pending(self) -> int:
        """Thing instances and stuff pieces held (added and not taken out)."""
        return len(self._things) + len(self._stuff)

    def take_complete(self, crs=None, simplify_tolerance: float | None = None):
        """The features complete after the last whole row of blocks, taken out of the vectorizer.

        A stuff region is complete when no piece of it lies in the last row of that row of
        blocks; a thing instance when its ``thing_last_rows`` bound is above the rows added.
        Call it after each row of blocks (a call within a row takes out what was complete
        at the end of the previous row); :meth:`to_geodataframe` gives the rest at the end.
        Things by instance id, then stuff regions; columns and geometries as
        :meth:`to_geodataframe`.
        """
        last = self._thing_last_rows
        done = self._rows_done
        things = [] if last is None else sorted(i for i in self._things if i < len(last) and last[i] < done)
        groups = self._stuff_groups(list(self._stuff))
        still_open = {self._uf.find(p) for p in self._open_pieces.tolist()}
        still_open.update(self._uf.find(p) for p in self._stuff if p >= self._row_first_piece)
        complete = [(root, members) for root, members in groups if root not in still_open]
        gdf = self._frame(things, complete, crs, simplify_tolerance)
        for iid in things:
            del self._things[iid]
        for _, members in complete:
            for m in members:
                del self._stuff[m]
        return gdf

    def to_geodataframe(self, crs=None, simplify_tolerance: float | None = None):
        """The features not taken out yet (every feature without :meth:`take_complete`) as a GeoDataFrame.

        Things by instance id, then stuff regions. Columns :data:`FEATURE_COLUMNS`; every
        geometry a MultiPolygon (:data:`FEATURE_GEOMETRY_TYPE`).

        Parameters
        ----------
        crs:
            CRS of the features (the raster's).
        simplify_tolerance:
            Optional Douglas-Peucker tolerance in CRS units (topology of each
            feature kept; shared borders of neighbouring features may then differ).
        """
        return self._frame(sorted(self._things), self._stuff_groups(list(self._stuff)), crs, simplify_tolerance)


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


def _vector_driver(path: Path) -> str:
    """The key of :data:`VECTOR_DRIVERS` for ``path``'s extension."""
    ext = path.suffix.lower()
    if ext not in VECTOR_DRIVERS:
        raise ArgumentError(f"Cannot write features to '{path}': unknown extension '{ext}'. "
                            f"Use one of {sorted(VECTOR_DRIVERS)}.")
    return ext


#: Formats whose file GDAL rewrites on every append: their batches go to a GeoPackage spool first.
_REWRITTEN_ON_APPEND = (".fgb", ".geojson", ".json")


def _streams_arrow() -> bool:
    """Whether pyogrio copies a layer as an Arrow stream without pyarrow (pyogrio 0.10, GDAL 3.8)."""
    import pyogrio

    version = tuple(int(x) for x in pyogrio.__version__.split(".")[:2] if x.isdigit())
    return version >= (0, 10) and tuple(pyogrio.__gdal_version__) >= (3, 8, 0)


class FeatureWriter:
    """Writes features to one vector file in batches (a batch per row of blocks), appending to one layer.

    Only one batch is in memory at a time. GeoPackage and Shapefile batches are appended to
    the file (pyogrio's append mode). GDAL rewrites a FlatGeobuf or GeoJSON file on every
    append, so from the second batch on their batches are appended to a GeoPackage spool
    beside the file (``.<name>.spool.gpkg``), copied into the file as one Arrow stream at
    :meth:`close` and removed (with pyogrio before 0.10 or GDAL before 3.8 they are
    appended to the file itself). GeoParquet is written by geopandas, which does not
    append: its batches are kept and written at :meth:`close`.

    Every geometry is written as a MultiPolygon and the layer declares ``MultiPolygon``
    (:data:`FEATURE_GEOMETRY_TYPE`). A Shapefile gets the field names :data:`SHAPEFILE_FIELDS`
    (:func:`shapefile_frame`); every other format keeps the frame's column names. When
    no batch holds a feature, :meth:`close` writes an empty layer with the columns of
    the last (empty) batch.

    Parameters
    ----------
    path:
        Output file; its extension is a key of :data:`VECTOR_DRIVERS`.
    layer:
        Layer name of a GeoPackage (default: the file's stem, GDAL's choice).

    Raises
    ------
    ArgumentError
        An unknown extension (before anything is written).
    """

    def __init__(self, path: str | os.PathLike, layer: str | None = None):
        self.path = Path(path)
        self._ext = _vector_driver(self.path)
        self._kwargs: dict[str, Any] = {"driver": VECTOR_DRIVERS[self._ext], "engine": "pyogrio",
                                        "geometry_type": FEATURE_GEOMETRY_TYPE, "promote_to_multi": True}
        if self._ext == ".gpkg" and layer:
            self._kwargs["layer"] = layer
        #: Features written so far.
        self.n_features = 0
        self._empty = None  # the last empty batch: the columns of an empty layer
        self._held: list = []  # batches kept in memory: GeoParquet's, or the first one of a spooled format
        self._spool: Path | None = None
        if self._ext in _REWRITTEN_ON_APPEND and _streams_arrow():
            self._spool = self.path.with_name(f".{self.path.name}.spool.gpkg")
        self._spooling = False

    def _prepared(self, gdf):
        import geopandas as gpd

        if len(gdf) and not (gdf.geom_type == FEATURE_GEOMETRY_TYPE).all():
            gdf = gdf.set_geometry(gpd.GeoSeries([_multipolygon(g) for g in gdf.geometry], index=gdf.index,
                                                 crs=gdf.crs, name=gdf.geometry.name))
        if self._ext == ".shp":
            gdf = shapefile_frame(gdf)
        return gdf

    def _append(self, gdf, path: Path, kwargs: dict[str, Any], first: bool) -> None:
        if first:
            gdf.to_file(path, **kwargs)
            return
        with warnings.catch_warnings():  # pyogrio's warning of a missing CRS came with the first batch
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            gdf.to_file(path, mode="a", **kwargs)

    def _spool_kwargs(self) -> dict[str, Any]:
        return {**self._kwargs, "driver": "GPKG", "layer": "features"}

    def write(self, gdf) -> None:
        """Append one batch of features (the first with a feature creates the file).

        Raises
        ------
        ArgumentError
            A Shapefile field name over 10 characters (before the batch is written).
        """
        gdf = self._prepared(gdf)
        if not len(gdf):
            self._empty = gdf
            return
        if self._ext == ".parquet" or (self._spool is not None and not self.n_features):
            self._held.append(gdf)  # a spooled format's first batch: one batch needs no spool
        elif self._spool is not None:
            if not self._spooling:  # the second batch: the held first one starts the spool
                self._append(self._held.pop(), self._spool, self._spool_kwargs(), first=True)
                self._spooling = True
            self._append(gdf, self._spool, self._spool_kwargs(), first=False)
        else:
            self._append(gdf, self.path, self._kwargs, first=not self.n_features)
        self.n_features += len(gdf)

    def _copy_spool(self) -> None:
        """Copy the spool into the file as one Arrow stream (one GDAL session: no rewrite per batch)."""
        from pyogrio.raw import open_arrow, write_arrow

        assert self._spool is not None
        kwargs = {k: v for k, v in self._kwargs.items() if k not in ("engine", "promote_to_multi")}
        try:
            with open_arrow(self._spool, use_pyarrow=False) as (meta, stream), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                write_arrow(stream, self.path, geometry_name=meta["geometry_name"] or "geometry", crs=meta["crs"],
                            **kwargs)
        finally:
            for extra in ("", "-journal", "-wal", "-shm"):
                Path(f"{self._spool}{extra}").unlink(missing_ok=True)

    def close(self) -> int:
        """Write what is still due (held batches, the spool, or an empty layer); the number of features written."""
        if self._ext == ".parquet":
            import pandas as pd

            if self._held or self._empty is not None:
                frames = self._held or [self._empty]
                (frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)).to_parquet(self.path)
        elif self._spooling:
            self._copy_spool()
        elif self._held:
            self._held[0].to_file(self.path, **self._kwargs)
        elif not self.n_features and self._empty is not None:
            self._empty.to_file(self.path, **self._kwargs)
        self._held, self._spooling = [], False
        return self.n_features


def write_features(gdf, path: str | os.PathLike, layer: str | None = None) -> None:
    """Write features with the driver its extension names (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, Parquet).

    Every geometry is written as a MultiPolygon and the layer declares ``MultiPolygon``
    (:data:`FEATURE_GEOMETRY_TYPE`), also when the layer is empty. A Shapefile gets the
    field names :data:`SHAPEFILE_FIELDS` (:func:`shapefile_frame`); every other format
    keeps the frame's column names. One batch of a :class:`FeatureWriter`.

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
    writer = FeatureWriter(path, layer)
    writer.write(gdf)
    writer.close()
