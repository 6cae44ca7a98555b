"""Evaluate: panoptic quality of a panoptic raster, or of a model run on an image, against reference labels.

The raster and metrics functions live in :mod:`geomax.evaluate`
(:func:`~geomax.evaluate.evaluate_raster`, :func:`~geomax.evaluate.format_metrics`); this
module adds running a model first and writing the metrics file.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..config import TilingConfig
from ..data.mosaic import Mosaic, mosaic_inputs
from ..data.sources import check_raster, local_path
from ..errors import ArgumentError, DataError, OutputError
from ..evaluate import evaluate_raster
from ..publish import check_outputs_apart, check_replaceable, publish_files, scratch_folder

__all__ = ["evaluate", "evaluate_model", "write_metrics_json"]

#: Evaluation window side, :func:`geomax.evaluate.evaluate_raster`'s default.
WINDOW_SIZE: int = inspect.signature(evaluate_raster).parameters["window_size"].default


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> Path:
    """Write metrics (numpy scalars included) as JSON, in a scratch folder beside ``path``, moved in when complete."""
    path = Path(path)
    work = scratch_folder(path)
    try:
        partial = work / path.name
        partial.write_text(json.dumps(metrics, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        publish_files([(partial, path)])
    except OSError as exc:
        raise OutputError(f"Cannot write the metrics file '{path}': {exc.strerror or exc}. Choose a writable "
                          "place.") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def evaluate_model(model, in_raster: str | os.PathLike | Sequence[str | os.PathLike], reference, *,
                   class_field: str | None = None,
                   reference_instances: str | os.PathLike | None = None, class_table_source: Any = None,
                   out_raster: str | os.PathLike | None = None, tiling: TilingConfig | None = None,
                   tile_size: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                   bands: Sequence[int] | None = None, window_size: int = WINDOW_SIZE, progress: bool = True,
                   **postprocess_options) -> dict:
    """Run a model on an image (:func:`geomax.workflows.predict.predict_raster`), then evaluate the result.

    Parameters
    ----------
    model:
        A saved model (folder, ``.emd``, ``.dlpk``) or a loaded TilePredictor.
    in_raster:
        The image to segment (a local path or any name GDAL opens: a URL, ``/vsizip/...``; or
        a folder or list of rasters, segmented and evaluated as one mosaic); its no-data
        pixels are left out of the evaluation.
    reference:
        Reference labels, as for :func:`geomax.evaluate.evaluate_raster`.
    class_table_source:
        The classes (default: the model's).
    out_raster:
        Where to keep the panoptic GeoTIFF; ``None``: a temporary file, removed afterwards.
    tiling, tile_size, overlap, batch_size, bands, **postprocess_options:
        As :func:`geomax.workflows.predict.predict_raster` (default: the model's tiling).
    class_field, reference_instances, window_size, progress:
        As :func:`geomax.evaluate.evaluate_raster`.

    Returns
    -------
    dict
        The metrics of :func:`~geomax.evaluate.evaluate_raster`.
    """
    from .predict import load_predictor, predict_raster

    parts = mosaic_inputs(in_raster)
    mosaic = Mosaic.of(parts) if parts is not None and len(parts) > 1 else None  # checked before the model loads
    image: Any = parts[0] if parts else in_raster  # one raster (a list or folder of one included)
    if mosaic is None:
        check_raster(image, "input raster")
    predictor = load_predictor(model)
    with tempfile.TemporaryDirectory(prefix="geomax_eval_") as tmp:
        target = Path(out_raster) if out_raster is not None else Path(tmp) / "prediction.tif"
        predict_raster(predictor, in_raster, target, tiling=tiling, tile_size=tile_size, overlap=overlap,
                       batch_size=batch_size, bands=bands, progress=progress, **postprocess_options)
        if mosaic is not None:  # the no-data pixels come from the image: here a VRT of the mosaic
            image = mosaic.write_vrt(Path(tmp) / "mosaic.vrt")
        return evaluate_raster(target, reference,
                               class_table=class_table_source if class_table_source is not None
                               else predictor.class_table,
                               class_field=class_field, reference_instances=reference_instances,
                               valid_raster=image, window_size=window_size, progress=progress)


def evaluate(prediction, reference, *, model=None, image: str | os.PathLike | None = None,
             class_table_source: Any = None, class_field: str | None = None,
             reference_instances: str | os.PathLike | None = None, tiling: TilingConfig | None = None,
             tile_size: int | None = None, window_size: int = WINDOW_SIZE, out_json: str | os.PathLike | None = None,
             overwrite: bool = False, progress: bool = True) -> dict:
    """Panoptic quality (PQ, SQ, RQ: all / things / stuff / per class) against reference labels.

    Parameters
    ----------
    prediction:
        A panoptic GeoTIFF (band 1 class Value, band 2 instance id); with ``model``, the
        input image the model runs on first (also a folder or list of rasters: one mosaic).
        A local path or any name GDAL opens (``https://`` / ``s3://`` URL, ``/vsizip/...``).
    reference:
        Reference labels: a vector file with a class field, or a raster on the
        prediction's grid (see :func:`geomax.evaluate.evaluate_raster`).
    model:
        A saved model or a loaded TilePredictor to run on ``prediction`` first.
    image:
        Without ``model``: the image the prediction was made from (its no-data pixels are
        left out). With ``model`` the input image is ``prediction`` itself.
    class_table_source:
        The classes (default: those stored in the panoptic raster, or the model's).
    class_field, reference_instances, window_size, progress:
        As :func:`geomax.evaluate.evaluate_raster`.
    tiling, tile_size:
        Tiling of the model run (default: the model's).
    out_json:
        Also write the metrics to this JSON file.
    overwrite:
        Replace an existing ``out_json``.

    Returns
    -------
    dict
        The metrics.

    Raises
    ------
    OutputExistsError
        ``out_json`` exists and ``overwrite`` is False (checked before any work).
    DataError
        The prediction or the reference does not exist; see also
        :func:`~geomax.evaluate.evaluate_raster`.
    ArgumentError
        ``image`` given with ``model``.
    """
    if out_json is not None:
        # with a model, prediction may be a list of rasters (one mosaic): each of them is an input too
        listed = {f"input raster {i}": p for i, p in enumerate(prediction, start=1)
                  if isinstance(p, (str, os.PathLike))} if isinstance(prediction, (list, tuple)) else {}
        check_outputs_apart({**listed,
                             "prediction": prediction if isinstance(prediction, (str, os.PathLike)) else None,
                             "reference": reference if isinstance(reference, (str, os.PathLike)) else None,
                             "reference instances": reference_instances, "image": image,
                             "model": model if isinstance(model, (str, os.PathLike)) else None},
                            {"metrics file (--json)": out_json})
        check_replaceable(out_json, overwrite, None, "metrics file (--json)")
    if model is not None and image is not None:
        raise ArgumentError("With a model, the prediction argument is the input image; do not give image as well.")
    if model is None:
        check_raster(prediction, "panoptic raster")  # a missing file, or a URL / GDAL name that does not open
    elif mosaic_inputs(prediction) is None:
        check_raster(prediction, "input raster")  # (a folder or list of rasters: checked by evaluate_model)
    reference_path = local_path(reference)
    if reference_path is not None and not reference_path.exists():
        raise DataError(f"Reference labels '{reference}' does not exist. Check the path (relative paths start from "
                        "the current folder).")
    if model is not None:
        metrics = evaluate_model(model, prediction, reference, class_field=class_field,
                                 reference_instances=reference_instances, class_table_source=class_table_source,
                                 tiling=tiling, tile_size=tile_size, window_size=window_size, progress=progress)
    else:
        metrics = evaluate_raster(prediction, reference, class_table=class_table_source, class_field=class_field,
                                  reference_instances=reference_instances, valid_raster=image,
                                  window_size=window_size, progress=progress)
    if out_json is not None:
        write_metrics_json(metrics, out_json)
    return metrics
