"""Predict: a model (path or loaded predictor) over a whole raster -> panoptic COG (+ features).

Does not import the learner: :meth:`MaXDeepLab.predict_raster` calls this module with
its predictor, and model paths load through :func:`geomax.models.loading.load_predictor`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from ..config import TilingConfig
from ..errors import ModelError

__all__ = ["load_predictor", "predict_raster", "predict_raster_distributed"]


def load_predictor(model, **postprocess_options):
    """A TilePredictor from a model path (folder / ``.emd`` / ``.dlpk``), or ``model`` itself."""
    if isinstance(model, (str, os.PathLike)):
        from ..models.loading import load_predictor as load

        path = Path(model)
        if not path.exists():
            raise ModelError(f"Model '{path}' does not exist. Pass a model folder, .emd or .dlpk file, "
                             "or a model object.")
        return load(path, **postprocess_options)
    return model


def predict_raster(model, in_raster, out_raster, out_features=None, *, tiling: TilingConfig | None = None,
                   tile_size: int | None = None, overlap: int | None = None, batch_size: int | None = None,
                   **kwargs):
    """Panoptic segmentation of a whole raster; see :func:`geomax.inference.predict_raster.predict_raster`.

    ``model`` is a model path or a TilePredictor (a loaded ``MaXDeepLab`` passes its
    ``predictor``). Tiling defaults: ``tiling`` (a model's saved
    :class:`~geomax.config.TilingConfig`), resolved from the model's chip size.
    Outputs are checked before a model path is loaded.
    """
    from ..inference.predict_raster import predict_raster as run

    overwrite = kwargs.get("overwrite", False)
    for out in (out_raster, out_features):
        if out is not None and Path(out).exists() and not overwrite:
            from ..errors import OutputExistsError

            raise OutputExistsError(f"'{out}' already exists. Pass overwrite=True (--overwrite) to replace it, "
                                    "or choose another name.")
    predictor = load_predictor(model)
    from ..models.predictor import PanopticPredictor

    if tiling is None and isinstance(predictor, PanopticPredictor):
        tiling = predictor.state.tiling
    return run(predictor, in_raster, out_raster, out_features, tiling=tiling, tile_size=tile_size,
               overlap=overlap, batch_size=batch_size, **kwargs)


def predict_raster_distributed(model, in_rasters, out_rasters, out_features=None, **kwargs):
    """:func:`geomax.inference.distributed.predict_raster_distributed` with model paths loaded on each worker."""
    from ..inference.distributed import predict_raster_distributed as run

    if isinstance(model, (str, os.PathLike)):
        from ..models.loading import load_predictor as load

        path = Path(model).resolve()
        if not path.exists():
            raise ModelError(f"Model '{path}' does not exist. Pass a model folder, .emd or .dlpk file.")
        model = functools.partial(load, str(path))
    return run(model, in_rasters, out_rasters, out_features, **kwargs)
