"""Tests of geomax.models.callbacks on a toy fastai learner (a linear model, no geomax data)."""
import json
import time

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import fit_one_cycle  # noqa: F401  (adds Learner.fit_one_cycle)
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from torch import nn
from torch.utils.data import TensorDataset

from geomax.errors import ArgumentError, ModelError
from geomax.models.callbacks import (
    LastEpochCheckpoint,
    TimeBudget,
    _SkipsResumedEpochs,
    clock,
    without_progress_table,
)


class _SlowBatches(Callback):
    """Make every training batch take a little wall-clock time, and record pct_train."""

    def __init__(self, pause: float = 0.02):
        self.pause, self.pcts = pause, []

    def after_batch(self):
        if self.training:
            time.sleep(self.pause)
            self.pcts.append(float(self.learn.pct_train))


def _learner(path, seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    ds = TensorDataset(x, y)
    dls = DataLoaders.from_dsets(ds, ds, bs=8, device="cpu")
    return Learner(dls, nn.Linear(3, 1), loss_func=nn.MSELoss(), path=path, model_dir="models")


def test_clock_formats_minutes_and_seconds():
    assert clock(0) == "0:00" and clock(61) == "1:01" and clock(600.4) == "10:00"


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan")])
def test_time_budget_must_be_positive(seconds):
    with pytest.raises(ArgumentError, match="budget must be positive"):
        TimeBudget(seconds)


def test_time_budget_stops_training_and_drives_the_schedule(tmp_path):
    learn = _learner(tmp_path)
    budget, slow = TimeBudget(0.5, verbose=False), _SlowBatches()
    with without_progress_table(learn):
        learn.fit_one_cycle(1000, 1e-2, cbs=[budget, slow])  # 1000 epochs would take far more than the budget
    assert 1 <= budget.epochs_done < 1000
    assert len(learn.recorder.values) == budget.epochs_done  # every epoch run was validated and recorded
    assert budget.epoch_ends[-1] == len(budget.batch_losses) == len(slow.pcts)
    assert all(0.0 <= p < 1.0 for p in slow.pcts) and slow.pcts == sorted(slow.pcts)  # progress follows the clock
    assert slow.pcts[-1] > slow.pcts[0]


class _CountValidations(Callback):
    def before_fit(self):
        self.n = 0

    def after_validate(self):
        if not self.recorder.cancel_valid:
            self.n += 1


class _FakeClock(Callback):
    """The budget's clock: each training batch takes ``batch`` s, the step after each epoch ``after_epoch`` s."""
    order = 70

    def __init__(self, budget: TimeBudget, batch: float, after_epoch: float = 0.0):
        self.t, self.batch, self.pause = 0.0, batch, after_epoch
        budget._used = lambda: self.t

    def after_batch(self):
        if self.training:
            self.t += self.batch

    def after_epoch(self):
        self.t += self.pause


def test_time_budget_validates_on_a_schedule_and_always_the_first_and_last_epoch(tmp_path):
    from geomax.models.callbacks import history_rows

    learn = _learner(tmp_path)
    budget = TimeBudget(30.0, verbose=False, validate_every=5.0)
    count = _CountValidations()
    with without_progress_table(learn):  # four batches of 0.5 s: an epoch every 2 s
        learn.fit_one_cycle(1000, 1e-2, cbs=[budget, _FakeClock(budget, 0.5), count])
    n = budget.epochs_done
    assert n == 15
    assert budget.validated[0] and budget.validated[-1]  # the first and the last epoch
    assert count.n == sum(budget.validated) < n  # about one validation per 5 s, not one per epoch
    assert budget.validated[:4] == [True, False, False, True]  # after 2 s, 4 s, 6 s, 8 s of training
    rows = history_rows(learn.recorder)
    assert len(rows) == n and all(set(r) == {"train_loss", "valid_loss"} for r in rows)
    for row, validated in zip(rows, budget.validated):
        assert row["train_loss"] is not None
        assert (row["valid_loss"] is not None) == validated  # a skipped epoch: its train loss only


def test_time_budget_validates_the_last_epoch_even_after_a_slow_step_between_epochs(tmp_path):
    learn = _learner(tmp_path)
    budget = TimeBudget(6.0, verbose=False, validate_every=100.0)
    with without_progress_table(learn):
        # epoch 1 ends at 0.4 s (validated: the first), 3 s pass (a checkpoint write, say); epoch 2 ends
        # at 3.8 s with time to spare (not validated), the 3 s pass uses the budget up: one batch of a
        # third epoch and its validation run instead of stopping on an unvalidated epoch
        learn.fit_one_cycle(1000, 1e-2, cbs=[budget, _FakeClock(budget, 0.1, after_epoch=3.0)])
    assert budget.validated == [True, False, True]
    assert budget.epoch_ends == [4, 8, 9]


def test_time_budget_validates_every_epoch_by_default(tmp_path):
    learn = _learner(tmp_path)
    budget, slow, count = TimeBudget(0.3, verbose=False), _SlowBatches(0.01), _CountValidations()
    with without_progress_table(learn):
        learn.fit_one_cycle(1000, 1e-2, cbs=[budget, slow, count])
    assert count.n == budget.epochs_done == len(budget.validated) and all(budget.validated)
    with pytest.raises(ArgumentError, match="validate_every"):
        TimeBudget(1.0, validate_every=-1)


def test_last_epoch_checkpoint_saves_and_restores(tmp_path):
    learn = _learner(tmp_path)
    with without_progress_table(learn):
        learn.fit(2, 1e-2, cbs=[LastEpochCheckpoint("last")])
    meta = json.loads((tmp_path / "models" / "last.json").read_text())
    # one weights file, of the last epoch, named by the record (the earlier epoch's file is gone)
    assert meta["weights"] == "last-epoch2" and [p.name for p in (tmp_path / "models").glob("*.pth")] == [
        "last-epoch2.pth"]
    assert meta["epochs_done"] == 2 and meta["n_epoch"] == 2 and len(meta["history"]) == 2
    other = _learner(tmp_path, seed=1)
    assert not torch.equal(other.model.weight, learn.model.weight)
    assert LastEpochCheckpoint("last").restore(other) == (2, 0.0)
    assert torch.equal(other.model.weight, learn.model.weight)


def test_restore_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="No interrupted training to resume"):
        LastEpochCheckpoint("missing").restore(_learner(tmp_path))


