"""geomax.workflows.predict: a model path and a loaded predictor give the same outputs; checks before loading."""
import numpy as np
import pytest
import rasterio

from geomax.errors import ArgumentError, DataError, ModelError, OutputExistsError
from geomax.workflows import predict as predict_workflow
from geomax.workflows.predict import load_predictor, predict_raster


def _bands(path):
    with rasterio.open(path) as src:
        return src.read()


def test_path_and_loaded_predictor_give_the_same_raster(trained_model_folder, synthetic_scene, tmp_path):
    options = dict(tile_size=64, overlap=16, progress=False, class_threshold=0.5, min_thing_area=None)
    by_path = predict_raster(trained_model_folder, synthetic_scene.raster, tmp_path / "path.tif",
                             tmp_path / "path.gpkg", **options)
    predictor = load_predictor(trained_model_folder)
    by_object = predict_raster(predictor, synthetic_scene.raster, tmp_path / "object.tif", **options)
    assert np.array_equal(_bands(tmp_path / "path.tif"), _bands(tmp_path / "object.tif"))
    assert by_path.tiling == by_object.tiling and by_path.tiling.tile_size == 64
    assert by_path.out_features is not None and by_path.out_features.exists()


def test_default_tiles_are_the_training_chip_size(trained_model_folder, synthetic_scene, tmp_path):
    result = predict_raster(trained_model_folder, synthetic_scene.raster, tmp_path / "out.tif", progress=False)
    chip = load_predictor(trained_model_folder).chip_size
    assert result.tiling.tile_size == chip and result.tiling.overlap == chip // 4


def test_outputs_and_input_are_checked_before_the_model_loads(monkeypatch, synthetic_scene, tmp_path):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(predict_workflow, "load_predictor", no_load)
    (tmp_path / "exists.tif").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="exists.tif"):
        predict_raster(tmp_path / "model", synthetic_scene.raster, tmp_path / "exists.tif")
    with pytest.raises(ArgumentError, match=".tif"):
        predict_raster(tmp_path / "model", synthetic_scene.raster, tmp_path / "out.png")
    with pytest.raises(DataError, match="missing.tif"):
        predict_raster(tmp_path / "model", tmp_path / "missing.tif", tmp_path / "out.tif")


def test_load_predictor_errors(trained_model_folder, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_predictor(tmp_path / "no_model")
    predictor = load_predictor(trained_model_folder, class_threshold=0.3)
    assert predictor.state.postprocess.class_threshold == 0.3
    assert load_predictor(predictor) is predictor
    with pytest.raises(ArgumentError, match="class_threshold"):
        load_predictor(predictor, class_threshold=0.3)
    with pytest.raises(ArgumentError, match="class_treshold"):
        load_predictor(trained_model_folder, class_treshold=0.3)
