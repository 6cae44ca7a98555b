"""geomax.workflows.evaluate: a panoptic raster or a model run first, and the metrics file."""
import json

import pytest

from geomax.errors import ArgumentError, DataError, OutputExistsError
from geomax.workflows.evaluate import evaluate
from geomax.workflows.predict import predict_raster


def test_a_model_run_first_equals_evaluating_its_raster(trained_model_folder, synthetic_scene, tmp_path):
    predict_raster(trained_model_folder, synthetic_scene.raster, tmp_path / "pred.tif", progress=False)
    of_raster = evaluate(tmp_path / "pred.tif", synthetic_scene.labels, image=synthetic_scene.raster,
                         progress=False)
    of_model = evaluate(synthetic_scene.raster, synthetic_scene.labels, model=trained_model_folder,
                        out_json=tmp_path / "pq.json", progress=False)
    assert of_model["all"] == of_raster["all"] and of_model["n_pixels"] == of_raster["n_pixels"]
    assert json.loads((tmp_path / "pq.json").read_text())["all"] == json.loads(json.dumps(of_model["all"]))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_bad_requests_are_refused_before_any_work(synthetic_scene, tmp_path):
    (tmp_path / "pq.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="pq.json"):
        evaluate(tmp_path / "missing.tif", synthetic_scene.labels, out_json=tmp_path / "pq.json")
    with pytest.raises(DataError, match="Panoptic raster '.*missing.tif' does not exist"):
        evaluate(tmp_path / "missing.tif", synthetic_scene.labels)
    with pytest.raises(DataError, match="Reference labels"):
        evaluate(synthetic_scene.raster, tmp_path / "missing.gpkg", model=tmp_path / "model")
    with pytest.raises(ArgumentError, match="image"):
        evaluate(synthetic_scene.raster, synthetic_scene.labels, model=tmp_path / "model", image=synthetic_scene.raster)
    assert (tmp_path / "pq.json").read_text() == "{}"
