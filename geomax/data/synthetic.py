"""Seeded synthetic georeferenced scenes: a multi-band GeoTIFF and a GeoPackage of label polygons.

The scene is laid out as vectors first (cheap): a grid of roads, blocks between
them (residential, park, field), a river, lakes; buildings in touching rows,
tree clusters, vehicles on the roads. The raster is then rendered window by
window from the rasterized labels of each window plus seeded texture and noise
that depend only on global pixel coordinates, so the result is seamless, does
not depend on the window size, and a large scene never needs a large array.

Panoptic segmentation is genuinely needed: buildings touch side by side (one
connected component per row; each roof has its own tone and a thin dark
outline), tree crowns touch in clusters, cars queue on roads, grey roofs look
like roads and bare ground, and textures and noise stop colour from solving it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, OutputExistsError
from .classes import ClassInfo, ClassTable

__all__ = ["SYNTHETIC_CLASSES", "SceneInfo", "make_scene", "CLASS_FIELD", "BAND_NAMES"]

#: Classes of the synthetic scenes (stuff: water, road, vegetation, bare_ground; things: building, tree, vehicle).
SYNTHETIC_CLASSES = ClassTable([
    ClassInfo(1, "water", (31, 120, 180), False),
    ClassInfo(2, "road", (160, 160, 160), False),
    ClassInfo(3, "vegetation", (120, 200, 90), False),
    ClassInfo(4, "bare_ground", (210, 180, 140), False),
    ClassInfo(5, "building", (220, 50, 50), True),
    ClassInfo(6, "tree", (20, 110, 40), True),
    ClassInfo(7, "vehicle", (250, 210, 30), True),
])

#: Name of the class field written in the label GeoPackage (class names).
CLASS_FIELD = "class_name"
#: Names of the bands a scene may have, in order.
BAND_NAMES = ("red", "green", "blue", "nir", "swir1", "swir2")

_WATER, _ROAD, _VEG, _BARE, _BUILDING, _TREE, _VEHICLE = 1, 2, 3, 4, 5, 6, 7
_NAME = {c.value: c.name for c in SYNTHETIC_CLASSES}

# Base reflectance (0..1) per class and band (R, G, B, NIR, SWIR1, SWIR2).
_BASE = np.zeros((8, 6), dtype=np.float32)
_BASE[_WATER] = (0.05, 0.09, 0.12, 0.03, 0.02, 0.01)
_BASE[_ROAD] = (0.36, 0.36, 0.37, 0.30, 0.34, 0.30)
_BASE[_VEG] = (0.14, 0.24, 0.10, 0.48, 0.26, 0.14)
_BASE[_BARE] = (0.40, 0.35, 0.28, 0.38, 0.45, 0.38)
_BASE[_BUILDING] = (0.40, 0.40, 0.42, 0.34, 0.36, 0.32)  # replaced per building by its roof colour
_BASE[_TREE] = (0.07, 0.17, 0.06, 0.55, 0.20, 0.09)
_BASE[_VEHICLE] = (0.50, 0.50, 0.52, 0.40, 0.40, 0.38)  # replaced per vehicle by its paint
# Roof palettes: terracotta, grey concrete (close to road / bare ground), dark, light, brown.
_ROOFS = np.array([
    (0.46, 0.20, 0.15, 0.32, 0.38, 0.33),
    (0.38, 0.38, 0.39, 0.32, 0.35, 0.31),
    (0.21, 0.21, 0.23, 0.20, 0.22, 0.20),
    (0.60, 0.59, 0.57, 0.52, 0.55, 0.50),
    (0.34, 0.27, 0.20, 0.30, 0.36, 0.31),
], dtype=np.float32)
_PAINTS = np.array([
    (0.80, 0.80, 0.82, 0.70, 0.65, 0.60), (0.08, 0.08, 0.09, 0.07, 0.07, 0.06),
    (0.55, 0.10, 0.08, 0.30, 0.28, 0.25), (0.12, 0.20, 0.48, 0.25, 0.20, 0.18),
    (0.45, 0.45, 0.47, 0.40, 0.38, 0.36),
], dtype=np.float32)

_HALO = 8          # pixels read around each window so edges, shadows and crown shading are seamless
_CROWN_CAP = 6.0   # crown shading saturates this many pixels inside the crown (must be <= _HALO)
_NOISE_CELL = 24   # pixels per cell of the low-frequency brightness field


@dataclass
class SceneInfo:
    """What :func:`make_scene` wrote.

    Attributes
    ----------
    raster, labels:
        Paths of the GeoTIFF and of the label GeoPackage.
    class_table:
        The classes (:data:`SYNTHETIC_CLASSES`).
    class_field:
        Field of the labels holding the class name.
    size:
        Width and height in pixels.
    crs:
        CRS as a string (e.g. ``"EPSG:32633"``).
    transform:
        Affine transform of the raster.
    nodata:
        No-data value of the raster (``None`` when there is no no-data border).
    band_names:
        Band descriptions written in the GeoTIFF.
    dtype:
        Data type of the raster.
    counts:
        Number of label features per class name.
    """

    raster: Path
    labels: Path
    class_table: ClassTable
    class_field: str
    size: int
    crs: str
    transform: object
    nodata: float | None
    band_names: tuple[str, ...]
    dtype: str
    counts: dict = field(default_factory=dict)

    @property
    def thing_classes(self) -> list[str]:
        return self.class_table.thing_names


# --------------------------------------------------------------------------- layout (vectors)
def _positions(rng, extent, lo, hi):
    """Road centre lines at random spacing covering [0, extent]."""
    out = []
    p = rng.uniform(0.2, 0.8) * lo
    while p < extent:
        out.append(p)
        p += rng.uniform(lo, hi)
    return np.array(out)


def _layout(rng, extent_m: float):
    """Scene layout in local metres (x east, y south from the top-left corner).

    Returns a list of (class value, shapely geometry, attribute) in draw order
    (stuff first, then things) where attribute is a colour row for buildings and
    vehicles, else None.
    """
    import shapely
    from shapely.geometry import LineString

    stuff: list[tuple[int, object]] = []
    buildings: list[tuple[float, float, float, float, int]] = []  # x0, y0, x1, y1, palette
    trees: list[tuple[float, float, float]] = []  # cx, cy, r
    vehicles: list[tuple[object, int]] = []

    xs = _positions(rng, extent_m, 70.0, 140.0)
    ys = _positions(rng, extent_m, 70.0, 140.0)
    wx = rng.uniform(7.0, 12.0, xs.size)
    wy = rng.uniform(7.0, 12.0, ys.size)
    # Block edges: between consecutive roads (and the scene border).
    xe = [(-50.0, xs[0] - wx[0] / 2 if xs.size else extent_m + 50)]
    for i in range(xs.size):
        xe.append((xs[i] + wx[i] / 2, xs[i + 1] - wx[i + 1] / 2 if i + 1 < xs.size else extent_m + 50))
    ye = [(-50.0, ys[0] - wy[0] / 2 if ys.size else extent_m + 50)]
    for j in range(ys.size):
        ye.append((ys[j] + wy[j] / 2, ys[j + 1] - wy[j + 1] / 2 if j + 1 < ys.size else extent_m + 50))

    centre = extent_m / 2
    blocks = [(x0, y0, x1, y1) for (x0, x1) in xe for (y0, y1) in ye if x1 - x0 > 1 and y1 - y0 > 1]
    # The block nearest the centre is residential so that even a small scene has buildings.
    dists = [abs((b[0] + b[2]) / 2 - centre) + abs((b[1] + b[3]) / 2 - centre) for b in blocks]
    central = int(np.argmin(dists)) if blocks else -1
    lakes = []
    for bi, (x0, y0, x1, y1) in enumerate(blocks):
        kind = "residential" if bi == central else rng.choice(["residential", "park", "field"], p=[0.55, 0.25, 0.2])
        ground = _BARE if kind == "residential" or (kind == "field" and rng.random() < 0.5) else _VEG
        stuff.append((ground, shapely.box(x0, y0, x1, y1)))
        if kind == "residential":
            _building_rows(rng, (x0, y0, x1, y1), buildings)
        elif kind == "park":
            lake = None
            if rng.random() < 0.35 and min(x1 - x0, y1 - y0) > 40:
                lake = _lake(rng, (x0, y0, x1, y1))
                stuff.append((_WATER, lake))
                lakes.append(lake)
            _tree_clusters(rng, (x0, y0, x1, y1), trees, lake)
        else:
            # a few trees along the edge of fields
            if rng.random() < 0.5:
                _tree_clusters(rng, (x0, y0, x1, y1), trees, None, n_clusters=1)

    # A river crossing the scene from west to east (drawn under the roads: they cross it on bridges).
    river = None
    if extent_m > 150 and rng.random() < 0.8:
        t = np.linspace(-60, extent_m + 60, 200)
        y = extent_m * rng.uniform(0.25, 0.75) + 25 * np.sin(t / rng.uniform(60, 120) + rng.uniform(0, 6)) \
            + 10 * np.sin(t / 23.0)
        river = LineString(np.c_[t, y]).buffer(rng.uniform(10, 18), cap_style="flat")
        stuff.append((_WATER, river))

    # Roads last among stuff: they cover block edges and the river (bridges).
    road_polys = [shapely.box(x - w / 2, -60, x + w / 2, extent_m + 60) for x, w in zip(xs, wx)]
    road_polys += [shapely.box(-60, y - w / 2, extent_m + 60, y + w / 2) for y, w in zip(ys, wy)]
    if road_polys:
        stuff.append((_ROAD, shapely.union_all(road_polys)))

    # Vehicles in lanes along every road; none inside crossings.
    crossings = [shapely.box(x - w / 2 - 3, y - v / 2 - 3, x + w / 2 + 3, y + v / 2 + 3)
                 for x, w in zip(xs, wx) for y, v in zip(ys, wy)]
    cross_tree = shapely.STRtree(crossings) if crossings else None
    for axis, centres, widths in ((0, xs, wx), (1, ys, wy)):
        for c, w in zip(centres, widths):
            for lane in (-1, 1):
                off = lane * w / 4
                p = rng.uniform(0, 30)
                while p < extent_m:
                    if rng.random() < 0.25:  # a queue of cars, nearly bumper to bumper
                        n = rng.integers(2, 6)
                    else:
                        n = 1
                    for _ in range(n):
                        length, width = rng.uniform(4.0, 5.2), rng.uniform(1.7, 2.0)
                        if axis == 0:
                            g = shapely.box(c + off - width / 2, p, c + off + width / 2, p + length)
                        else:
                            g = shapely.box(p, c + off - width / 2, p + length, c + off + width / 2)
                        if cross_tree is None or cross_tree.query(g, predicate="intersects").size == 0:
                            vehicles.append((g, int(rng.integers(0, len(_PAINTS)))))
                        p += length + rng.uniform(0.6, 1.5)
                    p += rng.exponential(45.0)

    things: list[tuple[int, object, object]] = []
    if buildings:
        b = np.array(buildings)
        polys = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
        keep = np.ones(len(polys), bool)
        if river is not None:
            keep &= ~shapely.intersects(polys, river)
        for g, row in zip(polys[keep], b[keep]):
            tone = _ROOFS[int(row[4])] * np.float32(rng.uniform(0.88, 1.12))
            things.append((_BUILDING, g, tone))
    if trees:
        t = np.array(trees)
        polys = shapely.buffer(shapely.points(t[:, 0], t[:, 1]), t[:, 2], quad_segs=6)
        keep = np.ones(len(polys), bool)
        if river is not None:
            keep &= ~shapely.intersects(polys, river)
        for g in polys[keep]:
            things.append((_TREE, g, None))
    for g, paint in vehicles:
        things.append((_VEHICLE, g, _PAINTS[paint] * np.float32(rng.uniform(0.9, 1.1))))
    return [(v, g, None) for v, g in stuff] + things


def _building_rows(rng, block, out):
    x0, y0, x1, y1 = block
    setback = rng.uniform(2.0, 6.0)
    horizontal = (x1 - x0) >= (y1 - y0)
    # work in (u along the row, v across) coordinates
    u0, u1 = (x0, x1) if horizontal else (y0, y1)
    v0, v1 = (y0, y1) if horizontal else (x0, x1)
    u0, u1, v0, v1 = u0 + setback, u1 - setback, v0 + setback, v1 - setback
    v = v0
    while True:
        depth = rng.uniform(9.0, 15.0)
        if v + depth > v1:
            break
        palette = int(rng.integers(0, len(_ROOFS)))
        u = u0 + rng.uniform(0, 3)
        while True:
            w = rng.uniform(6.0, 14.0)
            if u + w > u1:
                break
            d = depth * rng.uniform(0.85, 1.0)
            if rng.random() < 0.1:
                palette = int(rng.integers(0, len(_ROOFS)))
            box = (u, v, u + w, v + d) if horizontal else (v, u, v + d, u + w)
            out.append((*box, palette))
            # mostly touching (shared wall), sometimes a gap
            u += w + (0.0 if rng.random() < 0.8 else rng.uniform(2.0, 6.0))
        v += depth + rng.uniform(5.0, 14.0)


def _lake(rng, block):
    from shapely.geometry import Polygon

    x0, y0, x1, y1 = block
    cx, cy = (x0 + x1) / 2 + rng.uniform(-5, 5), (y0 + y1) / 2 + rng.uniform(-5, 5)
    rx, ry = (x1 - x0) * rng.uniform(0.15, 0.35), (y1 - y0) * rng.uniform(0.15, 0.35)
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    k = 1 + 0.12 * np.sin(3 * a + rng.uniform(0, 6)) + 0.08 * np.sin(5 * a + rng.uniform(0, 6))
    return Polygon(np.c_[cx + rx * k * np.cos(a), cy + ry * k * np.sin(a)])


def _tree_clusters(rng, block, out, lake, n_clusters=None):
    from shapely.geometry import Point

    x0, y0, x1, y1 = block
    if n_clusters is None:
        n_clusters = int(rng.integers(1, 4))
    for _ in range(n_clusters):
        cx, cy = rng.uniform(x0 + 5, x1 - 5), rng.uniform(y0 + 5, y1 - 5)
        sigma = rng.uniform(4.0, 10.0)
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(4, 20))):
            for _try in range(6):
                r = rng.uniform(1.5, 3.8)
                x, y = rng.normal(cx, sigma), rng.normal(cy, sigma)
                if not (x0 + r < x < x1 - r and y0 + r < y < y1 - r):
                    continue
                # crowns touch or overlap a little, never hide each other
                if any((x - a) ** 2 + (y - b) ** 2 < (0.75 * (r + c)) ** 2 for a, b, c in placed):
                    continue
                if lake is not None and lake.buffer(r).contains(Point(x, y)):
                    continue
                placed.append((x, y, r))
                break
        out.extend(placed)


# --------------------------------------------------------------------------- rendering (pixels)
def _hash_uniform(rows, cols, salt: int) -> np.ndarray:
    """Uniform [0, 1) noise from global pixel coordinates (integer hash; same value whatever the window)."""
    h = (rows.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ (cols.astype(np.uint64) * np.uint64(0x85EBCA77)) \
        ^ np.uint64((salt * 0xC2B2AE3D) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    h *= np.uint64(0x297A2D39)
    h ^= h >> np.uint64(15)
    return ((h & np.uint64(0xFFFFFF)).astype(np.float32)) / np.float32(1 << 24)


def _smooth_field(grid: np.ndarray, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """Bilinear interpolation of a coarse global grid at the window's global pixel coordinates."""
    rr = (np.arange(r0, r0 + h, dtype=np.float32) + _NOISE_CELL * 2) / _NOISE_CELL
    cc = (np.arange(c0, c0 + w, dtype=np.float32) + _NOISE_CELL * 2) / _NOISE_CELL
    ri, ci = np.floor(rr).astype(int), np.floor(cc).astype(int)
    fr, fc = (rr - ri)[:, None], (cc - ci)[None, :]
    g00 = grid[np.ix_(ri, ci)]
    g01 = grid[np.ix_(ri, ci + 1)]
    g10 = grid[np.ix_(ri + 1, ci)]
    g11 = grid[np.ix_(ri + 1, ci + 1)]
    return (g00 * (1 - fr) * (1 - fc) + g01 * (1 - fr) * fc + g10 * fr * (1 - fc) + g11 * fr * fc).astype(np.float32)


