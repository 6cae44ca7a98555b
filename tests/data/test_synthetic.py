import geopandas as gpd
import numpy as np
import pytest
import rasterio
from scipy import ndimage

from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES, make_scene
from geomax.errors import ArgumentError, OutputExistsError


def test_scene_is_georeferenced_with_nodata_border(scene4):
    with rasterio.open(scene4.raster) as ds:
        assert ds.crs.to_epsg() == 32633
        assert ds.count == 4 and ds.dtypes[0] == "uint16"
        assert ds.res == (0.5, 0.5)
        assert ds.nodata == 0
        assert ds.descriptions == ("red", "green", "blue", "nir")
        a = ds.read()
    border = np.zeros(a.shape[1:], bool)
    border[:20], border[-20:], border[:, :20], border[:, -20:] = True, True, True, True
    assert (a[:, border] == 0).all()
    assert (a[:, ~border] > 0).all()  # valid pixels never take the no-data value
    labels = gpd.read_file(scene4.labels)
    assert labels.crs.to_epsg() == 32633
    assert set(labels[CLASS_FIELD]) <= set(SYNTHETIC_CLASSES.names)


def test_scene_is_seeded_and_independent_of_window_size(tmp_path):
    a = make_scene(tmp_path / "a.tif", tmp_path / "a.gpkg", size=256, seed=3, block_size=64)
    b = make_scene(tmp_path / "b.tif", tmp_path / "b.gpkg", size=256, seed=3, block_size=256)
    c = make_scene(tmp_path / "c.tif", tmp_path / "c.gpkg", size=256, seed=4)
    with rasterio.open(a.raster) as da, rasterio.open(b.raster) as db, rasterio.open(c.raster) as dc:
        ra, rb, rc = da.read(), db.read(), dc.read()
    np.testing.assert_array_equal(ra, rb)  # seamless: the window size does not show
    assert (ra != rc).mean() > 0.3
    assert a.counts == b.counts


def test_touching_buildings_need_instances(scene3):
    """Connected components of the building class merge touching buildings: panoptic labels are needed."""
    gdf = gpd.read_file(scene3.labels)
    with rasterio.open(scene3.raster) as ds:
        class_map, instance_map = rasterize_labels(gdf, CLASS_FIELD, SYNTHETIC_CLASSES, ds.transform, ds.shape)
    building = class_map == SYNTHETIC_CLASSES.by_value(5).value
    n_instances = np.unique(instance_map[building]).size
    _, n_components = ndimage.label(building)
    assert n_instances >= 10
    assert n_components < n_instances
    # every class of the table appears in the labels of a larger scene; stuff and things both present here
    present = set(np.unique(class_map)) - {0}
    assert {2, 5, 7} <= present


def test_make_scene_bad_arguments(tmp_path):
    with pytest.raises(ArgumentError, match="bands"):
        make_scene(tmp_path / "x.tif", tmp_path / "x.gpkg", size=128, bands=2)
    with pytest.raises(ArgumentError, match="dtype"):
        make_scene(tmp_path / "x.tif", tmp_path / "x.gpkg", size=128, dtype="int8")
    make_scene(tmp_path / "x.tif", tmp_path / "x.gpkg", size=128)
    with pytest.raises(OutputExistsError, match="overwrite"):
        make_scene(tmp_path / "x.tif", tmp_path / "x.gpkg", size=128)
