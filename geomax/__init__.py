"""geomax: panoptic segmentation of satellite and aerial imagery with MaX-DeepLab.

Public API (arcgis.learn style)::

    from geomax import prepare_data, MaXDeepLab, export_training_data, predict_raster, load_predictor

``predict_raster`` and ``load_predictor`` (a saved model's predictor: ``.predict(image)``) need no fastai.
"""
from ._version import __version__
from .errors import GeomaxError

__all__ = ["__version__", "GeomaxError", "prepare_data", "export_training_data", "MaXDeepLab", "predict_raster",
           "load_predictor"]

# The heavy parts (torch, fastai, rasterio) load on first use, so `import geomax` stays quick.
_LAZY = {
    "prepare_data": ("geomax.data.prepare", "prepare_data"),
    "export_training_data": ("geomax.data.export", "export_training_data"),
    "MaXDeepLab": ("geomax.models.learner", "MaXDeepLab"),
    "predict_raster": ("geomax.workflows.predict", "predict_raster"),
    "load_predictor": ("geomax.workflows.predict", "load_predictor"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geomax' has no attribute {name!r}")
