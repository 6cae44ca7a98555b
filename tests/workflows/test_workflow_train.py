"""geomax.workflows.train: the recipe, the fit step and the checks made before any work."""
import pytest

from geomax.config import TrainConfig
from geomax.errors import ArgumentError, DataError, OutputExistsError
from geomax.workflows import train as train_workflow
from geomax.workflows.train import fit_model, resolve_train_config


class _FakeModel:
    """Stands in for MaXDeepLab: records the recipe it is fitted with."""

    has_validation = True

    def __init__(self):
        self.fitted_with = None

    def fit(self, config=None, valid_estimate=0.0, resume=False, warn_empty=True):
        self.fitted_with = config

    def compute_metrics(self):
        return {"all": {"pq": 0.5}, "things": {"pq": 0.25}, "stuff": {"pq": 0.75}}


def test_resolve_train_config_ignores_values_not_given_and_rejects_unknown_ones():
    assert resolve_train_config(epochs=None, minutes=5, lr=None) == TrainConfig(minutes=5.0)
    assert resolve_train_config(TrainConfig(batch_size=4), epochs=2) == TrainConfig(batch_size=4, epochs=2)
    with pytest.raises(ArgumentError, match="did you mean 'batch_size'"):
        resolve_train_config(batchsize=4)


def test_fit_model_fits_with_the_recipe_and_logs_validation_pq():
    model, lines = _FakeModel(), []
    recipe = TrainConfig(epochs=2)
    metrics = fit_model(model, recipe, log=lines.append)
    assert model.fitted_with is recipe and metrics["all"]["pq"] == 0.5
    assert lines == ["validation PQ 50.0 (things 25.0, stuff 75.0)"]
    lines.clear()
    fit_model(_FakeModel(), recipe, log=lines.append, verbose=False)
    assert lines == []


def test_train_checks_everything_before_any_work(monkeypatch, synthetic_export, tmp_path):
    def no_work(*args, **kwargs):
        raise AssertionError("train prepared data before its checks")

    monkeypatch.setattr(train_workflow, "prepare", no_work)
    chips = synthetic_export.out_folder
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder geomax wrote"):
        train_workflow.train(chips, busy, log=lambda line: None)
    assert (busy / "keep.txt").read_text() == "x"
    with pytest.raises(DataError, match="does not exist"):
        train_workflow.train(tmp_path / "no_export", tmp_path / "m", log=lambda line: None)
    with pytest.raises(ArgumentError, match="max_deeplab_huge"):
        train_workflow.train(chips, tmp_path / "m", backbone="max_deeplab_huge", log=lambda line: None)
    with pytest.raises(DataError, match="Pretrained"):
        train_workflow.train(chips, tmp_path / "m", pretrained=tmp_path / "none.pth", log=lambda line: None)
    assert not (tmp_path / "m").exists()


def test_train_result_carries_the_saved_configs(monkeypatch, synthetic_export, tmp_path):
    monkeypatch.setattr(train_workflow, "fit_model", lambda model, train, **kw: {})  # no training needed
    result = train_workflow.train(synthetic_export.out_folder, tmp_path / "model", train=TrainConfig(epochs=1),
                                  backbone="max_deeplab_tiny", log=lambda line: None)
    state = result.model.state
    assert result.folder == (tmp_path / "model").resolve() and list(result.folder.glob("*.dlpk"))
    assert result.network == dict(state.network_config) and result.network["variant"] == "max_deeplab_tiny"
    assert result.loss == state.loss and result.postprocess == state.postprocess
    assert result.train == TrainConfig(epochs=1)
