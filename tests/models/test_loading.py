"""Tests of geomax.models.loading and the light PanopticPredictor (inference without a Learner)."""
import numpy as np
import pytest
import torch

from geomax.errors import InputMismatchError, ModelError
from geomax.models.loading import load_model_state, load_predictor


def test_loaded_predictor_predicts_what_the_trained_model_predicts(trained_model, trained_model_folder,
                                                                   synthetic_export):
    chip = sorted((synthetic_export.out_folder / "images").glob("*.tif"))[5]
    expected = trained_model.predict(chip, class_threshold=0.1)
    for source in (trained_model_folder, trained_model_folder / "tiny_model.dlpk"):
        predictor = load_predictor(source, class_threshold=0.1)
        assert predictor.n_bands == 4 and predictor.chip_size == 64 and predictor.tile_multiple == 16
        got = predictor.predict(chip)
        np.testing.assert_array_equal(got.class_map, expected.class_map)
        np.testing.assert_array_equal(got.instance_map, expected.instance_map)


def test_predict_tiles_crops_to_the_tile_and_voids_no_data(trained_model_folder):
    predictor = load_predictor(trained_model_folder)
    rng = np.random.default_rng(0)
    tiles = rng.integers(1, 255, (2, 4, 40, 50)).astype(np.uint8)
    valid = np.ones((2, 40, 50), bool)
    valid[1, :10] = False
    results = predictor.predict_tiles(tiles, valid, class_threshold=0.0, mask_threshold=0.0)
    assert [r.class_map.shape for r in results] == [(40, 50), (40, 50)]
    assert (results[1].class_map[:10] == 0).all() and (results[1].class_map[10:] > 0).any()
    with pytest.raises(InputMismatchError, match="Expected tiles of shape"):
        predictor.predict_tiles(tiles[:, :3])


def test_load_model_state_returns_the_weights(trained_model, trained_model_folder, tmp_path):
    state, state_dict = load_model_state(trained_model_folder)
    assert state.backbone == "max_deeplab_tiny"
    live = trained_model.model.state_dict()
    assert set(state_dict) == set(live)
    assert all(torch.equal(state_dict[k].cpu(), live[k].cpu()) for k in live)
    with pytest.raises(ModelError):
        load_model_state(tmp_path / "nothing.emd")
