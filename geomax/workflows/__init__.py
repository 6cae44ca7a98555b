"""The workflow layer: export, train, predict and evaluate, each written once.

The ``geomax`` command, the toolbox scripts and ``.pyt``, the DDP launcher, the demo,
the examples and the benchmarks call these functions with the typed configs of
:mod:`geomax.config`; none re-implements a step. Submodules load on first use (a
submodule never imports the others through this package).
"""
__all__ = ["export", "train", "predict_raster", "predict_raster_distributed", "evaluate", "resolve_train_config"]

_LAZY = {
    "export": ("geomax.workflows.export", "export"),
    "train": ("geomax.workflows.train", "train"),
    "resolve_train_config": ("geomax.workflows.train", "resolve_train_config"),
    "predict_raster": ("geomax.workflows.predict", "predict_raster"),
    "predict_raster_distributed": ("geomax.workflows.predict", "predict_raster_distributed"),
    "evaluate": ("geomax.workflows.evaluate", "evaluate"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geomax.workflows' has no attribute {name!r}")
