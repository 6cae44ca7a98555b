"""The one-command demo: synthetic scenes -> chips -> training -> whole-scene inference -> PQ -> report.

:func:`run_demo` does the work; ``geomax demo`` only parses arguments and calls it.
Every step goes through the workflow layer (:mod:`geomax.workflows`) with the same
recipe as ``geomax train`` and the toolbox: the training config is resolved by
:func:`geomax.workflows.train.resolve_train_config` from the minutes alone. Training
runs for a wall-clock budget (``TrainConfig.minutes``: the one-cycle schedule is
stretched over it), so the run ends on time on any machine.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import ArgumentError
from .log import get_logger
from .publish import check_replaceable, publish_folder, scratch_folder

log = get_logger(__name__)

__all__ = ["run_demo", "DEMO_SEED", "DEMO_DEFAULTS", "QUICK_DEFAULTS", "demo_train_config"]

#: Seed of the demo's training scene (test scene: seed + 1000); see run_demo.
DEMO_SEED = 11

#: Settings of the full demo (about 15 minutes on 2 CPU cores): the synthetic scenes and their
#: export (``chip_size``: the exported tile; chips overlap by half). The training recipe is
#: not here: it is the :class:`~geomax.config.TrainConfig` every entry point resolves.
DEMO_DEFAULTS: dict[str, Any] = dict(total_minutes=14.0, train_minutes=None, scene_size=1536, test_size=1024,
                                     chip_size=128, bands=4)
#: Settings of ``--quick`` (a few minutes).
QUICK_DEFAULTS: dict[str, Any] = dict(DEMO_DEFAULTS, total_minutes=3.0, scene_size=768, test_size=512)


def demo_train_config(train_minutes: float):
    """The demo's training recipe: :func:`~geomax.workflows.train.resolve_train_config` of the minutes alone."""
    from .workflows.train import resolve_train_config

    return resolve_train_config(minutes=train_minutes)


class _Timer:
    def __init__(self, timings: dict, name: str, verbose: bool):
        self.timings, self.name, self.verbose = timings, name, verbose

    def __enter__(self):
        if self.verbose:
            log.info(f"== {self.name} ...")
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.timings[self.name] = time.monotonic() - self.t0
        if self.verbose and exc[0] is None:
            log.info(f"   done in {self.timings[self.name]:.1f} s")
        return False


def run_demo(
    out_dir: str | os.PathLike,
    quick: bool = False,
    train_minutes: float | None = None,
    total_minutes: float | None = None,
    scene_size: int | None = None,
    test_size: int | None = None,
    chip_size: int | None = None,
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
    chip_size:
        Side of the exported chips (they overlap by half). The training recipe is
        :func:`demo_train_config`, the same as ``geomax train --minutes``.
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
                           chip_size=chip_size, bands=bands).items():
        if value is not None:
            settings[key] = value
    _check_settings(settings)
    out = check_replaceable(out_dir, overwrite, "demo", "demo folder")
    work = scratch_folder(out)  # the run writes here; moved to ``out`` when complete
    try:
        result = _run_demo(work, out, settings, seed, backbone, tile_size, overlap, num_threads, verbose)
        publish_folder(work, out, "demo")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if verbose:
        from .evaluate import format_metrics
        from .models.callbacks import clock

        log.info("\n" + format_metrics(result["metrics"]))
        log.info(f"\nPQ on the test scene: {100 * result['metrics']['all']['pq']:.1f}   "
                 f"total time {clock(result['timings']['total'])}")
        log.info("\nOutputs:")
        for key in ("report", "prediction_raster", "prediction_features", "model", "metrics", "chips",
                    "test_raster", "test_labels"):
            log.info(f"  {key:<20} {result['paths'][key]}")
    return result


