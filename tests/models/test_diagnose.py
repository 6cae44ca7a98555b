"""Tests of geomax.models.diagnose and of the 'never silently empty' messages of fit_model and predict_raster."""
import warnings

import geopandas as gpd
import pytest

from geomax import prepare_data
from geomax.data.export import export_training_data
from geomax.data.synthetic import CLASS_FIELD
from geomax.models.diagnose import (
    MIN_STEPS,
    WEAK_PQ_THINGS,
    empty_training_causes,
    is_weak,
    label_shares,
    thing_instances,
    warn_if_empty,
    warn_if_weak,
)

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


def weak_metrics(pq_things, n_things=12):
    return {"all": {"pq": 0.5}, "things": {"pq": pq_things, "rq": 2 * pq_things, "n": n_things},
            "stuff": {"pq": 0.9}, "per_class": {"building": {"tp": 3, "fp": 9, "fn": 9}}}


def test_thing_instances_counts_the_objects_of_the_training_chips(synthetic_data):
    ds = synthetic_data.train_ds
    exact = sum(len({int(i) for i in ds.load_sample(k).instance.ravel() if i > 0}) for k in range(ds.n_chips))
    assert exact > 0
    assert thing_instances(ds, n_chips=ds.n_chips) == exact
    assert 0.5 * exact <= thing_instances(ds, n_chips=2) <= 2 * exact  # estimated from two chips


def test_warn_if_weak_speaks_when_the_things_are_mostly_missed_and_not_otherwise(synthetic_data):
    ds = synthetic_data.train_ds
    assert is_weak(weak_metrics(0.1)) and is_weak(weak_metrics(WEAK_PQ_THINGS - 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for quiet in (weak_metrics(0.6), weak_metrics(0.1, n_things=0), weak_metrics(float("nan"), n_things=0),
                      EMPTY, {}):
            assert not is_weak(quiet)
            assert warn_if_weak(quiet, 100, 4, ds) is None
    with pytest.warns(UserWarning, match=r"finds few of the objects yet: validation PQ of the things 10\.0, "
                                         r"recognition quality 20\.0.*Likely causes: only 100 training steps"):
        warn_if_weak(weak_metrics(0.1), 100, 4, ds)
    message = warn_if_weak(weak_metrics(0.1), 100_000, 4, ds, emit=False)
    assert "training steps" not in message  # enough steps: not named
    assert f"about {thing_instances(ds)} labelled objects" in message and "--pretrained" in message


def test_fit_model_logs_the_diagnosis_of_a_weak_training(synthetic_data, monkeypatch):
    from geomax import MaXDeepLab
    from geomax.workflows.train import fit_model, resolve_train_config

    model = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    train = resolve_train_config(epochs=1, checkpoint=False, early_stopping=False)
    for pq_things, says in ((0.1, True), (0.7, False)):
        monkeypatch.setattr(model, "compute_metrics", lambda **kw: weak_metrics(pq_things))
        lines = []
        fit_model(model, train, log=lines.append)
        assert any(line.startswith("WARNING: The model finds few of the objects") for line in lines) is says


def test_fit_warns_when_the_last_epoch_finds_few_things(synthetic_data, monkeypatch):
    from geomax import MaXDeepLab
    from geomax.models import learner

    model = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    for row, says in (({"panoptic_quality": 0.4, "pq_things": 0.1}, True),
                      ({"panoptic_quality": 0.8, "pq_things": 0.7}, False),
                      ({"panoptic_quality": 0.8, "pq_things": float("nan")}, False)):
        monkeypatch.setattr(learner, "history_rows", lambda recorder, row=row: [row])
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model.fit(1, checkpoint=False)
        assert any("finds few of the objects" in str(w.message) for w in record) is says


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
