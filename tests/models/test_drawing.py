"""Tests of geomax.models.drawing.results_figure: one row per chip, image / ground truth / prediction."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.inference.predictor import panoptic_from_maps
from geomax.models.drawing import results_figure


def _chip(n_buildings: int):
    building = SYNTHETIC_CLASSES.thing_values[0]
    stuff = SYNTHETIC_CLASSES.stuff_values[0]
    cls = np.full((32, 32), stuff, np.int32)
    inst = np.zeros((32, 32), np.int32)
    for k in range(n_buildings):
        cls[2 + 8 * k:7 + 8 * k, 4:12], inst[2 + 8 * k:7 + 8 * k, 4:12] = building, k + 1
    return cls, inst


def test_results_figure_has_one_row_per_chip_and_names_the_objects_found(tmp_path):
    images = [np.random.default_rng(i).uniform(0, 1, (32, 32, 3)) for i in range(2)]
    truths = [_chip(2), _chip(3)]
    predictions = [panoptic_from_maps(*_chip(n), np.ones((32, 32), np.float32), SYNTHETIC_CLASSES) for n in (1, 3)]
    fig = results_figure(images, truths, predictions, SYNTHETIC_CLASSES)
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in panels] == [
            "image", "ground truth", "prediction (1 objects)", "image", "ground truth", "prediction (3 objects)"]
        assert fig.legends, "the class legend is drawn"
        fig.savefig(tmp_path / "results.png")
        assert (tmp_path / "results.png").stat().st_size > 1000
    finally:
        plt.close(fig)