def _run_demo(work: Path, out: Path, settings: dict, seed: int, backbone, tile_size, overlap, num_threads,
              verbose: bool) -> dict:
    """The demo's steps, writing under ``work``; the paths reported are those under ``out``."""
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    import torch

    if num_threads:
        torch.set_num_threads(int(num_threads))
    torch.manual_seed(seed)

    from .data.synthetic import CLASS_FIELD, make_scene
    from .evaluate import evaluate_raster
    from .models.callbacks import clock
    from .report import write_demo_report
    from .workflows.export import export
    from .workflows.train import build_model, fit_model, prepare, resolve_train_config

    data_dir = work / "data"
    paths: dict[str, Path] = {
        "train_raster": data_dir / "train_scene.tif", "train_labels": data_dir / "train_labels.gpkg",
        "test_raster": data_dir / "test_scene.tif", "test_labels": data_dir / "test_labels.gpkg",
        "chips": work / "chips", "model": work / "model",
        "prediction_raster": work / "test_panoptic.tif", "prediction_features": work / "test_panoptic.gpkg",
        "metrics": work / "metrics.json", "report": work / "report.html",
    }
    final = {k: str(out / v.relative_to(work)) for k, v in paths.items()}  # where the outputs will be
    with _Timer(timings, "make synthetic scenes", verbose):
        make_scene(paths["train_raster"], paths["train_labels"], size=settings["scene_size"], seed=seed,
                   bands=settings["bands"])
        make_scene(paths["test_raster"], paths["test_labels"], size=settings["test_size"], seed=seed + 1000,
                   bands=settings["bands"])
    with _Timer(timings, "export training chips", verbose):
        export(paths["train_raster"], paths["train_labels"], paths["chips"], class_field=CLASS_FIELD,
               class_table_source="synthetic", tile_size=settings["chip_size"], stride=settings["chip_size"] // 2,
               log=lambda *a, **k: None)
    with _Timer(timings, "prepare data", verbose):
        # batch size, chip size, split: the recipe's (they do not depend on the minutes)
        data = prepare(paths["chips"], resolve_train_config())
        n_train, n_valid = len(data.train_ds), len(data.valid_ds)
    with _Timer(timings, "train", verbose):
        model = build_model(data, backbone=backbone)
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
                log.info(f"   other steps estimated at {reserve:.0f} s: training gets {clock(left)} of the "
                         f"{settings['total_minutes']:g} min")
        else:
            valid_estimate = 0.0
        train_config = demo_train_config(settings["train_minutes"])
        if verbose:
            log.info(f"   {model!r}\n   {n_train} training chips, {n_valid} validation chips, "
                     f"training for {settings['train_minutes']:g} min")
        fit_model(model, train_config, valid_estimate=valid_estimate, log=log.info if verbose else _silent)
        budget = model.last_budget
    with _Timer(timings, "save model", verbose):
        model.save(paths["model"])
    with _Timer(timings, "predict test scene", verbose):
        model.predict_raster(paths["test_raster"], paths["prediction_raster"], out_features=paths["prediction_features"],
                             tile_size=tile_size, overlap=overlap, progress=False)
    with _Timer(timings, "evaluate", verbose):
        metrics = evaluate_raster(paths["prediction_raster"], paths["test_labels"], class_table=model.class_table,
                                  class_field=CLASS_FIELD, valid_raster=paths["test_raster"], progress=False)
    training = {"epochs": budget.epochs_done, "batches": len(budget.batch_losses),
                "seconds": budget.elapsed, "history": list(model.history)}
    timings_before_report = dict(timings)
    with _Timer(timings, "write report", verbose):
        settings_shown = {**settings, "backbone": model.backbone, "seed (train / test scene)": f"{seed} / {seed + 1000}",
                          "training chips / validation chips": f"{n_train} / {n_valid}",
                          "epochs / batches trained": f"{training['epochs']} / {training['batches']}",
                          "torch threads": torch.get_num_threads()}
        files = {k: v for k, v in final.items() if k != "report"}
        write_demo_report(paths["report"], metrics, model.class_table, paths["test_raster"],
                          paths["prediction_raster"], paths["test_labels"], history=training["history"],
                          batch_losses=budget.batch_losses, epoch_ends=budget.epoch_ends, timings=timings_before_report, settings=settings_shown,
                          files=files)
    timings["total"] = time.monotonic() - t_start
    result = {"paths": final, "metrics": metrics, "timings": timings,
              "settings": {**settings, "backbone": model.backbone, "seed": seed},
              "train_config": train_config.to_dict(), "training": training}
    paths["metrics"].write_text(json.dumps(result, indent=2, default=_json_default))
    return result


def _estimate_remaining_steps(model, test_raster, settings: dict, n_valid: int, tile_size: int | None,
                              overlap: int | None) -> tuple[float, float]:
    """Seconds the steps after training will take (predicting the test scene, saving, evaluating, the
    report), and the seconds of one validation pass.

    Times the (untrained) network on a batch of tiles of the size ``predict_raster``
    will use; the cost of a forward pass does not depend on the weights.
    """
    import numpy as np
    import rasterio

    from .inference.tiling import TileGrid

    tiling = model.tiling(tile_size=tile_size, overlap=overlap)
    tile, overlap = int(tiling.tile_size), int(tiling.overlap)
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


def _silent(*args, **kwargs) -> None:
    """A log function that drops its messages."""
