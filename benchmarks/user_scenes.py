"""A second synthetic style for benchmarks, unlike the demo's: scattered rural buildings, no grid.

The demo's scenes (``geomax.data.synthetic``) have a road grid, touching rows of buildings,
tree clusters and vehicles. These scenes have none of that: detached buildings of several
shapes (rectangles, L shapes) at any rotation, with a two-tone gable roof and a shadow, on
a smooth mix of grass and soil crossed by a few straight dirt tracks. No recipe was tuned on
them. Labels: every building (thing ``building``), the tracks (stuff ``track``) and the
rest (stuff ``ground``), so a benchmark can keep all classes or the footprints only.

Used by ``benchmarks/bench_user_data.py``; not part of the package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOF_COLOURS = np.array([[170, 70, 55], [95, 95, 100], [185, 180, 170], [120, 85, 60], [60, 75, 95]], float)


def _smooth(rng, size: int, scale: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of a coarse grid)."""
    from scipy import ndimage

    coarse = rng.random((size // scale + 2, size // scale + 2))
    field = ndimage.zoom(coarse, scale, order=1)[:size, :size]
    return (field - field.min()) / max(np.ptp(field), 1e-6)


def _building(rng, cx: float, cy: float):
    """A rectangle or L-shaped footprint (pixel coordinates), rotated at random."""
    from shapely import affinity
    from shapely.geometry import box

    w, h = rng.uniform(14, 40), rng.uniform(12, 30)
    shape = box(-w / 2, -h / 2, w / 2, h / 2)
    if rng.random() < 0.4:  # an L: cut a corner away
        shape = shape.difference(box(w / 2 - w * rng.uniform(0.35, 0.55), h / 2 - h * rng.uniform(0.35, 0.55),
                                     w / 2 + 1, h / 2 + 1))
    return affinity.translate(affinity.rotate(shape, rng.uniform(0, 180), origin=(0, 0)), cx, cy)


def make_user_scene(out_raster, out_labels, size: int = 1024, seed: int = 0, n_buildings: int | None = None,
                    bands: int = 3, dtype: str = "uint8", nodata_border: int = 0) -> dict:
    """Write a scene of the second style: a GeoTIFF (EPSG:32633, 0.5 m) and a GeoPackage of labels.

    Parameters
    ----------
    size:
        Width and height in pixels.
    n_buildings:
        Buildings to place (default: about one per 60 x 60 px).
    bands:
        1 (panchromatic), 3 (RGB) or 4 (RGB + NIR).
    dtype:
        ``"uint8"`` or ``"uint16"`` (values x 40 plus noise: a 12-bit-like product).
    nodata_border:
        Width of a no-data (0) frame.

    Returns
    -------
    dict
        ``raster``, ``labels``, ``n_buildings``.
    """
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from shapely import affinity
    from shapely.geometry import LineString, box

    rng = np.random.default_rng(seed)
    transform = from_origin(400000.0, 4600000.0, 0.5, 0.5)
    n_buildings = n_buildings if n_buildings is not None else max(4, (size // 60) ** 2)
    # tracks: straight lines across the scene, 6-10 px wide
    tracks = []
    for _ in range(rng.integers(1, 4)):
        y0, y1 = rng.uniform(0, size, 2)
        tracks.append(LineString([(0, y0), (size, y1)]).buffer(rng.uniform(3, 5), cap_style=2))
    track_area = tracks[0]
    for t in tracks[1:]:
        track_area = track_area.union(t)
    buildings = []
    tries = 0
    while len(buildings) < n_buildings and tries < 50 * n_buildings:
        tries += 1
        b = _building(rng, rng.uniform(25, size - 25), rng.uniform(25, size - 25))
        if b.intersects(track_area) or any(b.buffer(4).intersects(o) for o in buildings):
            continue
        buildings.append(b)
    # rendering (pixel coordinates: shapes are in pixel space, x = column, y = row)
    grass, soil = np.array([95, 140, 70], float), np.array([150, 125, 90], float)
    mix = _smooth(rng, size, 64)[..., None]
    img = grass * (1 - mix) + soil * mix + rng.normal(0, 9, (size, size, 1)) + _smooth(rng, size, 8)[..., None] * 20
    track_mask = rasterize([(track_area, 1)], out_shape=(size, size), dtype="uint8").astype(bool)
    img[track_mask] = np.array([175, 160, 135]) + rng.normal(0, 6, (int(track_mask.sum()), 3))
    for b in buildings:
        colour = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] * rng.uniform(0.85, 1.15)
        shadow = affinity.translate(b, 4, 4)
        sm = rasterize([(shadow, 1)], out_shape=(size, size), dtype="uint8").astype(bool)
        img[sm] *= 0.55
        minx, miny, maxx, maxy = b.bounds
        half = box(minx, miny, (minx + maxx) / 2, maxy)
        roof = rasterize([(b, 1), (b.intersection(half), 2)], out_shape=(size, size), dtype="uint8")
        img[roof == 1] = colour + rng.normal(0, 5, (int((roof == 1).sum()), 3))
        img[roof == 2] = colour * 0.8 + rng.normal(0, 5, (int((roof == 2).sum()), 3))
    img = np.clip(img, 1, 255)
    if bands == 1:
        data = img.mean(-1, keepdims=True)
    elif bands == 3:
        data = img
    elif bands == 4:
        nir = np.where(track_mask, 120.0, 200 - 80 * mix[..., 0]) + rng.normal(0, 8, (size, size))
        data = np.concatenate([img, np.clip(nir, 1, 255)[..., None]], -1)
    else:
        raise ValueError("bands must be 1, 3 or 4")
    data = data.transpose(2, 0, 1)
    if dtype == "uint16":
        data = np.clip(data * 40 + rng.normal(0, 30, data.shape), 1, 65535).astype(np.uint16)
    else:
        data = data.round().astype(np.uint8)
    if nodata_border:
        data[:, :nodata_border], data[:, -nodata_border:] = 0, 0
        data[:, :, :nodata_border], data[:, :, -nodata_border:] = 0, 0
    names = {1: ["pan"], 3: ["red", "green", "blue"], 4: ["red", "green", "blue", "nir"]}[bands]
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype=data.dtype.name, crs="EPSG:32633",
                   transform=transform, tiled=True, compress="deflate", nodata=0 if nodata_border else None)
    out_raster, out_labels = Path(out_raster), Path(out_labels)
    with rasterio.open(out_raster, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(names)
    to_map = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    frame = box(0, 0, size, size)
    ground = frame.difference(track_area)
    for b in buildings:
        ground = ground.difference(b)
    geoms = ([affinity.affine_transform(b, to_map) for b in buildings]
             + [affinity.affine_transform(track_area.intersection(frame), to_map), affinity.affine_transform(ground,
                                                                                                           to_map)])
    names_ = ["building"] * len(buildings) + ["track", "ground"]
    gpd.GeoDataFrame({"class_name": names_}, geometry=geoms, crs="EPSG:32633").to_file(out_labels)
    return {"raster": out_raster, "labels": out_labels, "n_buildings": len(buildings)}
