"""Tests of geomax.data.image_io.read_image: a model's bands and validity from a file or an array."""
import numpy as np
import pytest
import rasterio

from geomax.data.image_io import read_image
from geomax.errors import DataError, InputMismatchError

NAMES = ["red", "green", "blue", "nir"]


def test_file_is_read_with_its_no_data_mask(synthetic_scene):
    array, valid = read_image(synthetic_scene.raster, NAMES, [0, 1, 2, 3])
    with rasterio.open(synthetic_scene.raster) as src:
        np.testing.assert_array_equal(array, src.read())
    assert valid.shape == array.shape[1:] and valid.any() and not valid.all()
    assert not valid[0, 0] and valid[synthetic_scene.size // 2, synthetic_scene.size // 2]


def test_a_band_subset_model_reads_its_bands_from_a_full_file(synthetic_scene):
    full, _ = read_image(synthetic_scene.raster, NAMES, [0, 1, 2, 3])
    subset, _ = read_image(synthetic_scene.raster, ["nir", "red"], [3, 0])
    np.testing.assert_array_equal(subset, full[[3, 0]])


def test_arrays_band_first_channels_last_and_one_band():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (4, 10, 12), dtype=np.uint8)
    array, valid = read_image(image, NAMES, [0, 1, 2, 3])
    np.testing.assert_array_equal(array, image)
    assert valid.shape == (10, 12) and valid.all()
    np.testing.assert_array_equal(read_image(np.moveaxis(image, 0, -1), NAMES, [0, 1, 2, 3])[0], image)
    assert read_image(image[0], ["pan"], [0])[0].shape == (1, 10, 12)


def test_bad_images_raise(tmp_path):
    with pytest.raises(InputMismatchError, match="4 bands"):
        read_image(np.zeros((3, 8, 8)), NAMES, [0, 1, 2, 3])
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.tif", NAMES, [0, 1, 2, 3])
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(DataError, match="valid raster"):
        read_image(tmp_path / "text.tif", NAMES, [0, 1, 2, 3])
