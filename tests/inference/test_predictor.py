"""The TilePredictor interface: defaults of its optional members, check_predictor, the oracle's options."""
from __future__ import annotations

import numpy as np
import pytest
from inference_scene import CLASSES
from rasterio.windows import Window

from geomax.errors import ArgumentError, ModelError
from geomax.inference.predictor import OracleTilePredictor, TilePredictor, check_predictor


class _Minimal(TilePredictor):
    """Only the required members."""

    n_bands = 3
    class_table = CLASSES

    def predict_tiles(self, tiles, valid, windows=None, **options):
        return []


class _Structural:
    """The required members without subclassing TilePredictor (no defaults for the optional ones)."""

    n_bands = 3
    class_table = CLASSES

    def predict_tiles(self, tiles, valid, windows=None, **options):
        return []


def test_a_subclass_gets_the_optional_members_defaults():
    p = check_predictor(_Minimal())
    assert (p.band_names, p.tile_multiple, p.chip_size) == (None, 1, None)
    assert isinstance(p, TilePredictor)


def test_predict_tiles_is_required():
    class NoMethod(TilePredictor):
        n_bands = 3
        class_table = CLASSES

    with pytest.raises(TypeError):
        NoMethod()


def test_check_predictor_says_what_is_missing():
    with pytest.raises(ModelError, match=r"not a per-tile predictor.*'n_bands', 'class_table', 'predict_tiles'"):
        check_predictor(object())
    with pytest.raises(ModelError, match=r"optional predictor members \['band_names', 'tile_multiple', 'chip_size', 'saved_tiling', 'band_stats'\]"
                                         r".*Subclass"):
        check_predictor(_Structural())


def test_check_predictor_refuses_a_model_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*geomax.workflows.predict_raster.*MaXDeepLab.from_model"):
        check_predictor(tmp_path / "model.emd", "the model")
    (tmp_path / "model.emd").write_text("{}")
    with pytest.raises(ModelError, match="is the model path") as err:
        check_predictor(str(tmp_path / "model.emd"), "the model")
    assert "does not exist" not in str(err.value)


def test_oracle_is_a_tile_predictor_and_refuses_unknown_options():
    cls = np.full((8, 8), 3, np.int32)
    oracle = check_predictor(OracleTilePredictor((cls, np.zeros_like(cls)), CLASSES, tile_multiple=4))
    assert oracle.tile_multiple == 4 and oracle.chip_size is None
    tiles, valid = np.zeros((1, 3, 8, 8), np.uint8), np.ones((1, 8, 8), bool)
    [res] = oracle.predict_tiles(tiles, valid, windows=[Window(0, 0, 8, 8)])
    assert (res.class_map == 3).all()
    with pytest.raises(ArgumentError, match="takes no options"):
        oracle.predict_tiles(tiles, valid, windows=[Window(0, 0, 8, 8)], class_threshold=0.5)
