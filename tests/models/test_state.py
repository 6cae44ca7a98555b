"""Tests of geomax.models.state.ModelState: the .emd written and read in one place."""
import json

import pytest

from geomax.config import PostprocessConfig
from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.errors import ArgumentError, ModelError
from geomax.models.state import ModelState


@pytest.fixture
def emd(trained_model_folder):
    return json.loads((trained_model_folder / "tiny_model.emd").read_text())


def test_state_of_a_saved_model_and_its_emd_round_trip(emd):
    state = ModelState.from_emd(emd)
    assert state.backbone == "max_deeplab_tiny" and state.n_bands == 4
    assert state.band_names == ["red", "green", "blue", "nir"] and state.extract_bands == [0, 1, 2, 3]
    assert state.chip_size == 64 and state.class_table.to_dict() == SYNTHETIC_CLASSES.to_dict()
    assert state.train is not None and state.history  # trained: the recipe and the epochs are kept
    again = state.to_emd(emd["ModelFile"])
    assert json.loads(json.dumps(again)) == emd
    assert ModelState.from_emd(again).to_emd(emd["ModelFile"]) == again


def test_with_options_changes_a_copy_only(emd):
    state = ModelState.from_emd(emd)
    other = state.with_options(postprocess=state.postprocess.replace(class_threshold=0.2))
    assert other.postprocess.class_threshold == 0.2
    assert state.postprocess == PostprocessConfig.from_dict(emd["ModelParameters"]["postprocess_config"])
    assert other.class_table is state.class_table


def test_incomplete_or_unknown_entries_are_errors(emd):
    with pytest.raises(ModelError, match="no ModelParameters"):
        ModelState.from_emd({k: v for k, v in emd.items() if k != "ModelParameters"}, source="m.emd")
    params = {k: v for k, v in emd["ModelParameters"].items() if k != "band_stats"}
    with pytest.raises(ModelError, match="band_stats"):
        ModelState.from_emd({**emd, "ModelParameters": params}, source="m.emd")
    post = {**emd["ModelParameters"]["postprocess_config"], "class_treshold": 0.5}
    with pytest.raises(ArgumentError, match="class_treshold"):
        ModelState.from_emd({**emd, "ModelParameters": {**emd["ModelParameters"], "postprocess_config": post}})
