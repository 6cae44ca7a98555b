"""Typed configurations: one default each, unknown keys rejected on every path, round trip through dicts."""
import pytest

from geomax.config import (
    LossConfig,
    NetworkConfig,
    PostprocessConfig,
    TilingConfig,
    TrainConfig,
    default_of,
    split_options,
)
from geomax.errors import ArgumentError


def test_unknown_key_names_the_closest_setting():
    with pytest.raises(ArgumentError, match="did you mean 'class_threshold'"):
        PostprocessConfig.build(class_treshold=0.5)
    with pytest.raises(ArgumentError, match="Unknown"):
        split_options({"num_slot": 8})


def test_from_model_rejects_typos_and_network_settings_before_loading():
    from geomax.models.learner import MaXDeepLab

    with pytest.raises(ArgumentError, match="did you mean 'class_threshold'"):
        MaXDeepLab.from_model("no_such_model", class_treshold=0.5)
    with pytest.raises(ArgumentError, match="network settings fixed"):
        MaXDeepLab.from_model("no_such_model", num_slots=64)


def test_values_are_checked():
    with pytest.raises(ArgumentError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ArgumentError, match="either --epochs or --minutes"):
        TrainConfig(epochs=2, minutes=1.0)
    with pytest.raises(ArgumentError, match="output_stride"):
        NetworkConfig(output_stride=8)
    with pytest.raises(ArgumentError, match="smaller than 2 \\* overlap"):
        TilingConfig(tile_size=64, overlap=40)


def test_round_trip_through_a_dict():
    for cfg in (NetworkConfig(num_slots=24), LossConfig(alpha=0.5), PostprocessConfig(min_thing_area=3),
                TrainConfig(minutes=2.5, batch_size=4), TilingConfig(tile_size=128)):
        assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_build_ignores_none_overrides():
    assert TrainConfig.build(None, lr=None, epochs=None) == TrainConfig()
    assert default_of(TrainConfig, "lr") == TrainConfig().lr


def test_tiling_resolves_from_the_chip_size():
    t = TilingConfig().resolve(chip_size=120, tile_multiple=16)
    assert (t.tile_size, t.overlap) == (128, 32)
    assert TilingConfig().resolve(None, 16).tile_size == TilingConfig.FALLBACK_TILE_SIZE
    assert TilingConfig(tile_size=96, overlap=10).resolve(128, 16) == TilingConfig(tile_size=96, overlap=10)


def test_time_budget_recipe():
    cfg = TrainConfig(minutes=1.0)
    assert cfg.n_epochs > 1000 and not cfg.keep_best
    assert TrainConfig().n_epochs == TrainConfig.DEFAULT_EPOCHS and TrainConfig().keep_best
