"""fastai callbacks of geomax training: the wall-clock budget, the last-epoch checkpoint, resumable trackers.

Ordinary ``fastai.callback.core.Callback`` subclasses, defined at module level.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelValidException
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback

from ..errors import ArgumentError, ModelError
from ..log import get_logger

log = get_logger(__name__)

__all__ = ["TimeBudget", "LastEpochCheckpoint", "Autocast", "ResumableSaveModel", "ResumableEarlyStopping",
           "without_progress_table", "clock", "history_rows"]


def history_rows(recorder) -> list[dict]:
    """fastai recorder values as one dict per epoch (train loss, valid loss, metrics)."""
    names = list(recorder.metric_names[1:-1])
    return [dict(zip(names, [float(v) if v is not None else None for v in vals])) for vals in recorder.values
            if len(vals)]  # an epoch a resumed run skipped logs nothing


def clock(seconds: float) -> str:
    """``m:ss`` of a number of seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class TimeBudget(Callback):
    """Train for a wall-clock budget instead of a number of epochs.

    * The learner's training progress (``pct_train``, which drives fastai's one-cycle
      schedule) is set from the elapsed time, so warm-up and annealing span the whole
      budget whatever the speed of the machine.
    * After each training batch, if the budget (less the time the last validation took)
      is used up, the epoch's training ends; the epoch is still validated and recorded,
      then training stops.
    * With ``validate_every``, an epoch is validated only when that many seconds have
      passed since the last validation, and always the first epoch and the last (the one
      after which no other epoch fits in the budget). A skipped epoch is recorded with
      its training loss and ``None`` for the validation loss and metrics. On small exports
      an epoch takes a few seconds and validating each one cost up to a tenth of the
      budget (``docs/design.md``).

    Parameters
    ----------
    seconds:
        The budget, counted from the start of ``fit``.
    verbose:
        Print one line per epoch (losses, validation PQ, time used) and a progress line every minute.
    valid_estimate:
        Seconds one validation pass is expected to take, kept free at the end of the
        budget until the first validation has been timed.
    already_used:
        Seconds of the budget an interrupted run had used (a resumed run continues its
        schedule and budget).
    validate_every:
        Seconds between two validations (0: every epoch). Leave it 0 when a callback
        watches a validation value every epoch (early stopping, the best-epoch checkpoint).

    Attributes
    ----------
    batch_losses:
        Smoothed training loss after every batch.
    epoch_ends:
        Number of batches run at the end of each epoch.
    epochs_done, elapsed:
        Epochs completed and seconds used when training stopped.
    """

    order = 55  # after the Recorder (50), before the ParamScheduler (60)

    def __init__(self, seconds: float, verbose: bool = True, valid_estimate: float = 0.0, already_used: float = 0.0,
                 validate_every: float = 0.0):
        if not seconds > 0:
            raise ArgumentError(f"The training budget must be positive, got {seconds} s.")
        if not validate_every >= 0:
            raise ArgumentError(f"validate_every must be 0 or more seconds, got {validate_every}.")
        self.seconds, self.verbose = float(seconds), verbose
        self.already_used = float(already_used)
        self.valid_estimate = float(valid_estimate)
        self.validate_every = float(validate_every)
        self.batch_losses: list[float] = []
        self.epoch_ends: list[int] = []
        self.epochs_done, self.elapsed, self._valid_time = 0, 0.0, 0.0
        self.validated: list[bool] = []  # per epoch of this run: validated or skipped
        self._last_valid: float | None = None
        self._skipped = False

    def _used(self) -> float:
        return time.monotonic() - self._start + self.already_used

    def used_seconds(self) -> float:
        """Seconds of the budget used so far (with those of an interrupted run this one resumes)."""
        return self._used()

    def before_fit(self):
        self._start = self._last_print = time.monotonic()
        self.batch_losses, self.epoch_ends, self.epochs_done, self.validated = [], [], 0, []
        self._valid_time = self.valid_estimate  # until the first validation is timed
        self._last_valid, self._skipped = None, False

    def before_batch(self):
        if self.training:
            self.learn.pct_train = min(self._used() / self.seconds, 0.999)

    def after_batch(self):
        if not self.training:
            return
        self.batch_losses.append(float(self.learn.smooth_loss))
        if self.verbose and time.monotonic() - self._last_print >= 60.0:
            self._last_print = time.monotonic()
            log.info(f"   batch {len(self.batch_losses)} (epoch {self.epoch + 1}, {self.iter + 1}/{self.n_iter}): "
                     f"loss {self.batch_losses[-1]:.4f}  [{clock(self._used())} of {clock(self.seconds)}]")
        if self._used() + self._valid_time >= self.seconds:
            raise CancelTrainException()

    def after_cancel_train(self):
        # fastai's Recorder drops the train loss of a cancelled epoch; keep it (mean of the batches run)
        if hasattr(self.learn, "recorder"):
            self.learn.recorder.cancel_train = False

    def _last_epoch(self) -> bool:
        """Whether no other epoch starts after this one (:meth:`before_epoch`'s rule, with a margin)."""
        return self._used() + 1.5 * self._valid_time + 1.0 >= self.seconds

    def before_validate(self):
        self._skipped = False
        if (self.validate_every > 0 and self._last_valid is not None and not self._last_epoch()
                and self._used() - self._last_valid < self.validate_every):
            self._skipped = True
            raise CancelValidException()
        self._valid_start = time.monotonic()

    def after_validate(self):
        if not self._skipped:
            self._valid_time = time.monotonic() - self._valid_start
            self._last_valid = self._used()

    def after_epoch(self):
        self.epoch_ends.append(len(self.batch_losses))
        self.epochs_done = self.epoch + 1
        self.elapsed = self._used()
        self.validated.append(not self._skipped)
        rec = self.learn.recorder
        if self._skipped and rec.values:
            # the Recorder logged the training loss only: the validation columns as None
            missing = len(rec.metric_names) - 2 - len(rec.values[-1])  # less "epoch" and "time"
            row = rec.values[-1]
            rec.values[-1] = type(row)(list(row) + [None] * max(missing, 0))
        if self.verbose:
            vals = dict(zip(rec.metric_names[1:-1], rec.values[-1])) if rec.values else {}
            shown = "  ".join(f"{k} {float(v):.4f}" for k, v in vals.items()
                              if isinstance(v, (int, float)) or hasattr(v, "item"))
            note = f"  (validated every {self.validate_every:g} s)" if self._skipped else ""
            log.info(f"epoch {self.epochs_done}: {shown}{note}  [{clock(self.elapsed)} of {clock(self.seconds)}]")

    def before_epoch(self):
        # the budget is used up: stop, unless the last epoch went unvalidated (a slow step after
        # its training, e.g. a checkpoint, took the margin): then one batch and a validation run
        if (self.epoch > 0 and self._used() + self._valid_time >= self.seconds
                and (not self.validated or self.validated[-1])):
            raise CancelFitException()


