"""Tests of geomax.report: scene overview arrays and the demo's HTML report."""
import matplotlib

matplotlib.use("Agg")

import geopandas as gpd
import numpy as np
import rasterio

from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
from geomax.evaluate import evaluate_raster
from geomax.report import plot_losses, scene_overview, write_demo_report


def _perfect_prediction(scene, path):
    cm, im = rasterize_labels(gpd.read_file(scene.labels), CLASS_FIELD, SYNTHETIC_CLASSES, scene.transform,
                              (scene.size, scene.size))
    with rasterio.open(path, "w", driver="GTiff", width=scene.size, height=scene.size, count=3, dtype="int32",
                       crs=scene.crs, transform=scene.transform) as dst:
        dst.write(np.stack([cm, im, np.full_like(cm, 100)]).astype(np.int32))
    return path


def test_scene_overview_downsamples_image_prediction_and_labels(synthetic_scene, tmp_path):
    pred = _perfect_prediction(synthetic_scene, tmp_path / "pred.tif")
    ov = scene_overview(synthetic_scene.raster, pred, synthetic_scene.labels, SYNTHETIC_CLASSES, max_size=64)
    assert ov["scale"] == synthetic_scene.size / 64
    assert ov["rgb"].shape == (64, 64, 3) and 0 <= ov["rgb"].min() and ov["rgb"].max() <= 1
    assert ov["valid"].shape == (64, 64) and not ov["valid"][0, 0] and ov["valid"][32, 32]
    for key in ("pred_class", "pred_instance", "gt_class", "gt_instance"):
        assert ov[key].shape == (64, 64) and ov[key].dtype == np.int32
    assert (ov["gt_class"][~ov["valid"]] == 0).all()
    # a perfect prediction looks like the labels at this scale too
    inside = ov["valid"]
    assert (ov["pred_class"][inside] == ov["gt_class"][inside]).mean() > 0.8
    assert set(np.unique(ov["pred_class"])) <= {0, *SYNTHETIC_CLASSES.values}


def test_plot_losses_draws_batches_epochs_and_pq():
    history = [{"train_loss": 2.0, "valid_loss": 2.5, "panoptic_quality": 0.1},
               {"train_loss": 1.0, "valid_loss": float("nan"), "panoptic_quality": 0.4}]
    fig = plot_losses(history, batch_losses=[3.0, 2.0, 1.5, 1.0], epoch_ends=[2, 4])
    ax, ax2 = fig.axes
    assert [line.get_label() for line in ax.lines][:3] == ["train loss (per batch, smoothed)",
                                                            "train_loss (per epoch)", "valid_loss (per epoch)"]
    assert list(ax.lines[1].get_xdata()) == [2.0, 4.0]
    assert list(ax2.lines[0].get_ydata()) == [0.1, 0.4]


def test_plot_losses_joins_the_validated_epochs_of_a_budget_run():
    # a time budget validates on a schedule: the epochs in between carry None
    history = [{"train_loss": 3.0, "valid_loss": 2.9, "panoptic_quality": 0.0},
               {"train_loss": 2.5, "valid_loss": None, "panoptic_quality": None},
               {"train_loss": 2.0, "valid_loss": 1.9, "panoptic_quality": 0.3}]
    fig = plot_losses(history, batch_losses=[3.0] * 6, epoch_ends=[2, 4, 6])
    ax, ax2 = fig.axes
    assert list(ax.lines[1].get_xdata()) == [2.0, 4.0, 6.0]  # the train loss of every epoch
    assert list(ax.lines[2].get_xdata()) == [2.0, 6.0] and list(ax.lines[2].get_ydata()) == [2.9, 1.9]
    assert list(ax2.lines[0].get_xdata()) == [2.0, 6.0] and list(ax2.lines[0].get_ydata()) == [0.0, 0.3]


def test_write_demo_report_writes_html_and_pictures(synthetic_scene, tmp_path):
    pred = _perfect_prediction(synthetic_scene, tmp_path / "pred.tif")
    metrics = evaluate_raster(pred, synthetic_scene.labels, class_table=SYNTHETIC_CLASSES, progress=False)
    out = write_demo_report(tmp_path / "report" / "report.html", metrics, SYNTHETIC_CLASSES, synthetic_scene.raster,
                            pred, synthetic_scene.labels, history=[{"train_loss": 1.0, "valid_loss": 1.2}],
                            batch_losses=[1.5, 1.0], timings={"train": 75.0, "predict": 3.0},
                            settings={"backbone": "max_deeplab_tiny"}, files={"prediction": pred},
                            overview_size=64)
    text = out.read_text()
    assert "PQ 100.0" in text and "max_deeplab_tiny" in text and "1 min 15.0 s" in text and "building" in text
    assert text.count("<img") == 2  # the loss curve and the scene (no detail crop of a small scene)
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html", "report_loss.png", "report_scene.png"]