def _render_window(r0, c0, h, w, *, size, transform, geoms, tree_index, feat_class, feat_color,
                   n_bands, brightness, moisture, seed, nodata_border):
    """Reflectance (bands, h, w) of one window (global rows r0.., cols c0..), float32 in [0, 1]."""
    import shapely
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from rasterio.windows import transform as window_transform
    from scipy import ndimage

    H, W = h + 2 * _HALO, w + 2 * _HALO
    R0, C0 = r0 - _HALO, c0 - _HALO
    win = Window(C0, R0, W, H)
    t = window_transform(win, transform)
    idx = np.sort(tree_index.query(shapely.box(*window_bounds(win, transform))))
    fid = np.zeros((H, W), dtype=np.int32)  # feature id + 1 (stuff and things, later features on top)
    if idx.size:
        fid = rasterize(zip(geoms[idx], (idx + 1).tolist()), out_shape=(H, W), transform=t, fill=0, dtype="int32")
    cls = feat_class[fid]  # feat_class[0] = 0
    rows = np.arange(R0, R0 + H, dtype=np.int64)[:, None] + np.zeros((1, W), np.int64)
    cols = np.arange(C0, C0 + W, dtype=np.int64)[None, :] + np.zeros((H, 1), np.int64)

    colour = _BASE[cls][..., :n_bands] if n_bands > 1 else _BASE[cls][..., :3].mean(-1, keepdims=True)
    per_feature = feat_color[fid]  # (H, W, 6), NaN where the class colour is used
    has_own = ~np.isnan(per_feature[..., 0])
    if has_own.any():
        own = per_feature[has_own][:, :n_bands] if n_bands > 1 else per_feature[has_own][:, :3].mean(-1, keepdims=True)
        colour[has_own] = own
    img = np.moveaxis(colour, -1, 0).copy()  # (bands, H, W)

    bright = _smooth_field(brightness, R0, C0, H, W)
    wet = _smooth_field(moisture, R0, C0, H, W)
    fine2 = _hash_uniform(rows // 2, cols // 2, seed * 7 + 2) - 0.5  # coarser grain
    is_building = cls == _BUILDING
    is_tree = cls == _TREE
    veg = cls == _VEG
    bare = cls == _BARE
    # Texture: grass and soil vary with a moisture field and grain; water ripples; roads get asphalt grain.
    gain = 1.0 + 0.18 * bright
    gain = gain + np.where(veg | bare, 0.35 * wet + 0.25 * fine2, 0.0)
    gain = gain + np.where(cls == _ROAD, 0.12 * fine2, 0.0)
    gain = gain + np.where(cls == _WATER, 0.10 * np.sin(rows * 0.9 + cols * 0.3 + 3 * wet), 0.0)
    gain = gain + np.where(is_tree, 0.3 * fine2, 0.0)
    # Building outlines: a pixel next to another feature (neighbouring building included) is darker.
    edge = np.zeros((H, W), bool)
    edge[1:, :] |= fid[1:, :] != fid[:-1, :]
    edge[:-1, :] |= fid[:-1, :] != fid[1:, :]
    edge[:, 1:] |= fid[:, 1:] != fid[:, :-1]
    edge[:, :-1] |= fid[:, :-1] != fid[:, 1:]
    gain = np.where(is_building & edge, gain * 0.55, gain)
    # Shadows: ground pixels 1..3 px south-east of a building or tree.
    tall = is_building | is_tree
    shadow = np.zeros((H, W), bool)
    for k in (1, 2, 3):
        shadow[k:, k:] |= tall[:-k, :-k]
    shadow &= ~tall
    gain = np.where(shadow, gain * 0.55, gain)
    # Tree crowns: bright centre, dark rim (distance to the crown edge, separate crowns split by their rims).
    if is_tree.any():
        inner = is_tree & ~edge
        d = ndimage.distance_transform_edt(inner)
        crown = np.minimum(d, _CROWN_CAP) / _CROWN_CAP
        gain = np.where(is_tree, gain * (0.55 + 0.6 * crown), gain)
    # Vehicles: a darker windscreen band is too fine to matter; give them a bright rim instead.
    gain = np.where((cls == _VEHICLE) & edge, gain * 1.25, gain)
    img *= gain[None]
    for b in range(img.shape[0]):
        img[b] += 0.025 * (_hash_uniform(rows, cols, seed * 7 + 11 + b) - 0.5)
    img = img[:, _HALO:_HALO + h, _HALO:_HALO + w]
    valid = np.ones((h, w), bool)
    if nodata_border > 0:
        rr = np.arange(r0, r0 + h)[:, None]
        cc = np.arange(c0, c0 + w)[None, :]
        valid = (rr >= nodata_border) & (rr < size - nodata_border) & (cc >= nodata_border) & (cc < size - nodata_border)
    return np.clip(img, 0.0, 1.0), valid


def make_scene(
    out_raster: str | os.PathLike,
    out_labels: str | os.PathLike,
    size: int = 1024,
    seed: int = 0,
    bands: int = 4,
    dtype: str = "uint8",
    pixel_size: float = 0.5,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 4500000.0),
    nodata_border: int = 0,
    nodata: float | None = None,
    block_size: int = 512,
    compress: str | None = "deflate",
    overwrite: bool = False,
) -> SceneInfo:
    """Write a seeded synthetic scene: a multi-band GeoTIFF and a GeoPackage of labels.

    Parameters
    ----------
    out_raster:
        GeoTIFF to write (tiled, band descriptions ``red, green, blue, nir, ...``).
    out_labels:
        Vector file for the labels (GeoPackage recommended; any format geopandas writes).
        One polygon per feature with fields ``class_name`` and ``class_value``.
    size:
        Width and height in pixels (256 to 8192 and more; memory stays flat).
    seed:
        Random seed; the same seed gives the same scene.
    bands:
        Number of bands, 1 (panchromatic) or 3 to 6 (R, G, B, NIR, SWIR1, SWIR2).
    dtype:
        ``"uint8"`` (1..255), ``"uint16"`` (reflectance x 10000) or ``"float32"`` (reflectance).
    pixel_size:
        Pixel size in CRS units (metres for a UTM CRS).
    crs:
        Coordinate reference system of raster and labels.
    origin:
        ``(x, y)`` of the top-left corner.
    nodata_border:
        Width in pixels of a no-data frame around the scene (0 = none).
    nodata:
        No-data value; defaults to 0 when ``nodata_border > 0`` (valid pixels never take it).
    block_size:
        Window size used to render and write (a multiple of 16).
    compress:
        GeoTIFF compression (``None`` for none).
    overwrite:
        Replace existing outputs.

    Returns
    -------
    SceneInfo
        Paths, class table, class field, georeferencing.

    Raises
    ------
    ArgumentError
        An argument is out of range.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    """
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    out_raster, out_labels = Path(out_raster), Path(out_labels)
    size = int(size)
    if size < 64:
        raise ArgumentError(f"size={size} is too small: use at least 64 pixels (256 or more for a useful scene).")
    if bands not in (1, 3, 4, 5, 6):
        raise ArgumentError(f"bands={bands} is not supported: use 1 (panchromatic) or 3 to 6 (R, G, B, NIR, SWIR1, SWIR2).")
    dtype = str(np.dtype(dtype))
    if dtype not in ("uint8", "uint16", "float32"):
        raise ArgumentError(f"dtype='{dtype}' is not supported: use 'uint8', 'uint16' or 'float32'.")
    if pixel_size <= 0:
        raise ArgumentError(f"pixel_size={pixel_size} must be positive (CRS units per pixel).")
    if nodata_border < 0 or 2 * nodata_border >= size:
        raise ArgumentError(f"nodata_border={nodata_border} must be between 0 and less than half of size={size}.")
    if block_size % 16 or block_size <= 0:
        raise ArgumentError(f"block_size={block_size} must be a positive multiple of 16.")
    for p in (out_raster, out_labels):
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} already exists. Delete it or pass overwrite=True.")
    if nodata is None and nodata_border > 0:
        nodata = 0
    out_raster.parent.mkdir(parents=True, exist_ok=True)
    out_labels.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    extent_m = size * pixel_size
    items = _layout(rng, extent_m)
    ox, oy = origin
    transform = from_origin(ox, oy, pixel_size, pixel_size)
    # local metres (x east, y south) -> CRS coordinates
    geoms = np.array([shapely.transform(g, lambda xy: np.c_[ox + xy[:, 0], oy - xy[:, 1]]) for _, g, _ in items],
                     dtype=object)
    classes = np.array([v for v, _, _ in items], dtype=np.int32)
    # clip to the scene extent
    scene_box = shapely.box(ox, oy - extent_m, ox + extent_m, oy)
    geoms = shapely.intersection(geoms, scene_box)
    keep = ~shapely.is_empty(geoms) & (shapely.area(geoms) > 0)
    geoms, classes = geoms[keep], classes[keep]
    colors = [c for (_, _, c), k in zip(items, keep) if k]
    feat_class = np.concatenate([[0], classes]).astype(np.int32)
    feat_color = np.full((len(geoms) + 1, 6), np.nan, np.float32)
    for i, c in enumerate(colors, start=1):
        if c is not None:
            feat_color[i] = c
    tree_index = shapely.STRtree(geoms)
    n_cells = size // _NOISE_CELL + 6
    brightness = rng.normal(0, 1, (n_cells, n_cells)).astype(np.float32)
    moisture = rng.normal(0, 1, (n_cells, n_cells)).astype(np.float32)

    # Labels first (small), written to a temporary name then renamed.
    gdf = gpd.GeoDataFrame({
        CLASS_FIELD: [_NAME[v] for v in classes],
        "class_value": classes.astype(np.int32),
    }, geometry=list(geoms), crs=crs)
    tmp_labels = out_labels.with_name(f".{out_labels.stem}.tmp{out_labels.suffix}")
    if tmp_labels.exists():
        tmp_labels.unlink()
    gdf.to_file(tmp_labels, layer="labels")

    band_names = BAND_NAMES[:bands] if bands > 1 else ("pan",)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": dtype, "crs": crs,
        "transform": transform, "tiled": True, "blockxsize": min(256, block_size), "blockysize": min(256, block_size),
        "interleave": "pixel", "photometric": "MINISBLACK",  # band 4 is NIR, not alpha
    }
    if size % 16:
        profile.update(tiled=False)
        profile.pop("blockxsize"), profile.pop("blockysize")
    if compress:
        profile["compress"] = compress
        if dtype != "float32":
            profile["predictor"] = 2
    if nodata is not None:
        profile["nodata"] = nodata
    tmp_raster = out_raster.with_name(f".{out_raster.stem}.tmp{out_raster.suffix}")
    with rasterio.open(tmp_raster, "w", **profile) as dst:
        dst.descriptions = tuple(band_names)
        if bands >= 3:
            from rasterio.enums import ColorInterp

            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + [ColorInterp.undefined] * (bands - 3)
        for r0 in range(0, size, block_size):
            for c0 in range(0, size, block_size):
                h, w = min(block_size, size - r0), min(block_size, size - c0)
                refl, valid = _render_window(
                    r0, c0, h, w, size=size, transform=transform, geoms=geoms, tree_index=tree_index,
                    feat_class=feat_class, feat_color=feat_color, n_bands=bands, brightness=brightness,
                    moisture=moisture, seed=seed, nodata_border=nodata_border)
                if dtype == "uint8":
                    arr = np.clip(np.round(refl * 254.0) + 1, 1, 255).astype(np.uint8)
                elif dtype == "uint16":
                    arr = np.clip(np.round(refl * 10000.0) + 1, 1, 10001).astype(np.uint16)
                else:
                    arr = np.maximum(refl, 1e-4).astype(np.float32)
                if nodata is not None:
                    arr[:, ~valid] = nodata
                dst.write(arr, window=Window(c0, r0, w, h))
    os.replace(tmp_raster, out_raster)
    if out_labels.exists():
        out_labels.unlink()
    os.replace(tmp_labels, out_labels)
    counts = {name: int((classes == v).sum()) for v, name in _NAME.items()}
    return SceneInfo(out_raster, out_labels, SYNTHETIC_CLASSES, CLASS_FIELD, size, crs, transform, nodata,
                     tuple(band_names), dtype, counts)
