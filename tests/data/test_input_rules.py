"""Tests of the input rules: band selection and order, the one no-data rule, value checks, label geometries.

Unit tests of :mod:`geomax.data.input_rules`, :func:`geomax.data.image_io.valid_pixels` and
:func:`geomax.data.labels.clean_label_geometries`, then the same rules through ``predict``,
``export_training_data`` and ``predict_raster`` with the session's trained model.
"""
import os
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from geomax.data.export import export_training_data
from geomax.data.image_io import read_image, valid_pixels
from geomax.data.input_rules import InputSample, check_sample, select_bands, suggest_band_order, value_range_problems
from geomax.data.labels import clean_label_geometries
from geomax.data.normalize import BandStats
from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.errors import ArgumentError, InputMismatchError
from geomax.inference.tiling import TileReader

RGB = ["red", "green", "blue"]


def stats(means, stds, lo=0.0, hi=255.0, names=RGB):
    n = len(means)
    return BandStats(list(names)[:n], [lo] * n, [hi] * n, means, stds)


def our_warnings(record, text):
    return [w for w in record if issubclass(w.category, UserWarning) and text in str(w.message)]


# --------------------------------------------------------------------------- select_bands
def test_named_bands_in_another_order_raise_with_the_bands_fix():
    with pytest.raises(InputMismatchError, match=r"\['blue', 'green', 'red'\].*trained on \['red', 'green', 'blue'\]"
                                                 r".*Pass bands=\[3, 2, 1\]"):
        select_bands(["blue", "green", "red"], 3, None, 3, RGB, "bgr.tif")
    assert select_bands(["blue", "green", "red"], 3, [3, 2, 1], 3, RGB, "bgr.tif") == [3, 2, 1]


def test_another_band_count_raises_unless_the_default_bands_fit():
    with pytest.raises(InputMismatchError, match="'cut.tif' has 3 bands but the model takes 4"):
        select_bands([None] * 3, 3, None, 4, RGB + ["nir"], "cut.tif", default_bands=[1, 2, 3, 4])
    # a model trained on bands 4 and 1 of a 4-band product reads them from the full product
    assert select_bands([None] * 4, 4, None, 2, ["nir", "red"], "full.tif", default_bands=[4, 1]) == [4, 1]
    with pytest.raises(ArgumentError, match=r"\[5\] not in 1..4"):
        select_bands([None] * 4, 4, [5, 1], 2, ["nir", "red"], "full.tif")


# --------------------------------------------------------------------------- valid_pixels
def test_a_pixel_is_valid_only_if_valid_in_every_band():
    image = np.ones((3, 4, 5), np.float32)
    image[1, 0, 0] = np.nan     # NaN in one band
    image[2, 1, 1] = np.inf     # infinite in one band
    image[0, 2, 2] = -9999      # the no-data value in one band
    valid = valid_pixels(image, nodata=-9999)
    assert valid.sum() == 20 - 3 and not valid[0, 0] and not valid[1, 1] and not valid[2, 2]
    per_band = valid_pixels(image, nodata=[None, -9999, -9999])  # band 1 has no no-data value
    assert per_band[2, 2] and not per_band[0, 0]
    mask = np.ones((3, 4, 5), np.uint8)
    mask[2, 3, 4] = 0           # masked in one band
    assert not valid_pixels(image, mask=mask)[3, 4] and not valid_pixels(image, mask=mask[2])[3, 4]


def test_a_float32_no_data_value_matches_as_the_band_stores_it():
    image = np.full((2, 2, 2), 0.1, np.float32)
    assert not valid_pixels(image, nodata=0.1).any()  # 0.1 is not a float32: compared as float32(0.1)


# --------------------------------------------------------------------------- band order from statistics
def test_reversed_bands_with_distinct_statistics_are_found():
    training = stats([60.0, 110.0, 170.0], [15.0, 20.0, 25.0])
    reversed_sample = stats([172.0, 108.0, 61.0], [24.0, 21.0, 14.0])
    assert suggest_band_order(reversed_sample, training) == [2, 1, 0]
    assert suggest_band_order(stats([63.0, 105.0, 175.0], [14.0, 22.0, 24.0]), training) is None  # given order


