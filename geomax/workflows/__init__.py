"""The workflow layer: export, train, predict and evaluate, each written once.

=======================  ==================================================================
:mod:`.export`           ``export``: raster + labels -> training chips
:mod:`.train`            ``resolve_train_config`` (the one recipe), ``prepare``,
                         ``build_model``, ``fit_model``, ``train`` -> ``TrainResult``
:mod:`.predict`          ``load_predictor``, ``predict_raster``, ``predict_raster_distributed``
                         (model paths or loaded predictors)
:mod:`.evaluate`         ``evaluate`` (a panoptic raster, or a model run on an image first),
                         ``evaluate_model``, ``write_metrics_json``
:mod:`.tools`            the declarative table of tools and parameters the ArcGIS toolbox,
                         its scripts and the ``geomax`` command are generated from
:mod:`.bridge`           ``python -m geomax.workflows.bridge describe | run TOOL``: the tool table
                         as JSON and a tool run as JSON lines, for ``geomax.pyt`` in ArcGIS Pro
=======================  ==================================================================

The ``geomax`` command, the toolbox, the DDP launcher, the demo, the examples and the
benchmarks call these functions with the typed configs of :mod:`geomax.config`; none
re-implements a step.

Submodules load on first use: importing one does not import the others. The functions
named like their module (``export``, ``train``, ``evaluate``) are reached through the
module (``from geomax.workflows.train import train``), so ``geomax.workflows.train`` is
always the module; the other public names are also attributes of this package.
"""
__all__ = ["resolve_train_config", "build_model", "fit_model", "TrainResult", "load_predictor", "predict_raster",
           "predict_raster_distributed", "evaluate_model", "TOOLS", "run_tool"]

_LAZY = {
    "resolve_train_config": ("geomax.workflows.train", "resolve_train_config"),
    "build_model": ("geomax.workflows.train", "build_model"),
    "fit_model": ("geomax.workflows.train", "fit_model"),
    "TrainResult": ("geomax.workflows.train", "TrainResult"),
    "load_predictor": ("geomax.workflows.predict", "load_predictor"),
    "predict_raster": ("geomax.workflows.predict", "predict_raster"),
    "predict_raster_distributed": ("geomax.workflows.predict", "predict_raster_distributed"),
    "evaluate_model": ("geomax.workflows.evaluate", "evaluate_model"),
    "TOOLS": ("geomax.workflows.tools", "TOOLS"),
    "run_tool": ("geomax.workflows.tools", "run_tool"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geomax.workflows' has no attribute {name!r}")