class Autocast(Callback):
    """Run the network's forward pass under ``torch.autocast`` (bfloat16 on a CPU); loss and backward outside.

    fastai's ``MixedPrecision`` drives CUDA autocast only (with float16's gradient
    scaler); this is its counterpart for a CPU with native bfloat16, which needs no
    scaler (bfloat16 has float32's exponent range). The network's outputs are cast to
    float32 by the loss, which runs outside the autocast region.

    Parameters
    ----------
    device_type:
        ``"cpu"`` (or ``"cuda"``).
    dtype:
        The autocast type (default bfloat16).
    """

    order = 10  # before the loss and every metric

    def __init__(self, device_type: str = "cpu", dtype=None):
        self.device_type, self.dtype = device_type, dtype or torch.bfloat16
        self._ctx = None

    def before_batch(self):
        self._ctx = torch.autocast(self.device_type, dtype=self.dtype)
        self._ctx.__enter__()

    def _leave(self):
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def after_pred(self):
        self._leave()

    def after_batch(self):
        self._leave()  # a batch cancelled between its start and the prediction

    def after_cancel_batch(self):
        self._leave()


class LastEpochCheckpoint(Callback):
    """Save weights + optimiser after an epoch so ``fit(resume=True)`` can continue.

    The first epoch of a run is saved (a record to resume from exists early), then an
    epoch when ``every`` seconds have passed since the last save, and the last epoch of
    the run always (at the end of ``fit``).

    Parameters
    ----------
    fname:
        Checkpoint name inside the learner's model folder (``<path>/<model_dir>/<fname>.pth``
        and ``<fname>.json``: the epochs done, the seconds a time budget had used, and the
        model's fingerprint).
    fingerprint:
        :attr:`geomax.models.state.ModelState.fingerprint` of the model being trained; a
        checkpoint of another model is refused by :meth:`restore`.
    every:
        Seconds between two saves (0: after every epoch).
    """

    order = 60

    #: Default checkpoint name (``<fname>.json`` is the record, see :meth:`has_record`).
    FNAME = "geomax_last"

    def __init__(self, fname: str = FNAME, fingerprint: str = "", every: float = 0.0):
        self.fname, self.fingerprint, self.every = fname, fingerprint, float(every)
        self.prior_history: list[dict] = []  # epochs of the interrupted run a resumed one continues
        self._last_save, self._unsaved, self._epochs_done = 0.0, False, 0

    @classmethod
    def has_record(cls, folder: Path, fname: str = FNAME) -> bool:
        """Whether ``folder`` holds the record of an interrupted training to resume."""
        return (Path(folder) / f"{fname}.json").exists()

    def _meta(self, learn) -> Path:
        return Path(learn.path) / learn.model_dir / f"{self.fname}.json"

    def before_fit(self):
        self._last_save, self._unsaved = -float("inf"), False

    def after_epoch(self):
        if not self.learn.recorder.values:  # an epoch skipped by a resumed run: nothing new to save
            return
        self._unsaved, self._epochs_done = True, self.epoch + 1
        if time.monotonic() - self._last_save >= self.every:
            self._save()

    def after_fit(self):
        if self._unsaved:  # the last epoch run (a time budget or the epoch count ended the run)
            self._save()

    def _save(self):
        self._unsaved, self._last_save = False, time.monotonic()
        # Crash-safe: the weights of each epoch get their own file, the record naming them is replaced
        # atomically, then the previous epoch's file is removed; a kill at any point leaves a record
        # that names complete weights.
        done = self._epochs_done  # in after_fit ``self.epoch`` may already name the epoch that was cancelled
        weights = f"{self.fname}-epoch{done}"
        self.learn.save(weights, with_opt=True)  # fastai's save writes on rank 0 only
        from .distributed import is_main_process

        if is_main_process():
            used = next((cb.used_seconds() for cb in self.learn.cbs if isinstance(cb, TimeBudget)), None)
            meta = self._meta(self.learn)
            previous = self._weights_named(meta)
            tmp = meta.with_name(meta.name + ".tmp")
            tmp.write_text(json.dumps({"epochs_done": done, "n_epoch": self.n_epoch, "weights": weights,
                                       "budget_used_s": used, "fingerprint": self.fingerprint,
                                       "history": self.prior_history + history_rows(self.learn.recorder)}))
            os.replace(tmp, meta)
            if previous is not None and previous != weights:
                (meta.parent / f"{previous}.pth").unlink(missing_ok=True)

    def _weights_named(self, meta: Path) -> str | None:
        try:
            return json.loads(meta.read_text()).get("weights", self.fname)
        except (OSError, ValueError, AttributeError):
            return None

    def restore(self, learn) -> tuple[int, float]:
        """Load the last checkpoint into ``learn``; return the epochs it had done and the budget seconds used.

        The epochs' history is kept in :attr:`prior_history`.
        """
        meta_path = self._meta(learn)
        folder = meta_path.parent
        if not meta_path.exists():
            raise ModelError(f"No interrupted training to resume in '{folder}' (no {meta_path.name}). Train without "
                             "resume; checkpoints are written after every epoch with checkpoint=True.")
        try:
            meta = json.loads(meta_path.read_text())
            epochs_done = int(meta["epochs_done"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"The checkpoint record '{meta_path}' is unreadable ({exc}). Delete '{folder}' (geomax "
                             "wrote it) and train without resume.") from exc
        if self.fingerprint and meta.get("fingerprint") not in (None, self.fingerprint):
            raise ModelError(f"The checkpoint in '{folder}' belongs to another model (other network settings, classes "
                             "or bands). Resume with the settings of the interrupted run, or train without resume.")
        weights = str(meta.get("weights", self.fname))
        try:
            learn.load(weights, with_opt=True, weights_only=True)
        except Exception as exc:  # torch / pickle raise many types for a truncated or foreign file
            raise ModelError(f"The checkpoint '{folder / (weights + '.pth')}' cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc)[:200]}). It may be cut short by a crash; delete '{folder}' (geomax wrote "
                             "it) and train without resume.") from exc
        self.prior_history = list(meta.get("history") or [])
        return epochs_done, float(meta.get("budget_used_s") or 0.0)


class _SkipsResumedEpochs:
    """Mixin for fastai trackers: ignore the epochs a resumed run skips (they log no values)."""

    start_epoch: int = 0

    def after_epoch(self):
        if self.epoch >= self.start_epoch:  # type: ignore[attr-defined]
            super().after_epoch()  # type: ignore[misc]


class ResumableSaveModel(_SkipsResumedEpochs, SaveModelCallback):
    """fastai's ``SaveModelCallback`` that ignores the epochs a resumed run skips."""

    def __init__(self, *args, start_epoch: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_epoch = start_epoch


class ResumableEarlyStopping(_SkipsResumedEpochs, EarlyStoppingCallback):
    """fastai's ``EarlyStoppingCallback`` that ignores the epochs a resumed run skips."""

    def __init__(self, *args, start_epoch: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_epoch = start_epoch


class without_progress_table:
    """Context manager: train without fastai's progress bar and epoch table (a TimeBudget prints its own lines)."""

    def __init__(self, learn):
        self.learn = learn

    def __enter__(self):
        self.had = any(isinstance(cb, ProgressCallback) for cb in self.learn.cbs)
        if self.had:
            self.learn.remove_cb(ProgressCallback)
        self.logger = self.learn.logger
        self.learn.logger = lambda *a, **k: None
        return self

    def __exit__(self, *exc):
        self.learn.logger = self.logger
        if self.had:
            self.learn.add_cb(ProgressCallback())
        return False
