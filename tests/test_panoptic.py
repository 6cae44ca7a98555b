"""Tests of geomax.panoptic.PanopticResult."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.panoptic import SEGMENT_COLUMNS, PanopticResult


def _result():
    class_map = np.array([[3, 3, 5], [3, 5, 5]], np.int32)
    instance_map = np.array([[0, 0, 1], [0, 1, 1]], np.int32)
    segment_map = np.array([[1, 1, 2], [1, 2, 2]], np.int32)
    segments = pd.DataFrame([[1, 3, "vegetation", False, 0.9, 3], [2, 5, "building", True, 0.8, 3]],
                            columns=SEGMENT_COLUMNS)
    return PanopticResult(class_map, instance_map, segment_map, np.full((2, 3), 0.5, np.float32), segments)


def test_shape_and_number_of_things():
    res = _result()
    assert res.shape == (2, 3)
    assert res.n_things == 1
    empty = PanopticResult(res.class_map, res.instance_map, res.segment_map, res.confidence,
                           pd.DataFrame(columns=SEGMENT_COLUMNS))
    assert empty.n_things == 0


def test_show_draws_the_maps(tmp_path):
    ax = _result().show(class_table=SYNTHETIC_CLASSES, title="r")
    assert ax.get_title() == "r" and ax.images
    ax.figure.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
