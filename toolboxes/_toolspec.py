"""The geomax geoprocessing tools, for the tool scripts beside this file.

The table of tools and parameters lives in the package, :mod:`geomax.workflows.tools`,
where the ``geomax`` command is generated from it too; this module only re-exports it
so the scripts import it from their own folder (they run with a Python where geomax is
installed). ``geomax.pyt`` does not import it: inside ArcGIS Pro it reads the same table
from geomax's own environment through :mod:`geomax.workflows.bridge`. Nothing here
imports ``arcpy``.
"""
from geomax.workflows.tools import (
    TOOLS,
    Param,
    Tool,
    build_argparser,
    convert_value,
    convert_values,
    run_tool,
    script_main,
)

__all__ = ["Param", "Tool", "TOOLS", "convert_value", "convert_values", "run_tool", "build_argparser", "script_main"]
