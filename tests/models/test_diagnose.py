"""Tests of geomax.models.diagnose and of the 'never silently empty' messages of fit_model and predict_raster."""
import warnings

import geopandas as gpd
import pytest

from geomax import prepare_data
from geomax.data.export import export_training_data
from geomax.data.synthetic import CLASS_FIELD
from geomax.models.diagnose import MIN_STEPS, empty_training_causes, label_shares, warn_if_empty

EMPTY = {"all": {"pq": 0.0}, "per_class": {"building": {"tp": 0, "fp": 0, "fn": 12}}}


@pytest.fixture(scope="module")
def footprints_void(synthetic_scene, tmp_path_factory):
    """The shared scene's buildings only, exported with unlabelled pixels left void."""
    root = tmp_path_factory.mktemp("footprints")
    gdf = gpd.read_file(synthetic_scene.labels)
    gdf[gdf[CLASS_FIELD] == "building"].to_file(root / "buildings.gpkg")
    export_training_data(synthetic_scene.raster, root / "buildings.gpkg", root / "chips", class_field=CLASS_FIELD,
                         thing_classes=["building"], tile_size=64, background="void", progress=False)
    return prepare_data(root / "chips", batch_size=4, val_split_pct=0.25, transforms=False, background="void")


def test_label_shares_of_the_synthetic_data(synthetic_data):
    labelled, shares = label_shares(synthetic_data.train_ds)
    assert 0.9 < labelled <= 1.0  # the synthetic labels cover the scene
    assert shares and abs(sum(shares.values()) - 1.0) < 1e-9


def test_causes_name_few_steps_void_labels_and_an_empty_prediction(footprints_void):
    causes = empty_training_causes(EMPTY, 40, 4, footprints_void.train_ds, class_threshold=0.7)
    text = " | ".join(causes)
    assert "only 40 training steps" in text and "train longer" in text
    assert "carry a label and the rest is void" in text and "--background class" in text
    assert "predicted nothing" in text and "--class-threshold 0.5" in text
    assert not any("training steps" in c for c in empty_training_causes(EMPTY, MIN_STEPS, 4,
                                                                          footprints_void.train_ds))


def test_warn_if_empty_speaks_only_when_the_result_is_empty(synthetic_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = {"all": {"pq": 0.4}, "per_class": {"building": {"tp": 3, "fp": 1, "fn": 2}}}
        assert warn_if_empty(good, 10, 4, synthetic_data.train_ds) is None
        assert warn_if_empty({}, 10, 4, synthetic_data.train_ds) is None
    with pytest.warns(UserWarning, match="The model predicted nothing.*Likely causes: only 10 training steps"):
        warn_if_empty(EMPTY, 10, 4, synthetic_data.train_ds)
    assert "validation PQ of 0" in warn_if_empty({"all": {"pq": 0.0}}, 10, 4, synthetic_data.train_ds, emit=False)


def test_fit_model_logs_the_diagnosis_of_an_empty_training(synthetic_data, monkeypatch):
    from geomax import MaXDeepLab
    from geomax.workflows.train import fit_model, resolve_train_config

    model = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    monkeypatch.setattr(model, "compute_metrics", lambda **kw: {**EMPTY, "things": {"pq": 0.0},
                                                                  "stuff": {"pq": 0.0}})
    lines = []
    fit_model(model, resolve_train_config(epochs=1, checkpoint=False, early_stopping=False), log=lines.append)
    assert any(line.startswith("WARNING: The model predicted nothing") and "training steps" in line for line in lines)


def test_predict_raster_says_when_the_whole_raster_is_void(trained_model, synthetic_scene, tmp_path):
    from geomax.workflows.predict import predict_raster

    with pytest.warns(UserWarning, match="is void everywhere"):
        predict_raster(trained_model, synthetic_scene.raster, tmp_path / "void.tif", class_threshold=1.0,
                       progress=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict_raster(trained_model, synthetic_scene.raster, tmp_path / "some.tif", class_threshold=0.0,
                       mask_threshold=0.0, progress=False)
    assert not [w for w in record if "void everywhere" in str(w.message)]
