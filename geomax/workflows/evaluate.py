"""Evaluate: panoptic quality of a panoptic raster, or of a model run on an image, against reference labels."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..config import TilingConfig
from ..errors import DataError, OutputExistsError

__all__ = ["evaluate", "evaluate_model", "write_metrics_json"]


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> Path:
    """Write metrics (numpy scalars included) as JSON."""
    path = Path(path)
    path.write_text(json.dumps(metrics, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    return path


def evaluate_model(model, in_raster, reference, *, class_field: str | None = None, reference_instances=None,
                   out_raster=None, tiling: TilingConfig | None = None, tile_size: int | None = None,
                   overlap: int | None = None, window_size: int = 4096, progress: bool = True,
                   **postprocess_options) -> dict:
    """Run a model on a raster (:func:`geomax.workflows.predict.predict_raster`), then evaluate the result.

    Parameters
    ----------
    model:
        A model path (folder, ``.emd``, ``.dlpk``) or a TilePredictor.
    in_raster:
        The image to segment.
    reference:
        Reference labels, as for :func:`geomax.evaluate.evaluate_raster`.
    out_raster:
        Where to keep the panoptic GeoTIFF; ``None``: a temporary file, removed afterwards.
    tiling, tile_size, overlap:
        Tiling (default: the model's).
    class_field, reference_instances, window_size, progress:
        As for :func:`geomax.evaluate.evaluate_raster`.
    """
    from ..evaluate import evaluate_raster
    from .predict import load_predictor, predict_raster

    in_raster = Path(in_raster)
    if not in_raster.exists():
        raise DataError(f"The input raster '{in_raster}' does not exist.")
    predictor = load_predictor(model, **postprocess_options)
    with tempfile.TemporaryDirectory(prefix="geomax_eval_") as tmp:
        target = Path(out_raster) if out_raster is not None else Path(tmp) / "prediction.tif"
        predict_raster(predictor, in_raster, target, tiling=tiling, tile_size=tile_size, overlap=overlap,
                       progress=progress)
        return evaluate_raster(target, reference, class_table=predictor.class_table, class_field=class_field,
                               reference_instances=reference_instances, valid_raster=in_raster,
                               window_size=window_size, progress=progress)


def evaluate(prediction, reference, *, model=None, image=None, class_table_source: Any = None,
             class_field: str | None = None, reference_instances=None, tile_size: int | None = None,
             window_size: int = 4096, out_json=None, overwrite: bool = False, progress: bool = True) -> dict:
    """Panoptic quality of ``prediction`` (a panoptic raster) against ``reference``.

    With ``model``, ``prediction`` is the input image and the model runs on it first.
    ``out_json`` (refused when it exists, unless ``overwrite``) receives the metrics.
    """
    from ..evaluate import evaluate_raster

    if out_json is not None and Path(out_json).exists() and not overwrite:
        raise OutputExistsError(f"'{out_json}' already exists; pass overwrite (--overwrite) to replace it.")
    for path, what in ((prediction, "Input raster" if model else "Panoptic raster"), (reference, "Reference labels")):
        if isinstance(path, (str, os.PathLike)) and not Path(path).exists():
            raise DataError(f"{what} '{path}' does not exist.")
    if model is not None:
        metrics = evaluate_model(model, prediction, reference, class_field=class_field,
                                 reference_instances=reference_instances, tile_size=tile_size,
                                 window_size=window_size, progress=progress)
    else:
        metrics = evaluate_raster(prediction, reference, class_table=class_table_source, class_field=class_field,
                                  reference_instances=reference_instances, valid_raster=image,
                                  window_size=window_size, progress=progress)
    if out_json is not None:
        write_metrics_json(metrics, out_json)
    return metrics
