"""The one-command demo: synthetic scenes -> chips -> training -> whole-scene inference -> PQ -> report.

:func:`run_demo` does the work; ``geomax demo`` only parses arguments and calls it.
Training runs for a fixed wall-clock budget (:class:`TimeBudget`, a fastai
callback): the one-cycle learning-rate schedule is stretched over the budget
and training stops after the batch that uses it up, so the run ends on time on
any machine.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import ArgumentError, OutputExistsError

__all__ = ["run_demo", "TimeBudget", "DEMO_SEED", "DEMO_DEFAULTS", "QUICK_DEFAULTS", "check_output_folder"]

#: Seed of the demo's training scene (test scene: seed + 1000); see run_demo.
DEMO_SEED = 11

#: Settings of the full demo (about 15 minutes on 2 CPU cores).
DEMO_DEFAULTS: dict[str, Any] = dict(total_minutes=14.0, train_minutes=None, scene_size=1536, test_size=1024,
                                     chip_size=128, batch_size=8, lr=3e-3, bands=4)
#: Settings of ``--quick`` (a few minutes).
QUICK_DEFAULTS: dict[str, Any] = dict(total_minutes=3.0, train_minutes=None, scene_size=768, test_size=512,
                                      chip_size=128, batch_size=8, lr=3e-3, bands=4)


class TimeBudget:
    """fastai callback: train for a wall-clock budget instead of a number of epochs.

    * The learner's training progress (``pct_train``, which drives fastai's
      one-cycle schedule) is set from the elapsed time, so warm-up and annealing
      span the whole budget whatever the speed of the machine.
    * After each training batch, if the budget (less the time the last
      validation took) is used up, the epoch's training ends; the epoch is
      still validated and recorded, then training stops.

    Parameters
    ----------
    seconds:
        The budget, counted from the start of ``fit``.
    verbose:
        Print one line per epoch (losses, validation PQ, time used) and a progress line every minute.
    valid_estimate:
        Seconds one validation pass is expected to take, kept free at the end of the
        budget until the first validation has been timed.

    Attributes
    ----------
    batch_losses:
        Smoothed training loss after every batch.
    epoch_ends:
        Number of batches run at the end of each epoch.
    epochs_done, elapsed:
        Epochs completed and seconds used when training stopped.
    """

    def __new__(cls, seconds: float, verbose: bool = True, valid_estimate: float = 0.0):
        from fastai.callback.core import Callback, CancelFitException, CancelTrainException

        class _TimeBudget(Callback):
            order = 55  # after the Recorder (50), before the ParamScheduler (60)

            def __init__(self, seconds: float, verbose: bool, valid_estimate: float):
                if not seconds > 0:
                    raise ArgumentError(f"The training budget must be positive, got {seconds} s.")
                self.seconds, self.verbose = float(seconds), verbose
                self.valid_estimate = float(valid_estimate)
                self.batch_losses: list[float] = []
                self.epoch_ends: list[int] = []
                self.epochs_done, self.elapsed, self._valid_time = 0, 0.0, 0.0

            def _used(self) -> float:
                return time.monotonic() - self._start

            def before_fit(self):
                self._start = self._last_print = time.monotonic()
                self.batch_losses, self.epoch_ends, self.epochs_done = [], [], 0
                self._valid_time = self.valid_estimate  # until the first validation is timed

            def before_batch(self):
                if self.training:
                    self.learn.pct_train = min(self._used() / self.seconds, 0.999)

            def after_batch(self):
                if not self.training:
                    return
                self.batch_losses.append(float(self.learn.smooth_loss))
                if self.verbose and time.monotonic() - self._last_print >= 60.0:
                    self._last_print = time.monotonic()
                    print(f"   batch {len(self.batch_losses)} (epoch {self.epoch + 1}, {self.iter + 1}/{self.n_iter}): "
                          f"loss {self.batch_losses[-1]:.4f}  [{_clock(self._used())} of {_clock(self.seconds)}]",
                          flush=True)
                if self._used() + self._valid_time >= self.seconds:
                    raise CancelTrainException()

            def after_cancel_train(self):
                # fastai's Recorder drops the train loss of a cancelled epoch; keep it (mean of the batches run)
                if hasattr(self.learn, "recorder"):
                    self.learn.recorder.cancel_train = False

            def before_validate(self):
                self._valid_start = time.monotonic()

            def after_validate(self):
                self._valid_time = time.monotonic() - self._valid_start

            def after_epoch(self):
                self.epoch_ends.append(len(self.batch_losses))
                self.epochs_done = self.epoch + 1
                self.elapsed = self._used()
                if self.verbose:
                    rec = self.learn.recorder
                    vals = dict(zip(rec.metric_names[1:-1], rec.log[1:-1])) if rec.log else {}
                    shown = "  ".join(f"{k} {float(v):.4f}" for k, v in vals.items()
                                      if isinstance(v, (int, float)) or hasattr(v, "item"))
                    print(f"epoch {self.epochs_done}: {shown}  [{_clock(self.elapsed)} of {_clock(self.seconds)}]",
                          flush=True)

            def before_epoch(self):
                if self.epoch > 0 and self._used() + self._valid_time >= self.seconds:
                    raise CancelFitException()

        return _TimeBudget(seconds, verbose, valid_estimate)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite``; then empty it.

    Raises
    ------
    OutputExistsError
        The folder exists, is not empty and ``overwrite`` is False.
    ArgumentError
        The path exists and is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError(f"'{out_dir}' is a file; give a folder for the outputs.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"Output folder '{out_dir}' exists and is not empty. Choose a new folder or "
                                    "pass --overwrite (overwrite=True) to replace its contents.")
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class _Timer:
    def __init__(self, timings: dict, name: str, verbose: bool):
        self.timings, self.name, self.verbose = timings, name, verbose

    def __enter__(self):
        if self.verbose:
            print(f"== {self.name} ...", flush=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.timings[self.name] = time.monotonic() - self.t0
        if self.verbose and exc[0] is None:
            print(f"   done in {self.timings[self.name]:.1f} s", flush=True)
        return False


def run_demo(
    out_dir: str | os.PathLike,
    quick: bool = False,
    train_minutes: float | None = None,
    total_minutes: float | None = None,
    scene_size: int | None = None,
    test_size: int | None = None,
    chip_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    bands: int | None = None,
    seed: int = DEMO_SEED,
    backbone: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    overwrite: bool = False,
    verbose: bool = True,
    num_threads: int | None = None,
) -> dict:
    """Run the whole geomax workflow on synthetic data and write every output into ``out_dir``.

    Steps: a training scene and a separate test scene (different seeds) ->
    :func:`geomax.export_training_data` -> :func:`geomax.prepare_data` ->
    :class:`geomax.MaXDeepLab` trained for ``train_minutes`` -> ``save`` ->
    :func:`geomax.predict_raster` on the test scene (GeoTIFF + GeoPackage) ->
    :func:`geomax.evaluate.evaluate_raster` against the test labels -> ``report.html``.

    Parameters
    ----------
    out_dir:
        Output folder; must be new or empty unless ``overwrite``.
    quick:
        Smaller scenes and a short budget (:data:`QUICK_DEFAULTS`, a few minutes).
    train_minutes:
        Wall-clock training budget. Default: what is left of ``total_minutes`` once
        the other steps are done or estimated (the time to predict the test scene is
        estimated by timing the network on a few tiles before training).
    total_minutes:
        Target for the whole run when ``train_minutes`` is not given (default 14,
        3 with ``quick``).
    scene_size, test_size:
        Sides in pixels of the training and test scenes.
    chip_size, batch_size, lr:
        Training chip side, batch size and peak learning rate.
    bands:
        Bands of the synthetic scenes (1, or 3 to 6: R, G, B, NIR, SWIR1, SWIR2).
    seed:
        The training scene uses ``seed``, the test scene ``seed + 1000``. The default
        (:data:`DEMO_SEED`) gives a training scene that holds every class the test scene
        holds (seed 0's training scene has no river, 1% water, against 8% in its test
        scene: water was never learned and the test PQ lost a whole stuff class).
    backbone:
        Network variant (default: the learner's default, ``max_deeplab_cpu`` without a GPU).
    tile_size, overlap:
        Tiling of the test scene for :func:`geomax.predict_raster` (default tile: the
        learner's default, the chip size; overlap a quarter of the tile).
    overwrite:
        Replace the contents of a non-empty ``out_dir``.
    verbose:
        Print progress and the final summary.
    num_threads:
        Torch CPU threads (default: torch's own choice).

    Returns
    -------
    dict
        ``paths`` (every output), ``metrics`` (test-scene PQ, all / things /
        stuff / per class), ``timings`` (seconds per step and ``total``),
        ``settings`` and ``training`` (epochs, batches, last losses).

    Raises
    ------
    OutputExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.
    ArgumentError
        A setting is out of range.
    """
    settings = dict(QUICK_DEFAULTS if quick else DEMO_DEFAULTS)
    for key, value in dict(train_minutes=train_minutes, total_minutes=total_minutes, scene_size=scene_size, test_size=test_size,
                           chip_size=chip_size, batch_size=batch_size, lr=lr, bands=bands).items():
        if value is not None:
            settings[key] = value
    _check_settings(settings)
    out = check_output_folder(out_dir, overwrite=overwrite)
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    import torch

    if num_threads:
        torch.set_num_threads(int(num_threads))
    torch.manual_seed(seed)

    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle / lr_find)

    from . import export_training_data, prepare_data
    from .data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES, make_scene
    from .evaluate import evaluate_raster, format_metrics
    from .models.learner import MaXDeepLab
    from .report import write_demo_report

    data_dir = out / "data"
    paths: dict[str, Path] = {
        "train_raster": data_dir / "train_scene.tif", "train_labels": data_dir / "train_labels.gpkg",
        "test_raster": data_dir / "test_scene.tif", "test_labels": data_dir / "test_labels.gpkg",
        "chips": out / "chips", "model": out / "model",
        "prediction_raster": out / "test_panoptic.tif", "prediction_features": out / "test_panoptic.gpkg",
        "metrics": out / "metrics.json", "report": out / "report.html",
    }
    with _Timer(timings, "make synthetic scenes", verbose):
        make_scene(paths["train_raster"], paths["train_labels"], size=settings["scene_size"], seed=seed,
                   bands=settings["bands"])
        make_scene(paths["test_raster"], paths["test_labels"], size=settings["test_size"], seed=seed + 1000,
                   bands=settings["bands"])
    with _Timer(timings, "export training chips", verbose):
        export_training_data(paths["train_raster"], paths["train_labels"], paths["chips"], class_field=CLASS_FIELD,
                             class_table=SYNTHETIC_CLASSES, tile_size=settings["chip_size"],
                             stride=settings["chip_size"] // 2, progress=False)
    with _Timer(timings, "prepare data", verbose):
        data = prepare_data(paths["chips"], chip_size=settings["chip_size"], batch_size=settings["batch_size"],
                            val_split_pct=0.1, seed=seed)
        n_train, n_valid = len(data.train_ds), len(data.valid_ds)
    with _Timer(timings, "train", verbose):
        model = MaXDeepLab(data, backbone=backbone)
        if settings["train_minutes"] is None:
            reserve, valid_estimate = _estimate_remaining_steps(model, paths["test_raster"], settings, n_valid,
                                                                tile_size, overlap)
            left = 60.0 * settings["total_minutes"] - (time.monotonic() - t_start) - reserve
            if left < 30.0:
                import warnings

                warnings.warn(f"total_minutes={settings['total_minutes']} leaves {left:.0f} s for training on this "
                              "machine; training for 30 s, so the run will take longer than asked.")
                left = 30.0
            settings["train_minutes"] = round(left / 60.0, 2)
            if verbose:
                print(f"   other steps estimated at {reserve:.0f} s: training gets {_clock(left)} of the "
                      f"{settings['total_minutes']:g} min", flush=True)
        else:
            valid_estimate = 0.0
        budget = TimeBudget(60.0 * settings["train_minutes"], verbose=verbose, valid_estimate=valid_estimate)
        if verbose:
            print(f"   {model!r}\n   {n_train} training chips, {n_valid} validation chips, "
                  f"training for {settings['train_minutes']:g} min", flush=True)
        # Many epochs: the budget callback ends training and drives the one-cycle schedule by time.
        with _no_fastai_bar(model.learn):
            model.fit(10_000, lr=settings["lr"], one_cycle=True, checkpoint=False, cbs=[budget])
    with _Timer(timings, "save model", verbose):
        model_folder = model.save(paths["model"])
        paths["model"] = Path(model_folder)
    with _Timer(timings, "predict test scene", verbose):
        predict_kw: dict[str, Any] = dict(out_features=paths["prediction_features"], overlap=overlap,
                                          batch_size=4)
        if tile_size is not None:
            predict_kw["tile_size"] = tile_size
        model.predict_raster(paths["test_raster"], paths["prediction_raster"], **predict_kw)
    with _Timer(timings, "evaluate", verbose):
        metrics = evaluate_raster(paths["prediction_raster"], paths["test_labels"], class_table=model.class_table,
                                  class_field=CLASS_FIELD, valid_raster=paths["test_raster"], progress=False)
    training = {"epochs": budget.epochs_done, "batches": len(budget.batch_losses),
                "seconds": budget.elapsed, "history": list(getattr(model, "_history", []) or [])}
    timings_before_report = dict(timings)
    with _Timer(timings, "write report", verbose):
        settings_shown = {**settings, "backbone": model.backbone, "seed (train / test scene)": f"{seed} / {seed + 1000}",
                          "training chips / validation chips": f"{n_train} / {n_valid}",
                          "epochs / batches trained": f"{training['epochs']} / {training['batches']}",
                          "torch threads": torch.get_num_threads()}
        files = {k: str(v) for k, v in paths.items() if k != "report"}
        write_demo_report(paths["report"], metrics, model.class_table, paths["test_raster"],
                          paths["prediction_raster"], paths["test_labels"], history=training["history"],
                          batch_losses=budget.batch_losses, epoch_ends=budget.epoch_ends, timings=timings_before_report, settings=settings_shown,
                          files=files)
    timings["total"] = time.monotonic() - t_start
    result = {"paths": {k: str(v) for k, v in paths.items()}, "metrics": metrics, "timings": timings,
              "settings": {**settings, "backbone": model.backbone, "seed": seed}, "training": training}
    paths["metrics"].write_text(json.dumps(result, indent=2, default=_json_default))
    if verbose:
        print("\n" + format_metrics(metrics))
        print(f"\nPQ on the test scene: {100 * metrics['all']['pq']:.1f}   total time {_clock(timings['total'])}")
        print("\nOutputs:")
        for key in ("report", "prediction_raster", "prediction_features", "model", "metrics", "chips",
                    "test_raster", "test_labels"):
            print(f"  {key:<20} {paths[key]}")
    return result


def _estimate_remaining_steps(model, test_raster, settings: dict, n_valid: int, tile_size, overlap: int
                              ) -> tuple[float, float]:
    """Seconds the steps after training will take (predicting the test scene, saving, evaluating, the
    report), and the seconds of one validation pass.

    Times the (untrained) network on a batch of tiles of the size ``predict_raster``
    will use; the cost of a forward pass does not depend on the weights.
    """
    import numpy as np
    import rasterio

    from .inference.tiling import TileGrid

    tile = tile_size or model.default_tile_size
    overlap = model.default_overlap(tile) if overlap is None else overlap
    with rasterio.open(test_raster) as src:
        grid = TileGrid(src.height, src.width, tile, min(overlap, tile // 2))
        n_tiles = len(grid)
        dtype = src.dtypes[0]
    rng = np.random.default_rng(0)
    tiles = rng.integers(1, 200, size=(4, model.n_bands, tile, tile)).astype(dtype)
    times = []
    for _ in range(3):  # the first call includes one-off set-up costs; the fastest is the least disturbed
        t0 = time.monotonic()
        model.predict_tiles(tiles)
        times.append(time.monotonic() - t0)
    per_tile = min(times) / 4
    per_chip = per_tile * (settings["chip_size"] / tile) ** 2
    predict = 1.3 * n_tiles * per_tile + 5.0           # stitching, COG and polygons on top of the network
    # Validation runs the PQ metric (post-processing, matching) on top of the forward pass.
    valid = 2.0 * n_valid * per_chip + 5.0
    save = 2.0 * valid + 10.0                           # metrics + sample pictures of the validation chips
    return predict + save + 20.0, valid                 # + evaluation and report


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def _check_settings(s: dict) -> None:
    if s["train_minutes"] is not None and not s["train_minutes"] > 0:
        raise ArgumentError(f"train_minutes must be positive, got {s['train_minutes']}.")
    if not s["total_minutes"] > 0:
        raise ArgumentError(f"total_minutes must be positive, got {s['total_minutes']}.")
    if s["chip_size"] % 16 or s["chip_size"] < 64:
        raise ArgumentError(f"chip_size must be a multiple of 16 and at least 64, got {s['chip_size']}.")
    for key in ("scene_size", "test_size"):
        if s[key] < 2 * s["chip_size"]:
            raise ArgumentError(f"{key}={s[key]} is too small: use at least twice chip_size ({2 * s['chip_size']}).")
    if s["batch_size"] < 1:
        raise ArgumentError(f"batch_size must be >= 1, got {s['batch_size']}.")
    if not s["lr"] > 0:
        raise ArgumentError(f"lr must be positive, got {s['lr']}.")


class _no_fastai_bar:
    """Train without fastai's epoch table (the budget callback prints its own line per epoch)."""

    def __init__(self, learn):
        self.learn = learn

    def __enter__(self):
        from fastai.callback.progress import ProgressCallback

        self.had = any(isinstance(cb, ProgressCallback) for cb in self.learn.cbs)
        if self.had:
            self.learn.remove_cb(ProgressCallback)
        self.logger = self.learn.logger
        self.learn.logger = lambda *a, **k: None
        return self

    def __exit__(self, *exc):
        from fastai.callback.progress import ProgressCallback

        self.learn.logger = self.logger
        if self.had:
            self.learn.add_cb(ProgressCallback())
        return False
