"""The one loader of saved models: weights and :class:`~geomax.models.state.ModelState` from a package.

``MaXDeepLab.from_model``, :func:`geomax.workflows.predict.predict_raster` (model paths),
``evaluate`` and the Dask workers all come through here. :func:`load_predictor` builds
the light inference object (network + post-processor, no fastai ``Learner``). This module,
the network, the post-processor and the predictor import no fastai: a saved model predicts
where only torch, rasterio and geopandas are installed.
"""
from __future__ import annotations

import os
from pathlib import Path

from .package import read_model_package
from .state import ModelState

__all__ = ["load_model_state", "load_predictor", "build_network"]


def load_model_state(path: str | os.PathLike) -> tuple[ModelState, dict]:
    """``(ModelState, state dict)`` of a model folder, its ``.emd`` or its ``.dlpk``.

    Raises
    ------
    ModelError
        Missing, corrupt or incomplete package.
    ArgumentError
        A saved config holds an unknown key.
    """
    emd, state_dict = read_model_package(Path(path))
    return ModelState.from_emd(emd, source=str(path)), state_dict


def load_predictor(path: str | os.PathLike, **postprocess_options):
    """A ready :class:`~geomax.models.predictor.PanopticPredictor` for a saved model.

    Works without fastai: ``.predict(path_or_array)`` and ``.predict_tiles(tiles, valid)``.

    Parameters
    ----------
    path:
        Model folder, ``.emd`` or ``.dlpk``.
    **postprocess_options:
        Settings of :class:`~geomax.config.PostprocessConfig` overriding the saved ones.
    """
    import torch

    from .predictor import PanopticPredictor

    state, state_dict = load_model_state(path)
    if postprocess_options:
        state = state.with_options(postprocess=state.postprocess.replace(**postprocess_options))
    network = build_network(state, state_dict)
    if torch.cuda.is_available():
        network.cuda()
    return PanopticPredictor(network, state)


def build_network(state: ModelState, state_dict: dict):
    """The saved architecture of ``state`` rebuilt and loaded with ``state_dict``."""
    from .maxdeeplab import build_from_config

    network = build_from_config(state.network_config)
    network.load_state_dict(state_dict)
    return network
