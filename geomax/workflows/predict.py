"""Predict: a model (path or loaded predictor) over whole rasters -> panoptic COGs (+ features).

The inference functions of :mod:`geomax.inference` take loaded
:class:`~geomax.inference.predictor.TilePredictor` objects only; this layer also takes
the path of a saved model and loads it through
:func:`geomax.models.loading.load_predictor`. It does not import the learner:
:meth:`MaXDeepLab.predict_raster <geomax.models.learner.MaXDeepLab.predict_raster>` calls
:func:`predict_raster` with its own predictor.

Post-processing settings (``class_threshold=0.6``...) travel as per-call options of
``predict_tiles`` for a loaded predictor and a model path alike, so both give the same
result.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

from ..config import TilingConfig

__all__ = ["load_predictor", "predict_raster", "predict_raster_distributed"]


def load_predictor(model, **postprocess_options):
    """A TilePredictor for ``model``: a saved model path is loaded, a predictor object is returned as is.

    Parameters
    ----------
    model:
        A model folder, ``.emd`` or ``.dlpk``; or a loaded TilePredictor (a ``MaXDeepLab``,
        a :class:`~geomax.models.predictor.PanopticPredictor`...).
    **postprocess_options:
        For a path: :class:`~geomax.config.PostprocessConfig` settings replacing the saved
        ones. Not accepted with a predictor object (pass them per call instead).

    Raises
    ------
    ModelError
        The path does not exist or is not a model package.
    ArgumentError
        An unknown post-processing setting, or settings given with a predictor object.
    """
    if isinstance(model, (str, os.PathLike)):
        from ..models.loading import load_predictor as load

        return load(Path(model), **postprocess_options)
    if postprocess_options:
        from ..errors import ArgumentError

        raise ArgumentError(f"Post-processing settings {sorted(postprocess_options)} apply when a model is "
                            "loaded from a path; pass them to predict_tiles / predict_raster for a loaded model.")
    return model


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def predict_raster(model, in_raster: str | os.PathLike | Sequence[str | os.PathLike], out_raster: str | os.PathLike,
                   out_features: str | os.PathLike | None = None, *, tiling: TilingConfig | None = None,
                   tile_size: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                   merge_iou: float | None = None, bands: Sequence[int] | None = None,
                   simplify_tolerance: float | None = None, overwrite: bool = False, progress: bool = True,
                   mixed_precision: str | None = None, **postprocess_options):
    """Panoptic segmentation of a whole raster to a panoptic COG and optional features.

    Parameters
    ----------
    model:
        A saved model (folder, ``.emd``, ``.dlpk``) or a loaded TilePredictor.
    in_raster:
        The input: a local raster, or any name GDAL opens (``https://`` / ``s3://`` /
        ``gs://`` / ``az://`` URLs, read by windows; ``/vsizip/...`` and other ``/vsi`` names;
        subdataset strings such as ``NETCDF:"f.nc":var``); or a folder of rasters or a list
        of rasters, predicted as one mosaic (see
        :func:`geomax.inference.predict_raster.predict_raster`).
    out_raster, out_features:
        Output GeoTIFF and optional vector layer (see
        :func:`geomax.inference.predict_raster.predict_raster`).
    tiling:
        Base tiling settings; ``None``: the model's saved :class:`~geomax.config.TilingConfig`
        (tiles of the training chip size, overlap a quarter of the tile).
    tile_size, overlap, batch_size, merge_iou:
        Overrides of ``tiling`` (``None``: not given).
    bands, simplify_tolerance, overwrite, progress:
        As :func:`geomax.inference.predict_raster.predict_raster`.
    mixed_precision:
        ``"auto"`` or ``"off"`` (float32) for this run, for a predictor that has the setting
        (:mod:`geomax.models.precision`); ``None``: the predictor's own (``"auto"``).
    **postprocess_options:
        :class:`~geomax.config.PostprocessConfig` settings for this run (``None`` values
        are ignored).

    Returns
    -------
    RasterPrediction

    Raises
    ------
    DataError
        The input raster does not exist or GDAL cannot open it (an unreachable URL...), or the
        rasters of a mosaic do not fit together. Checked, with the output names, before a
        model path is loaded.
    OutputExistsError
        An output exists and ``overwrite`` is False.
    ModelError, ArgumentError, InputMismatchError
        As :func:`geomax.inference.predict_raster.predict_raster`.
    """
    from ..inference.job import RasterJob
    from ..inference.predict_raster import predict_raster as run

    job = RasterJob(in_raster, out_raster, out_features, overwrite=overwrite)  # checks the output names
    if isinstance(model, (str, os.PathLike)):
        from ..publish import check_outputs_apart

        check_outputs_apart({"model": model}, {"output raster": out_raster, "output features": out_features})
    if mixed_precision is not None:
        from ..models.precision import check_mode

        check_mode(mixed_precision)
    job.check_input()  # a missing or unreadable input (or a mosaic that does not fit) before a model is loaded
    predictor = load_predictor(model)
    before = getattr(predictor, "mixed_precision", None)
    if mixed_precision is not None and before is not None:
        predictor.mixed_precision = mixed_precision  # for this run only: restored below
    try:
        return run(predictor, in_raster, out_raster, out_features,
                   tiling=tiling, tile_size=tile_size,
                   overlap=overlap, batch_size=batch_size, merge_iou=merge_iou, bands=bands,
                   simplify_tolerance=simplify_tolerance, overwrite=overwrite, progress=progress,
                   **_given(postprocess_options))
    finally:
        if before is not None:
            predictor.mixed_precision = before


def predict_raster_distributed(model, in_rasters, out_rasters, out_features=None, *,
                               tiling: TilingConfig | None = None, tile_size: int | None = None,
                               overlap: int | None = None, batch_size: int | None = None,
                               block_size: int | None = None, merge_iou: float | None = None,
                               bands: Sequence[int] | None = None, simplify_tolerance: float | None = None,
                               overwrite: bool = False, progress: bool = True, client=None,
                               resources: dict | None = None, max_blocks_in_flight: int | None = None,
                               **postprocess_options):
    """Panoptic segmentation of one or many rasters on a Dask cluster.

    Parameters
    ----------
    model:
        A saved model (folder, ``.emd``, ``.dlpk``): each worker loads it from the path
        (``functools.partial(geomax.models.loading.load_predictor, path)``), so the path
        must be readable there; or a loaded TilePredictor, or a zero-argument factory of
        one. Without ``tiling`` the model's saved tiling is the base (its
        ``saved_tiling``), as in :func:`predict_raster`.
    **postprocess_options:
        :class:`~geomax.config.PostprocessConfig` settings for this run.

    The other arguments are those of
    :func:`geomax.inference.distributed.predict_raster_distributed`.

    Raises
    ------
    ModelError
        The model path does not exist.
    """
    from ..inference.distributed import predict_raster_distributed as run

    predictor = model
    if isinstance(model, (str, os.PathLike)):
        from ..errors import ModelError
        from ..models.loading import load_predictor as load

        path = Path(model).resolve()
        if not path.exists():
            raise ModelError(f"Model '{path}' does not exist. Give the model folder, its .emd or its .dlpk.")
        predictor = functools.partial(load, str(path))
    return run(predictor, in_rasters, out_rasters, out_features, tiling=tiling, tile_size=tile_size,
               overlap=overlap, batch_size=batch_size, block_size=block_size, merge_iou=merge_iou, bands=bands,
               simplify_tolerance=simplify_tolerance, overwrite=overwrite, progress=progress, client=client,
               resources=resources, max_blocks_in_flight=max_blocks_in_flight, **_given(postprocess_options))
