"""Tests of geomax.inference.vectorize.PanopticVectorizer: the background class is left out by default."""
import numpy as np
from rasterio.transform import from_origin

from geomax.data.classes import BACKGROUND_NAME, ClassInfo, ClassTable
from geomax.inference.vectorize import PanopticVectorizer

TABLE = ClassTable([ClassInfo(1, "building", (200, 0, 0), True), ClassInfo(2, BACKGROUND_NAME, (190, 190, 190), False),
                    ClassInfo(3, "water", (0, 0, 200), False)])


def _features(**kwargs):
    cls = np.full((20, 20), 2, np.int32)
    inst = np.zeros((20, 20), np.int32)
    cls[2:6, 2:6], inst[2:6, 2:6] = 1, 1
    cls[10:14, 10:16], inst[10:14, 10:16] = 1, 2
    cls[16:, :] = 3
    vec = PanopticVectorizer(TABLE, from_origin(0, 20, 1, 1), 20, **kwargs)
    vec.add_block(0, 0, cls, inst, np.full((20, 20), 90, np.uint8))
    return vec.to_geodataframe(crs="EPSG:32633")


def test_background_is_left_out_of_the_features_by_default():
    gdf = _features()
    assert sorted(gdf["class_name"]) == ["building", "building", "water"]


def test_every_class_when_asked():
    gdf = _features(skip_values=[])
    assert sorted(gdf["class_name"]) == [BACKGROUND_NAME, "building", "building", "water"]
    bg = gdf[gdf["class_name"] == BACKGROUND_NAME].geometry.iloc[0]
    assert bg.area == 20 * 16 - 16 - 24  # the complement of the buildings above the water
