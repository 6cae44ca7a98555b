"""Tiny seeded synthetic scenes and their exports, shared by the data tests."""
import pytest

from geomax.data.export import export_training_data
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES, make_scene


@pytest.fixture(scope="session")
def scene3(tmp_path_factory):
    """3-band uint8 scene, 320 px, with a 12 px no-data border."""
    d = tmp_path_factory.mktemp("scene3")
    return make_scene(d / "scene.tif", d / "labels.gpkg", size=320, seed=5, bands=3, dtype="uint8", nodata_border=12)


@pytest.fixture(scope="session")
def scene4(tmp_path_factory):
    """4-band uint16 scene, 256 px, with a 20 px no-data border."""
    d = tmp_path_factory.mktemp("scene4")
    return make_scene(d / "scene.tif", d / "labels.gpkg", size=256, seed=7, bands=4, dtype="uint16", nodata_border=20)


@pytest.fixture(scope="session")
def export3(scene3, tmp_path_factory):
    out = tmp_path_factory.mktemp("export3") / "chips"
    return export_training_data(scene3.raster, scene3.labels, out, class_field=CLASS_FIELD,
                                class_table=SYNTHETIC_CLASSES, tile_size=128, stride=96, progress=False)


@pytest.fixture(scope="session")
def export4(scene4, tmp_path_factory):
    out = tmp_path_factory.mktemp("export4") / "chips"
    return export_training_data(scene4.raster, scene4.labels, out, class_field=CLASS_FIELD,
                                class_table=SYNTHETIC_CLASSES, tile_size=128, progress=False)
