"""The geomax geoprocessing tools, for the tool scripts and ``geomax.pyt`` beside this file.

The table of tools and parameters lives in the package, :mod:`geomax.workflows.tools`,
where the ``geomax`` command is generated from it too; this module only re-exports it
so the scripts and the toolbox import it from their own folder. Nothing here imports
``arcpy``.
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
