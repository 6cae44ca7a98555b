"""A tiny georeferenced scene with tricky objects for the inference tests (helpers + fixture)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from shapely.affinity import affine_transform
from shapely.geometry import MultiPolygon, Polygon, box

from geomax.data.classes import ClassInfo, ClassTable
from geomax.data.rasterize import rasterize_labels

CLASSES = ClassTable([
    ClassInfo(1, "water", (30, 120, 180), False),
    ClassInfo(2, "road", (160, 160, 160), False),
    ClassInfo(3, "grass", (120, 200, 90), False),
    ClassInfo(5, "building", (220, 50, 50), True),
    ClassInfo(6, "tree", (20, 110, 40), True),
])

H, W = 230, 270
TRANSFORM = from_origin(600000.0, 5700000.0, 0.5, 0.5)
CRS = "EPSG:32632"
NODATA_BOX = (0, 0, 20, 30)  # rows 0..20, cols 0..30 are no data in every band
ONE_BAND_NODATA_BOX = (50, 50, 60, 60)  # no data in band 1 only: no data too (valid only if valid in every band)


def _px(geom):
    """Pixel-space (col, row) geometry -> CRS coordinates."""
    t = TRANSFORM
    return affine_transform(geom, [t.a, t.b, t.d, t.e, t.c, t.f])


def _pbox(r0, c0, r1, c1):
    return box(c0, r0, c1, r1)


def label_frame() -> gpd.GeoDataFrame:
    """Stuff background plus touching buildings, an L crossing tile corners, a ring with a hole,
    a two-part tree, a long building crossing many tiles and scattered small trees."""
    rows = [
        ("grass", _pbox(0, 0, 230, 200)),
        ("road", _pbox(0, 200, 230, 215)),
        ("water", _pbox(0, 215, 120, 270)),
        ("grass", _pbox(150, 230, 200, 260)),           # a second, separate grass region
        ("building", _pbox(10, 50, 40, 90)),             # touching pair
        ("building", _pbox(10, 90, 40, 130)),
        ("building", Polygon([(20, 50), (180, 50), (180, 65), (35, 65), (35, 180), (20, 180)])),  # L (col,row)
        ("building", Polygon(_pbox(120, 100, 190, 170).exterior.coords,
                             [_pbox(140, 120, 170, 150).exterior.coords])),                      # ring
        ("tree", MultiPolygon([_pbox(195, 30, 215, 50), _pbox(195, 58, 215, 78)])),              # two parts
        ("building", _pbox(100, 190, 106, 266)),         # long, thin, across road and water
    ]
    rng = np.random.default_rng(3)
    centres = [(200, 120), (205, 150), (215, 180), (75, 60), (90, 160), (60, 240), (30, 160), (215, 100)]
    for r, c in centres:
        rows.append(("tree", Polygon([(c + 5 * np.cos(a), r + 5 * np.sin(a))
                                      for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)])))
    rng.shuffle(rows[4:])  # feature order must not matter
    return gpd.GeoDataFrame({"class_name": [r[0] for r in rows]},
                            geometry=[_px(r[1]) for r in rows], crs=CRS)


def ground_truth(gdf) -> tuple[np.ndarray, np.ndarray]:
    cls, inst = rasterize_labels(gdf, "class_name", CLASSES, TRANSFORM, (H, W))
    for r0, c0, r1, c1 in (NODATA_BOX, ONE_BAND_NODATA_BOX):
        cls[r0:r1, c0:c1] = 0
        inst[r0:r1, c0:c1] = 0
    return cls, inst


def write_image(path: Path, n_bands: int = 3, dtype: str = "uint8", crs=CRS, names=None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 200, size=(n_bands, H, W)).astype(dtype)
    r0, c0, r1, c1 = NODATA_BOX
    data[:, r0:r1, c0:c1] = 0
    r0, c0, r1, c1 = ONE_BAND_NODATA_BOX
    data[0, r0:r1, c0:c1] = 0  # no data in one band only
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=n_bands, dtype=dtype, crs=crs,
                       transform=TRANSFORM, nodata=0) as dst:
        dst.write(data)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return path


@dataclass
class Scene:
    image: Path
    labels: gpd.GeoDataFrame
    class_map: np.ndarray
    instance_map: np.ndarray


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    folder = tmp_path_factory.mktemp("scene")
    gdf = label_frame()
    cls, inst = ground_truth(gdf)
    return Scene(write_image(folder / "image.tif"), gdf, cls, inst)


def assert_same_features(got: gpd.GeoDataFrame, expected: gpd.GeoDataFrame) -> None:
    """The same features in any order: equal attributes and equal geometries (normalized WKB), one by one."""
    assert list(got.columns) == list(expected.columns) and got.crs == expected.crs
    assert len(got) == len(expected)
    columns = [c for c in expected.columns if c != expected.geometry.name]

    def in_order(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        key = gdf.assign(_wkb=shapely.to_wkb(shapely.normalize(gdf.geometry.to_numpy())))
        return key.sort_values(columns[:2] + ["_wkb"]).reset_index(drop=True)  # instance id, class Value

    a, b = in_order(got), in_order(expected)
    assert a[columns].to_dict("records") == b[columns].to_dict("records")  # exact, confidence included
    assert a.geometry.geom_equals(b.geometry).all()
    assert list(a["_wkb"]) == list(b["_wkb"])