def test_no_suggestion_for_similar_bands_or_a_brightness_shift():
    similar = stats([100.0, 104.0, 98.0], [30.0, 31.0, 29.0])
    assert suggest_band_order(stats([99.0, 103.0, 101.0], [30.0, 30.0, 30.0]), similar) is None
    assert suggest_band_order(stats([101.0, 97.0, 104.0], [29.0, 31.0, 30.0]), similar) is None  # permuted
    distinct = stats([60.0, 110.0, 170.0], [15.0, 20.0, 25.0])
    assert suggest_band_order(stats([100.0, 150.0, 210.0], [15.0, 20.0, 25.0]), distinct) is None  # brighter


# --------------------------------------------------------------------------- value range and type
def sample_of(array):
    sample = InputSample(array.shape[0], array.dtype)
    sample.update(array)
    return sample


UINT8_TRAINING = stats([60.0, 110.0, 170.0], [15.0, 20.0, 25.0], lo=1.0, hi=255.0)


def test_values_like_the_training_data_have_no_problem():
    rng = np.random.default_rng(0)
    assert value_range_problems(sample_of(rng.integers(1, 255, (3, 16, 16)).astype(np.uint8)), UINT8_TRAINING) == []
    assert value_range_problems(sample_of(rng.integers(1, 255, (3, 16, 16)).astype(np.int16)), UINT8_TRAINING) == []
    whole_floats = rng.integers(1, 255, (3, 16, 16)).astype(np.float32)
    assert value_range_problems(sample_of(whole_floats), UINT8_TRAINING) == []


def test_negative_far_outside_and_fractional_values_are_problems():
    rng = np.random.default_rng(0)
    signed = rng.integers(-2000, 3000, (3, 16, 16)).astype(np.int16)
    problems = value_range_problems(sample_of(signed), UINT8_TRAINING, ["b1", "b2", "b3"])
    assert len(problems) == 3 and "negative values where training had none" in problems[0]
    assert problems[0].startswith("b1 has values -") and "'red' spanned 1..255" in problems[0]
    far = np.full((3, 4, 4), 100, np.uint16)
    far[1] = 2000                                   # beyond 255 + 2 * 254 in band 2
    assert [p.split(" has")[0] for p in value_range_problems(sample_of(far), UINT8_TRAINING)] == ["input band 2"]
    reflectance = rng.random((3, 16, 16)).astype(np.float32)
    assert "fractional values (float32)" in value_range_problems(sample_of(reflectance), UINT8_TRAINING)[0]
    float_training = stats([0.2, 0.3, 0.1], [0.05, 0.05, 0.05], lo=0.0001, hi=0.95)
    assert "float" in value_range_problems(sample_of(far), float_training)[0]


def test_check_sample_warns_once_naming_the_source_bands_ranges_and_fix():
    signed = np.random.default_rng(0).integers(-2000, 3000, (3, 16, 16)).astype(np.int16)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        check_sample(sample_of(signed), UINT8_TRAINING, "'dem.tif'", ["band 1", "band 2", "band 3"])
    found = our_warnings(record, "do not look like the model's training data")
    assert len(found) == 1
    message = str(found[0].message)
    assert message.startswith("'dem.tif'") and "band 3 has values" in message and "'blue' spanned 1..255" in message
    assert "rescale" in message and "same product" in message


# --------------------------------------------------------------------------- label geometries
def test_invalid_geometries_are_repaired_and_null_ones_dropped():
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])           # self-intersecting
    spike = Polygon([(3, 0), (5, 0), (5, 2), (4, 2), (4, 3), (4, 2), (3, 2)])  # a spike: invalid
    ring = Polygon([(6, 0), (8, 0), (8, 2), (6, 2)], [[(6, 0), (7, 1), (8, 0)]])  # hole touching the shell twice
    flat = Polygon([(0, 5), (1, 5), (2, 5)])                     # no area: nothing polygonal after repair
    gdf = gpd.GeoDataFrame({"class_name": list("abcdefgh")},
                           geometry=[bowtie, spike, ring, box(10, 10, 11, 11), None, Polygon(), flat,
                                     box(12, 12, 13, 13)], crs="EPSG:32633")
    with pytest.warns(UserWarning, match="labels.gpkg: 4 features had invalid geometries, repaired with make_valid "
                                         r"\(1 with no polygonal part left, dropped\); 2 null/empty geometries dropped"):
        out = clean_label_geometries(gdf, "labels.gpkg")
    assert list(out.class_name) == ["a", "b", "c", "d", "h"]
    assert out.geometry.is_valid.all() and out.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).all()
    assert out.geometry.iloc[0].area == pytest.approx(2.0)  # the bow-tie's two triangles
    assert len(gdf) == 8 and not gdf.geometry.iloc[0].is_valid  # the input is not changed


