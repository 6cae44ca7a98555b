import geopandas as gpd
import numpy as np
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.errors import DataError

T = from_origin(0, 20, 1, 1)  # 20 x 20 px of 1 m


def _gdf(rows):
    return gpd.GeoDataFrame({"cls": [r[0] for r in rows]}, geometry=[r[1] for r in rows], crs="EPSG:32633")


def test_things_over_stuff_and_numbered_in_window():
    gdf = _gdf([
        ("building", box(2, 2, 6, 6)),      # first thing, listed before the stuff
        ("road", box(0, 0, 20, 20)),
        ("building", box(6, 2, 10, 6)),     # touches the first one
        ("vehicle", box(100, 100, 104, 102)),  # outside the window: not numbered
        ("tree", box(12, 12, 15, 15)),
    ])
    cm, im = rasterize_labels(gdf, "cls", SYNTHETIC_CLASSES, T, (20, 20))
    assert cm.dtype == np.int32 and im.dtype == np.int32
    assert (cm[im == 0] == 2).all()  # road everywhere else
    assert sorted(np.unique(im).tolist()) == [0, 1, 2, 3]
    assert (cm[im > 0] != 2).all()
    # row 14..17 (y 2..6), cols 2..5 first building, 6..9 second
    assert (im[14:18, 2:6] == 1).all() and (im[14:18, 6:10] == 2).all()
    assert (cm[14:18, 2:10] == 5).all()
    assert (im[5:8, 12:15] == 3).all() and (cm[5:8, 12:15] == 6).all()


def test_integer_values_and_errors():
    gdf = gpd.GeoDataFrame({"v": [2, 5]}, geometry=[box(0, 0, 20, 20), box(1, 1, 3, 3)], crs="EPSG:32633")
    cm, im = rasterize_labels(gdf, "v", SYNTHETIC_CLASSES, T, (20, 20))
    assert (cm == 5).sum() == 4 and im.max() == 1
    with pytest.raises(DataError, match="not in the class table"):
        rasterize_labels(_gdf([("castle", box(0, 0, 2, 2))]), "cls", SYNTHETIC_CLASSES, T, (20, 20))
    with pytest.raises(DataError, match="no field 'nope'"):
        rasterize_labels(gdf, "nope", SYNTHETIC_CLASSES, T, (20, 20))