def test_resumable_trackers_ignore_the_skipped_epochs():
    class Tracker:
        def __init__(self):
            self.seen = []

        def after_epoch(self):
            self.seen.append(self.epoch)

    class Probe(_SkipsResumedEpochs, Tracker):
        pass

    probe = Probe()
    probe.start_epoch = 2
    for epoch in range(4):
        probe.epoch = epoch
        probe.after_epoch()
    assert probe.seen == [2, 3]


def test_without_progress_table_restores_the_learner(tmp_path):
    learn = _learner(tmp_path)
    logger = learn.logger
    assert any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    with without_progress_table(learn):
        assert not any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
        assert learn.logger is not logger
    assert any(isinstance(cb, ProgressCallback) for cb in learn.cbs) and learn.logger is logger


class _SaveCounter(LastEpochCheckpoint):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved_after_epochs: list[int] = []

    def _save(self):
        self.saved_after_epochs.append(self._epochs_done)
        super()._save()


def test_last_epoch_checkpoint_every_saves_on_a_schedule_and_always_the_last_epoch(tmp_path):
    learn = _learner(tmp_path)
    rare = _SaveCounter("last", every=3600.0)
    with without_progress_table(learn):
        learn.fit(3, 1e-2, cbs=[rare])
    assert rare.saved_after_epochs == [1, 3]  # the first; none more within the hour; the last at the end of fit
    meta = json.loads((tmp_path / "models" / "last.json").read_text())
    assert meta["epochs_done"] == 3 and meta["weights"] == "last-epoch3" and len(meta["history"]) == 3
    always = _SaveCounter("each", every=0.0)
    with without_progress_table(learn):
        learn.fit(3, 1e-2, cbs=[always])
    assert always.saved_after_epochs == [1, 2, 3]


def test_last_epoch_checkpoint_under_a_budget_records_the_last_epoch_run(tmp_path):
    learn = _learner(tmp_path)
    budget, ckpt = TimeBudget(0.4, verbose=False), _SaveCounter("last", every=3600.0)
    with without_progress_table(learn):
        learn.fit(1000, 1e-2, cbs=[budget, ckpt, _SlowBatches()])
    meta = json.loads((tmp_path / "models" / "last.json").read_text())
    assert ckpt.saved_after_epochs[-1] == budget.epochs_done and meta["epochs_done"] == budget.epochs_done
    assert ckpt.saved_after_epochs in ([1], [1, budget.epochs_done])
    assert meta["budget_used_s"] > 0


def test_autocast_runs_the_forward_in_bfloat16_and_the_loss_outside():
    from geomax.models.callbacks import Autocast

    seen = {}

    class Look(Callback):
        order = 20

        def after_pred(self):
            seen.setdefault("pred", self.learn.pred.dtype)

        def after_loss(self):
            seen.setdefault("loss_autocast", torch.is_autocast_enabled("cpu"))

    learn = _learner(".")
    with without_progress_table(learn):
        learn.fit(1, 1e-2, cbs=[Autocast("cpu", torch.bfloat16), Look()])
    assert seen == {"pred": torch.bfloat16, "loss_autocast": False}
    assert not torch.is_autocast_enabled("cpu")
