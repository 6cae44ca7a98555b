"""Tests of the demo: the wall-clock training budget, the output-folder rule, a tiny demo run, the full demo (slow)."""
import json
import time

import pytest
import torch

from geomax.demo import run_demo
from geomax.errors import ArgumentError, OutputExistsError
from geomax.models.callbacks import TimeBudget


def _toy_learner(delay: float):
    """A fastai Learner on random tensors whose every batch takes at least ``delay`` seconds."""
    import fastai.callback.schedule  # noqa: F401
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch.utils.data import DataLoader, TensorDataset

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x):
            time.sleep(delay)
            return self.lin(x)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    train = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=8)
    valid = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=8)
    learn = Learner(DataLoaders(train, valid), Slow(), loss_func=torch.nn.functional.mse_loss)
    learn.logger = lambda *a, **k: None
    return learn


def test_time_budget_stops_training_on_time_and_drives_one_cycle():
    learn = _toy_learner(delay=0.02)  # 6 batches per epoch -> >= 0.12 s per epoch
    budget = TimeBudget(1.0, verbose=False)
    lrs = []

    from fastai.callback.core import Callback

    class LrLog(Callback):
        order = 70

        def before_batch(self):
            if self.training:
                lrs.append(self.opt.hypers[-1]["lr"])

    t0 = time.monotonic()
    with learn.no_bar():
        learn.fit_one_cycle(10_000, 1e-2, cbs=[budget, LrLog()])
    took = time.monotonic() - t0
    assert 0.7 <= took < 3.0  # ends near the budget: the time of the last validation is kept free
    assert budget.epochs_done >= 2 and budget.epochs_done == len(learn.recorder.values)
    ends = budget.epoch_ends
    assert len(ends) == budget.epochs_done and ends[-1] == len(budget.batch_losses)
    assert ends[:-1] == [6 * (i + 1) for i in range(len(ends) - 1)]  # full epochs, the last one may be cut
    assert len(budget.batch_losses) == len(lrs) > 6
    # the one-cycle schedule follows the clock: it warms up, peaks, then anneals to near zero at the end
    peak = max(lrs)
    assert lrs[0] < 0.2 * peak and lrs[-1] < 0.2 * peak
    assert 0.05 < lrs.index(peak) / len(lrs) < 0.6
    # the last epoch was validated and recorded
    assert all(len(v) == 2 for v in learn.recorder.values)  # train and valid loss, the cut epoch too


def test_time_budget_keeps_room_for_the_first_validation():
    learn = _toy_learner(delay=0.02)
    budget = TimeBudget(1.0, verbose=False, valid_estimate=0.9)
    t0 = time.monotonic()
    with learn.no_bar():
        learn.fit_one_cycle(10_000, 1e-2, cbs=[budget])
    assert time.monotonic() - t0 < 3.0
    # the first epoch is cut to leave the estimated validation time; once validation is timed, training goes on
    assert budget.epoch_ends[0] < 6
    assert len(budget.epoch_ends) >= 2


def test_time_budget_rejects_non_positive_budget():
    with pytest.raises(ArgumentError):
        TimeBudget(0)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "b.txt").write_text("b")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a folder geomax wrote"):
            run_demo(out, overwrite=overwrite, quick=True)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.txt", "run"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArgumentError, match="is a file"):
        run_demo(tmp_path / "file", quick=True)


def test_run_demo_rejects_bad_settings_before_writing(tmp_path):
    with pytest.raises(ArgumentError, match="train_minutes"):
        run_demo(tmp_path / "a", train_minutes=0)
    with pytest.raises(ArgumentError, match="scene_size"):
        run_demo(tmp_path / "b", scene_size=100, chip_size=128)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tiny_demo_end_to_end(tmp_path):
    """The whole pipeline with the tiny variant and a 15-second budget: every output, a report with pictures."""
    out = tmp_path / "demo"
    t0 = time.monotonic()
    result = run_demo(out, quick=True, train_minutes=0.25, scene_size=256, test_size=256, chip_size=128,
                      backbone="max_deeplab_tiny", verbose=False)
    assert time.monotonic() - t0 < 120
    paths = result["paths"]
    for key in ("train_raster", "test_raster", "test_labels", "prediction_raster", "prediction_features",
                "report", "metrics"):
        assert (out / paths[key].split("/demo/", 1)[-1]).exists() or __import__("pathlib").Path(paths[key]).exists()
    import pathlib

    model_dir = pathlib.Path(paths["model"])
    assert list(model_dir.glob("*.emd")) and list(model_dir.glob("*.dlpk"))
    html = pathlib.Path(paths["report"]).read_text()
    assert html.count("<img src='data:image/png;base64,") >= 2
    assert "Panoptic quality on the test scene" in html and "Timings" in html
    for png in ("report_loss.png", "report_scene.png"):
        assert (out / png).stat().st_size > 1000
    m = result["metrics"]
    assert set(m) >= {"all", "things", "stuff", "per_class"}
    assert result["training"]["epochs"] >= 1 and result["training"]["batches"] >= 1
    assert result["timings"]["train"] < 0.25 * 60 + 30
    saved = json.loads(pathlib.Path(paths["metrics"]).read_text())
    assert saved["settings"]["backbone"] == "max_deeplab_tiny"
    # the same folder again is refused
    with pytest.raises(OutputExistsError):
        run_demo(out, quick=True, train_minutes=0.25, scene_size=256, test_size=256, chip_size=128,
                 backbone="max_deeplab_tiny", verbose=False)


@pytest.mark.slow
def test_full_demo_reaches_pq_0_5_within_15_minutes(tmp_path):
    t0 = time.monotonic()
    result = run_demo(tmp_path / "full", verbose=True)
    assert time.monotonic() - t0 < 15 * 60
    assert result["metrics"]["all"]["pq"] >= 0.5
