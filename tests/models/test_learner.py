"""Tests for geomax.models.learner.MaXDeepLab (CPU, tiny variant, tiny synthetic data)."""
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.data.dataset import panoptic_from_target
from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene
from geomax.errors import DataError, InputMismatchError, ModelError
from geomax.metrics import PanopticEvaluator

OVERFIT_EPOCHS = 800  # one batch per epoch


@pytest.fixture
def chips(synthetic_export):
    """The shared export folder (tests/conftest.py)."""
    return synthetic_export.out_folder


@pytest.fixture
def data(synthetic_data):
    return synthetic_data


@pytest.fixture
def trained(trained_model):
    return trained_model


def test_fit_lowers_the_loss(trained):
    losses = [float(x) for x in trained.learn.recorder.losses]
    assert len(losses) >= 6
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert all(np.isfinite(losses))
    # the PQ metric column is recorded every epoch
    assert "panoptic_quality" in trained.learn.recorder.metric_names


def test_num_slots_grow_to_the_segments_of_a_chip(data):
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    assert model.model.config["num_slots"] >= data.n_masks


def test_compute_metrics_agrees_with_the_evaluator_by_hand(trained, data):
    metrics = trained.compute_metrics(class_threshold=0.2)
    evaluator = PanopticEvaluator(data.class_table)
    for xb, yb in data.valid:
        for i in range(len(xb)):
            raw = xb[i].numpy()  # already normalised: predict through the network directly
            pred = trained.predictor.forward(xb[i:i + 1])
            res = trained.predictor.postprocessor(class_threshold=0.2)(pred, out_size=raw.shape[-2:],
                                                              valid=yb["valid"][i:i + 1])[0]
            gt_class, gt_instance = panoptic_from_target(yb, i, data.class_table)
            evaluator.update(res.class_map, res.instance_map, gt_class, gt_instance)
    by_hand = evaluator.compute()
    for key in ("all", "things", "stuff"):
        assert metrics[key]["pq"] == pytest.approx(by_hand[key]["pq"])
    assert "mask_ap" in metrics and "per_class" in metrics


def test_save_from_model_predict_identical(trained, data, chips, trained_model_folder):
    folder = trained_model_folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".geomax-output.json", "model_metrics.html", "tiny_model.dlpk", "tiny_model.emd", "tiny_model.pth"]
    with zipfile.ZipFile(folder / "tiny_model.dlpk") as zf:
        assert sorted(zf.namelist()) == ["model_metrics.html", "tiny_model.emd", "tiny_model.pth"]
    emd = json.loads((folder / "tiny_model.emd").read_text())
    assert emd["ModelType"] == "PanopticSegmenter" and emd["ModelName"] == "MaXDeepLab"
    assert [c["Name"] for c in emd["Panoptic_Segmentation_Instance_Classes"]] == SYNTHETIC_CLASSES.thing_names
    assert emd["ModelParameters"]["backbone"] == "max_deeplab_tiny"
    assert "<img" in (folder / "model_metrics.html").read_text()

    chip = sorted((chips / "images").glob("*.tif"))[0]
    expected = trained.predict(chip, class_threshold=0.1)
    for source, kw in ((folder / "tiny_model.emd", {}), (folder / "tiny_model.dlpk", {}), (folder, {"data": data})):
        loaded = MaXDeepLab.from_model(source, **kw)
        got = loaded.predict(chip, class_threshold=0.1)
        np.testing.assert_array_equal(got.class_map, expected.class_map)
        np.testing.assert_array_equal(got.instance_map, expected.instance_map)
        np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-6)


def test_predict_any_size_array(trained):
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, size=(4, 70, 90), dtype=np.uint8)
    result = trained.predict(image)
    assert result.class_map.shape == (70, 90) and result.instance_map.shape == (70, 90)
    assert set(np.unique(result.class_map)) <= {0, *SYNTHETIC_CLASSES.values}
    # channels-last input is accepted too
    assert trained.predict(np.moveaxis(image, 0, -1)).class_map.shape == (70, 90)


def test_predict_rejects_band_mismatch(trained):
    with pytest.raises(InputMismatchError, match="4 bands"):
        trained.predict(np.zeros((3, 64, 64), dtype=np.uint8))
    with pytest.raises(DataError, match="does not exist"):
        trained.predict("no_such_chip.tif")


