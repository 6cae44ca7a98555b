"""One recipe: the demo, `geomax train` and the toolbox resolve the same TrainConfig from the same minutes."""
import sys
from pathlib import Path

import pytest

from geomax.cli import main
from geomax.config import TrainConfig
from geomax.demo import run_demo
from geomax.workflows import train as train_workflow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "toolboxes"))
from _toolspec import run_tool  # noqa: E402


class _Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Replace the training step: record the recipe each entry point hands to it, then stop."""
    configs = []

    def fake_fit(model, train, **kwargs):
        configs.append(train)
        raise _Captured()

    monkeypatch.setattr(train_workflow, "fit_model", fake_fit)
    return configs


@pytest.fixture
def export(synthetic_export):
    """The shared training-data export (tests/conftest.py)."""
    return synthetic_export.out_folder


def _cli_recipe(export, out, minutes):
    with pytest.raises(_Captured):
        main(["train", str(export), "--out", str(out), "--minutes", str(minutes)])


def _toolbox_recipe(export, out, minutes):
    with pytest.raises(_Captured):
        run_tool("TrainDeepLearningModel", {"in_folder": str(export), "out_model": str(out),
                                            "max_minutes": str(minutes)}, log=lambda *a: None)


def _demo_recipe(out, minutes):
    with pytest.raises(_Captured):
        run_demo(out, quick=True, train_minutes=minutes, scene_size=256, test_size=256, verbose=False)


def test_demo_cli_and_toolbox_train_with_the_same_recipe(captured, export, tmp_path):
    _cli_recipe(export, tmp_path / "cli", 5)
    _toolbox_recipe(export, tmp_path / "tbx", 5)
    _demo_recipe(tmp_path / "demo", 5)
    cli, toolbox, demo = captured
    assert cli == toolbox == demo == TrainConfig(minutes=5.0)
    assert cli.lr == TrainConfig().lr  # no entry point brings a learning rate of its own


def test_entry_points_pass_their_settings_into_the_recipe(captured, export, tmp_path):
    with pytest.raises(_Captured):
        main(["train", str(export), "--out", str(tmp_path / "a"), "--epochs", "3", "--lr", "0.01",
              "--batch-size", "4"])
    with pytest.raises(_Captured):
        run_tool("TrainDeepLearningModel", {"in_folder": str(export), "out_model": str(tmp_path / "b"),
                                            "max_epochs": "3", "learning_rate": "0.01", "batch_size": "4"},
                 log=lambda *a: None)
    assert captured[0] == captured[1] == TrainConfig(epochs=3, lr=0.01, batch_size=4)


def test_train_writes_a_relative_out_folder_where_the_user_is(monkeypatch, export, tmp_path):
    monkeypatch.setattr(train_workflow, "fit_model", lambda model, train, **kw: None)  # no training needed
    monkeypatch.chdir(tmp_path)
    result = train_workflow.train(export, "my_model", train=TrainConfig(epochs=1), backbone="max_deeplab_tiny",
                                  log=lambda *a: None)
    assert result.folder == (tmp_path / "my_model").resolve()
    assert list((tmp_path / "my_model").glob("*.emd"))