def test_clean_labels_say_nothing():
    gdf = gpd.GeoDataFrame({"class_name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32633")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(clean_label_geometries(gdf, "labels.gpkg")) == 1


def test_export_repairs_invalid_labels_and_warns(synthetic_scene, tmp_path):
    gdf = gpd.read_file(synthetic_scene.labels)
    x0, y0 = synthetic_scene.transform * (40, 40)
    bowtie = Polygon([(x0, y0), (x0 + 20, y0 - 20), (x0 + 20, y0), (x0, y0 - 20)])
    gdf.loc[0, "geometry"] = bowtie
    gdf.loc[1, "geometry"] = None
    with pytest.warns(UserWarning, match="1 feature had invalid geometries, repaired with make_valid; "
                                         "1 null/empty geometry dropped"):
        info = export_training_data(synthetic_scene.raster, gdf, tmp_path / "chips", class_field="class_name",
                                    class_table=SYNTHETIC_CLASSES, tile_size=128, progress=False)
    assert info.n_chips > 0


# --------------------------------------------------------------------------- through predict
def write_like(path, data, template, descriptions=None, **profile):
    """A GeoTIFF of ``data`` with the georeference of the window (0, 0) of ``template``."""
    with rasterio.open(template) as src:
        prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                    dtype=data.dtype.name, crs=src.crs, transform=src.transform, **profile)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture(scope="module")
def scene_window(synthetic_scene):
    """64 x 64 px of the shared scene, inside its no-data border: (bands, H, W) uint8."""
    with rasterio.open(synthetic_scene.raster) as src:
        return src.read(window=Window(64, 64, 64, 64))


def test_predict_refuses_named_bands_in_another_order_and_takes_bands(trained_model, scene_window, synthetic_scene,
                                                                     tmp_path):
    names = trained_model.band_names
    assert names == ["red", "green", "blue", "nir"]
    path = write_like(tmp_path / "nbgr.tif", scene_window[::-1].copy(), synthetic_scene.raster, descriptions=names[::-1])
    with pytest.raises(InputMismatchError, match=r"trained on \['red', 'green', 'blue', 'nir'\]\. "
                                                 r"Pass bands=\[4, 3, 2, 1\]"):
        trained_model.predict(path)
    fixed = trained_model.predict(path, bands=[4, 3, 2, 1])
    np.testing.assert_array_equal(fixed.class_map, trained_model.predict(scene_window).class_map)


def test_predict_refuses_another_band_count(trained_model, scene_window, synthetic_scene, tmp_path):
    cut = write_like(tmp_path / "cut.tif", scene_window[:3].copy(), synthetic_scene.raster,
                     descriptions=["red", "green", "blue"])
    with pytest.raises(InputMismatchError, match="has 3 bands but the model takes 4"):
        trained_model.predict(cut)
    with pytest.raises(InputMismatchError, match=r"takes 4 bands .* has 3 bands \(bands first\) or 64"):
        trained_model.predict(scene_window[:3])
    with pytest.raises(ArgumentError, match="bands= selects bands of a file"):
        trained_model.predict(scene_window, bands=[1, 2, 3, 4])


def test_predict_does_not_guess_an_order_from_bands_with_similar_statistics(trained_model, scene_window):
    # the synthetic bands' means lie within a standard deviation of each other: reversed, nothing is said
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trained_model.predict(scene_window)
        trained_model.predict(scene_window[::-1].copy())
    assert our_warnings(record, "out of order") == [] and our_warnings(record, "training data") == []


