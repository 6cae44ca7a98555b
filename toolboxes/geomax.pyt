# -*- coding: utf-8 -*-
"""geomax Python toolbox for ArcGIS Pro: panoptic segmentation with MaX-DeepLab.

Tools: Export Training Data For Deep Learning (Panoptic), Train Deep Learning
Model (MaXDeepLab), Panoptic Segmentation Using Deep Learning, Compute Panoptic
Accuracy. Their parameters and the workflow calls they make are defined once in
``geomax.workflows.tools`` (re-exported by ``_toolspec.py`` beside this file), which
the command-line tool scripts and the ``geomax`` command share.
``arcpy`` is imported only inside the methods ArcGIS calls, so this file also
loads (for tests) where ArcGIS is not installed. Install geomax into the ArcGIS
Pro Python environment (``pip install geomax``) before adding the toolbox.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _toolspec  # noqa: E402


def _make_parameter(arcpy, spec):
    """An ``arcpy.Parameter`` from a parameter definition."""
    param = arcpy.Parameter(
        name=spec.name,
        displayName=spec.label,
        datatype=list(spec.datatype) if isinstance(spec.datatype, tuple) else spec.datatype,
        parameterType="Required" if spec.required else "Optional",
        direction=spec.direction,
        multiValue=spec.multivalue,
    )
    if spec.default is not None:
        param.value = spec.default
    choices = spec.choices or (tuple(spec.choices_of()) if spec.choices_of else ())
    if choices:
        param.filter.type = "ValueList"
        param.filter.list = list(choices)
    if spec.depends_on:
        param.parameterDependencies = [spec.depends_on]
    param.description = spec.help
    return param


def _make_tool(spec):
    """A toolbox tool class (the shape ArcGIS expects) for one tool definition."""

    class _Tool(object):
        def __init__(self):
            self.label = spec.label
            self.description = spec.description
            self.category = spec.category
            self.canRunInBackground = False

        def getParameterInfo(self):
            import arcpy

            return [_make_parameter(arcpy, p) for p in spec.params]

        def isLicensed(self):
            return True

        def updateParameters(self, parameters):
            return

        def updateMessages(self, parameters):
            return

        def execute(self, parameters, messages):
            import arcpy
            from geomax.errors import GeomaxError

            values = {p.name: p.valueAsText for p in parameters}
            try:
                _toolspec.run_tool(spec.name, values, log=messages.addMessage)
            except GeomaxError as exc:
                messages.addErrorMessage(str(exc))
                raise arcpy.ExecuteError(str(exc))

    _Tool.__name__ = spec.name
    _Tool.__qualname__ = spec.name
    return _Tool


ExportTrainingDataForDeepLearning = _make_tool(_toolspec.TOOLS["ExportTrainingDataForDeepLearning"])
TrainDeepLearningModel = _make_tool(_toolspec.TOOLS["TrainDeepLearningModel"])
PanopticSegmentationUsingDeepLearning = _make_tool(_toolspec.TOOLS["PanopticSegmentationUsingDeepLearning"])
ComputePanopticAccuracy = _make_tool(_toolspec.TOOLS["ComputePanopticAccuracy"])


class Toolbox(object):
    def __init__(self):
        self.label = "geomax"
        self.alias = "geomax"
        self.tools = [ExportTrainingDataForDeepLearning, TrainDeepLearningModel,
                      PanopticSegmentationUsingDeepLearning, ComputePanopticAccuracy]