def test_data_of_another_dataset_type_is_rejected(data):
    class NotPanoptic:
        dataset_type = "Classified_Tiles"

    with pytest.raises(DataError, match="Panoptic_Segmentation"):
        MaXDeepLab(NotPanoptic())


def test_from_model_band_mismatch_and_corrupt_emd(trained_model_folder, tmp_path, chips):
    folder = shutil.copytree(trained_model_folder, tmp_path / "m")  # a copy: the emd is corrupted below
    data3 = prepare_data(chips, batch_size=2, bands=[1, 2, 3], transforms=False)
    with pytest.raises(InputMismatchError, match="bands"):
        MaXDeepLab.from_model(folder / "tiny_model.emd", data=data3)
    (folder / "tiny_model.emd").write_text("{ not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        MaXDeepLab.from_model(folder / "tiny_model.emd")
    (tmp_path / "bad.dlpk").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a valid .dlpk"):
        MaXDeepLab.from_model(tmp_path / "bad.dlpk")
    with pytest.raises(ModelError, match="does not exist"):
        MaXDeepLab.from_model(tmp_path / "missing.emd")


def test_freeze_unfreeze_param_groups(data):
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    model.learn.create_opt()
    model.freeze()
    # fastai keeps batch-norm parameters trainable in frozen groups (train_bn); the convolutions freeze
    backbone_convs = [p for p in model.model.backbone_parameters() if p.ndim == 4]
    assert backbone_convs and not any(p.requires_grad for p in backbone_convs)
    assert any(p.requires_grad for p in model.model.transformer_parameters())
    model.unfreeze()
    assert all(p.requires_grad for p in model.model.parameters())


def test_resume_continues_from_last_epoch(data, tmp_path):
    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    model.learn.path = tmp_path
    model.fit(1, lr=1e-3)
    assert model.checkpoint_folder.parent == (tmp_path / "models" / "checkpoints").resolve()
    meta = json.loads((model.checkpoint_folder / "geomax_last.json").read_text())
    assert meta["epochs_done"] == 1 and meta["fingerprint"] == model.state.fingerprint
    model.fit(2, lr=1e-3, resume=True)
    # only the remaining epoch trained: one epoch's worth of batch losses
    assert len(model.learn.recorder.losses) == len(data.train)
    assert json.loads((model.checkpoint_folder / "geomax_last.json").read_text())["epochs_done"] == 2
    assert len(model.history) == 2  # the interrupted run's epoch and the resumed one


def test_band_subset_model_reads_its_bands_from_a_full_image(chips):
    import rasterio

    data3 = prepare_data(chips, batch_size=2, bands=[3, 0, 1], transforms=False)
    model = MaXDeepLab(data3, backbone="max_deeplab_tiny")
    assert model.extract_bands == [3, 0, 1]
    chip = sorted((chips / "images").glob("*.tif"))[0]
    with rasterio.open(chip) as src:
        full = src.read()
        valid = src.dataset_mask() > 0  # the shared scene has a no-data border: void when read from the file
    from_path = model.predict(chip, class_threshold=0.0, mask_threshold=0.0)
    from_array = model.predict(full[[3, 0, 1]], class_threshold=0.0, mask_threshold=0.0)
    np.testing.assert_array_equal(from_path.class_map[valid], from_array.class_map[valid])
    assert (from_path.class_map[~valid] == 0).all()


def _overfit(small):
    """Train the tiny variant on a handful of chips for :data:`OVERFIT_EPOCHS`; its metrics on those chips."""
    torch.manual_seed(0)
    model = MaXDeepLab(small, backbone="max_deeplab_tiny")
    with model.learn.no_bar(), model.learn.no_logging():
        model.fit(OVERFIT_EPOCHS, lr=3e-3, checkpoint=False, monitor="train_loss")
    return model.compute_metrics(dl=small.train.new(shuffle=False, drop_last=False))


def test_overfitting_a_handful_of_chips_reaches_pq_090(tmp_path):
    """Four 64 px chips (buildings in touching rows, vehicles of 4x8 px on a road): the
    learner must reproduce them, PQ >= 0.9 on the same chips (issue: the learner)."""
    make_scene(tmp_path / "scene.tif", tmp_path / "labels.gpkg", size=128, seed=3)
    export_training_data(tmp_path / "scene.tif", tmp_path / "labels.gpkg", tmp_path / "chips",
                         class_table=SYNTHETIC_CLASSES, tile_size=64, progress=False)
    small = prepare_data(tmp_path / "chips", batch_size=4, val_split_pct=0.0, transforms=False)
    assert len(small.train_ds) == 4
    metrics = _overfit(small)
    assert metrics["all"]["pq"] >= 0.9, metrics["all"]
    assert metrics["things"]["pq"] >= 0.8, metrics["things"]


def test_footprints_only_labels_train_with_the_background_class_to_pq_things_080(tmp_path):
    """Only the buildings labelled, nothing drawn in between (a footprint layer): the export gives the
    unlabelled valid pixels the stuff class ``background``, and the learner trained on that export
    finds the buildings again, PQ_things >= 0.8 on the same chips. Left void instead, the same pixels
    carry no class at all (the void option)."""
    import geopandas as gpd

    from geomax.data.synthetic import CLASS_FIELD

    make_scene(tmp_path / "scene.tif", tmp_path / "labels.gpkg", size=128, seed=3)
    gdf = gpd.read_file(tmp_path / "labels.gpkg")
    gdf[gdf[CLASS_FIELD] == "building"].to_file(tmp_path / "footprints.gpkg")
    info = export_training_data(tmp_path / "scene.tif", tmp_path / "footprints.gpkg", tmp_path / "chips",
                                class_field=CLASS_FIELD, thing_classes=["building"], tile_size=64, progress=False)
    assert info.class_table.names == ["building", "background"] and info.background_value == 2
    small = prepare_data(tmp_path / "chips", batch_size=4, val_split_pct=0.0, transforms=False)
    assert len(small.train_ds) == 4 and small.class_table.names == ["building", "background"]
    sample = small.train_ds.load_sample(0)
    assert (sample.class_index[sample.valid] > 0).all()  # every valid pixel is a building or background
    metrics = _overfit(small)
    assert metrics["things"]["pq"] >= 0.8, metrics["things"]
    assert metrics["per_class"]["background"]["pq"] >= 0.8, metrics["per_class"]
    # the void option: the same footprints leave the unlabelled pixels void (ignored by every loss term)
    export_training_data(tmp_path / "scene.tif", tmp_path / "footprints.gpkg", tmp_path / "void_chips",
                         class_field=CLASS_FIELD, thing_classes=["building"], tile_size=64, background="void",
                         progress=False)
    void = prepare_data(tmp_path / "void_chips", batch_size=4, val_split_pct=0.0, transforms=False, background="void")
    assert void.class_table.names == ["building"]
    v = void.train_ds.load_sample(0)
    assert (v.class_index[v.valid] == 0).any()


def test_a_model_of_a_band_subset_export_reads_the_same_source_bands_on_every_path(synthetic_scene, tmp_path):
    """``bands=[2, 3]`` of a 4-band raster: the export records ExtractBands [1, 2] (0-based into the
    source); predict and predict_raster of the source raster both read source bands 2 and 3 (1-based),
    as a 2-band raster of those bands gives."""
    import rasterio

    from geomax.data.esri_layout import read_export

    chips = tmp_path / "chips"
    export_training_data(synthetic_scene.raster, synthetic_scene.labels, chips, class_table=SYNTHETIC_CLASSES,
                         tile_size=64, bands=[2, 3], progress=False)
    assert read_export(chips).extract_bands == [1, 2]
    data = prepare_data(chips, batch_size=2, transforms=False)
    assert data.extract_bands == [1, 2]
    assert prepare_data(chips, batch_size=2, bands=[1], transforms=False).extract_bands == [2]
    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    assert model.extract_bands == [1, 2]
    with rasterio.open(synthetic_scene.raster) as src:
        full, profile = src.read(), src.profile
        valid = src.dataset_mask() > 0
    two = tmp_path / "bands_2_3.tif"
    with rasterio.open(two, "w", **{**profile, "count": 2}) as dst:
        dst.write(full[[1, 2]])
    thresholds = dict(class_threshold=0.0, mask_threshold=0.0)
    from_source = model.predict(synthetic_scene.raster, **thresholds)
    from_two = model.predict(two, **thresholds)
    from_array = model.predict(full[[1, 2]], **thresholds)
    np.testing.assert_array_equal(from_source.confidence, from_two.confidence)
    np.testing.assert_allclose(from_source.confidence[valid], from_array.confidence[valid], atol=1e-6)
    # what each reader reads: source bands 2 and 3 (1-based), not 1 and 2
    array, _ = model.predictor.read_image(synthetic_scene.raster, None)
    np.testing.assert_array_equal(array, full[[1, 2]])
    from geomax.inference.job import check_bands

    with rasterio.open(synthetic_scene.raster) as src:
        assert check_bands(src, None, model.predictor, synthetic_scene.raster) == [2, 3]
    model.predict_raster(synthetic_scene.raster, tmp_path / "from_source.tif", **thresholds)
    model.predict_raster(two, tmp_path / "from_two.tif", **thresholds)
    with rasterio.open(tmp_path / "from_source.tif") as a, rasterio.open(tmp_path / "from_two.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())  # class, instance and confidence bands


def test_mixed_precision_follows_the_setting_in_fit_and_in_prediction(data, monkeypatch):
    from fastai.callback.channelslast import ChannelsLast

    from geomax.config import TrainConfig
    from geomax.models import precision
    from geomax.models.callbacks import Autocast

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    assert model.chip_size < TrainConfig.CPU_BF16_MIN_CHIP
    model.fit(1, lr=1e-3, checkpoint=False, warn_empty=False)  # "auto" trains small chips in float32
    assert not any(isinstance(cb, Autocast) for cb in model.learn.cbs)
    model.fit(1, lr=1e-3, checkpoint=False, warn_empty=False, mixed_precision="bf16")
    assert sum(isinstance(cb, Autocast) for cb in model.learn.cbs) == 1
    model.fit(1, lr=1e-3, checkpoint=False, warn_empty=False, mixed_precision="off")
    assert not any(isinstance(cb, Autocast) for cb in model.learn.cbs)
    assert sum(isinstance(cb, ChannelsLast) for cb in model.learn.cbs) == 1  # float32 trains channels-last too
    xb, _ = next(iter(data.valid))
    model.predictor.mixed_precision = "off"
    net = model.model.eval()
    with torch.no_grad():
        exact = net(xb)
    off = model.predictor.forward(xb)
    for key, value in exact.items():
        torch.testing.assert_close(off[key], value.float())
    model.predictor.mixed_precision = "auto"
    auto = model.predictor.forward(xb)
    assert all(v.dtype == torch.float32 for v in auto.values())
    assert any(not torch.equal(auto[k], off[k]) for k in off)  # bfloat16 ran


def test_the_optimiser_is_fused_adamw_with_fastais_adam_settings(data):
    from fastai.optimizer import OptimWrapper

    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    before = [p.detach().clone() for p in model.model.parameters()]
    model.fit(1, lr=1e-3, checkpoint=False, warn_empty=False)
    opt = model.learn.opt
    assert isinstance(opt, OptimWrapper) and isinstance(opt.opt, torch.optim.AdamW)
    groups = opt.opt.param_groups
    assert len(groups) == 2  # backbone / the rest, as the splitter gives them
    for g in groups:
        assert g["fused"] and g["eps"] == 1e-5 and g["weight_decay"] == 0.01 and g["betas"][1] == 0.99
        # fit_one_cycle schedules fastai's "mom" on AdamW's first beta (0.95 -> 0.85 -> 0.95)
        assert 0.85 <= g["betas"][0] <= 0.95
    assert any(not torch.equal(a, b) for a, b in zip(before, model.model.parameters()))


def test_the_fused_optimiser_steps_as_the_multi_tensor_one_and_falls_back_without_it(monkeypatch):
    from geomax.models.learner import adamw

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(7, 3), (5,), (2, 4, 3, 3)]]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused, foreach = adamw([params], lr=1e-2), adamw([twins], lr=1e-2, foreach=True)
    assert fused.opt.param_groups[0]["fused"] and not foreach.opt.param_groups[0]["fused"]
    for _ in range(5):
        for p, q in zip(params, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        foreach.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

    real = torch.optim.AdamW.__init__

    def no_fused(self, params, *args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        real(self, params, *args, fused=fused, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "__init__", no_fused)
    fallback = adamw([[torch.nn.Parameter(torch.randn(3))]], lr=1e-2)
    assert fallback.opt.param_groups[0]["foreach"] and not fallback.opt.param_groups[0]["fused"]