def test_predict_warns_when_statistics_say_the_bands_are_reversed(trained_model, synthetic_scene, tmp_path):
    from geomax.models.predictor import PanopticPredictor

    means, stds = [40.0, 90.0, 140.0, 200.0], [10.0, 12.0, 15.0, 20.0]
    distinct = BandStats(trained_model.band_names, [1.0] * 4, [255.0] * 4, means, stds)
    predictor = PanopticPredictor(trained_model.model, trained_model.state.with_options(band_stats=distinct))
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(np.array(means)[:, None, None], np.array(stds)[:, None, None], (4, 64, 64)), 1, 255)
    image = image.round().astype(np.uint8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predictor.predict(image)
    assert our_warnings(record, "out of order") == []
    with pytest.warns(UserWarning, match=r"the image array: the bands may be out of order.*band index 3 .*looks like "
                                         r"'red'.*reorder the array's bands as \[3, 2, 1, 0\]"):
        predictor.predict(image[::-1].copy())
    unnamed = write_like(tmp_path / "unnamed.tif", image[::-1].copy(), synthetic_scene.raster)
    with pytest.warns(UserWarning, match=r"unnamed.tif': the bands may be out of order.*pass bands=\[4, 3, 2, 1\]"):
        predictor.predict(unnamed)


def test_predict_warns_once_about_values_unlike_the_training_data(trained_model, scene_window, synthetic_scene,
                                                                   tmp_path):
    signed = scene_window.astype(np.int16) * 8 - 600  # int16 with negatives into a uint8 model
    path = write_like(tmp_path / "signed.tif", signed, synthetic_scene.raster)
    for image, source in ((signed, "the image array"), (path, "signed.tif'")):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trained_model.predict(image)
        found = our_warnings(record, "do not look like the model's training data")
        assert len(found) == 1 and source in str(found[0].message)
        assert "negative values where training had none" in str(found[0].message)
        assert "'nir' spanned" in str(found[0].message) and "rescale" in str(found[0].message)


# --------------------------------------------------------------------------- one no-data rule on three paths
def test_a_nan_in_one_band_is_no_data_on_every_path(trained_model, scene_window, synthetic_scene, tmp_path):
    image = scene_window.astype(np.float32)  # whole numbers: like the uint8 training data
    image[1, 10:14, 20:30] = np.nan          # NaN in one band only
    image[3, 40, 5] = np.nan
    expected = np.ones(image.shape[1:], bool)
    expected[10:14, 20:30] = False
    expected[40, 5] = False
    raster = write_like(tmp_path / "nan.tif", image, synthetic_scene.raster, descriptions=trained_model.band_names)

    # predict(array) and predict(path)
    _, valid_array = trained_model.predictor.read_image(image)
    _, valid_path = trained_model.predictor.read_image(raster)
    np.testing.assert_array_equal(valid_array, expected)
    np.testing.assert_array_equal(valid_path, expected)
    assert (trained_model.predict(image).class_map[~expected] == 0).all()

    # export: a label covering the whole chip is cut out exactly where a band has no data
    with rasterio.open(raster) as src:
        cover = gpd.GeoDataFrame({"class_name": ["vegetation"]}, geometry=[box(*src.bounds)], crs=src.crs)
    export_training_data(raster, cover, tmp_path / "chips", class_table=SYNTHETIC_CLASSES, tile_size=64,
                         max_nodata_fraction=1.0, progress=False)
    with rasterio.open(tmp_path / "chips" / "labels" / "000000000.tif") as lab:
        np.testing.assert_array_equal(lab.read(1) > 0, expected)

    # predict_raster: its tile reader, and the output is void there
    with rasterio.open(raster) as src:
        _, valid_tile = TileReader(src, [1, 2, 3, 4]).read(Window(0, 0, 64, 64))
    np.testing.assert_array_equal(valid_tile, expected)
    res = trained_model.predict_raster(raster, tmp_path / "out.tif", tile_size=64, progress=False)
    with rasterio.open(res.out_raster) as out:
        assert (out.read(1)[~expected] == 0).all()


def test_read_image_no_data_value_in_one_band(synthetic_scene, scene_window, tmp_path):
    data = scene_window.copy()
    data[2, 5:8, 5:8] = 0  # the no-data value in one band only
    path = write_like(tmp_path / "nd.tif", data, synthetic_scene.raster, nodata=0)
    _, valid = read_image(path, ["red", "green", "blue", "nir"], [0, 1, 2, 3])
    assert not valid[5:8, 5:8].any() and valid.sum() == 64 * 64 - 9


# --------------------------------------------------------------------------- predict_raster samples the input too
def test_predict_raster_warns_about_reversed_bands_and_foreign_values(trained_model, scene_window, synthetic_scene,
                                                                      tmp_path):
    from geomax.models.predictor import PanopticPredictor
    from geomax.workflows.predict import predict_raster

    means, stds = [40.0, 90.0, 140.0, 200.0], [10.0, 12.0, 15.0, 20.0]
    distinct = BandStats(trained_model.band_names, [1.0] * 4, [255.0] * 4, means, stds)
    predictor = PanopticPredictor(trained_model.model, trained_model.state.with_options(band_stats=distinct))
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(np.array(means)[:, None, None], np.array(stds)[:, None, None], (4, 64, 64)), 1, 255)
    unnamed = write_like(tmp_path / "reversed.tif", image[::-1].round().astype(np.uint8), synthetic_scene.raster)
    with pytest.warns(UserWarning, match=r"reversed.tif': the bands may be out of order.*pass bands=\[4, 3, 2, 1\]"):
        predict_raster(predictor, unnamed, tmp_path / "p1.tif", progress=False)
    signed = write_like(tmp_path / "signed.tif", scene_window.astype(np.int16) * 8 - 600, synthetic_scene.raster)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict_raster(trained_model, signed, tmp_path / "p2.tif", progress=False)
    assert len(our_warnings(record, "do not look like the model's training data")) == 1
    with warnings.catch_warnings(record=True) as record:  # the training scene itself: no warning
        warnings.simplefilter("always")
        predict_raster(trained_model, synthetic_scene.raster, tmp_path / "p3.tif", progress=False)
    assert our_warnings(record, "do not look like the model's training data") == []
    assert our_warnings(record, "out of order") == []


def test_a_raster_cut_short_is_a_clear_error_and_leaves_nothing(trained_model, synthetic_scene, tmp_path):
    from geomax.errors import DataError
    from geomax.workflows.predict import predict_raster

    data = np.random.default_rng(0).integers(0, 255, (4, 512, 512), dtype=np.uint8)
    full = write_like(tmp_path / "full.tif", data, synthetic_scene.raster, compress="deflate", tiled=True,
                      blockxsize=128, blockysize=128)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match=r"Reading '.*cut.tif' failed.*corrupt or cut short"):
        predict_raster(trained_model, cut, tmp_path / "out.tif", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "full.tif"]


def test_a_full_disk_while_predicting_is_a_clear_error_and_leaves_nothing(trained_model, synthetic_scene, tmp_path,
                                                                          monkeypatch):
    import errno

    import geomax.inference.job as job
    from geomax.errors import OutputError
    from geomax.workflows.predict import predict_raster

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job, "write_cog", no_space)
    with pytest.raises(OutputError, match="No space left on device.*Free some space"):
        predict_raster(trained_model, synthetic_scene.raster, tmp_path / "out.tif", tmp_path / "out.gpkg",
                       progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_output_folder_is_refused_before_any_work(trained_model, synthetic_scene, tmp_path):
    from geomax.errors import ArgumentError
    from geomax.workflows.predict import predict_raster

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with pytest.raises(ArgumentError, match="Cannot write the output raster"):
            predict_raster(trained_model, synthetic_scene.raster, folder / "out.tif", progress=False)
    finally:
        folder.chmod(0o755)


def test_a_model_whose_weights_are_cut_short_is_a_model_error(trained_model_folder, tmp_path):
    import shutil

    from geomax import MaXDeepLab
    from geomax.errors import ModelError

    model = shutil.copytree(trained_model_folder, tmp_path / "model")
    pth = model / "tiny_model.pth"
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(ModelError, match="tiny_model"):
        MaXDeepLab.from_model(model)
