"""Definitions of the geomax geoprocessing tools, shared by the tool scripts and ``geomax.pyt``.

One place says, for every tool, its parameters (name, label, ArcGIS data type,
direction, default, choices) and how their values map to the library call. The
plain-Python scripts (``ExportTrainingDataForDeepLearning.py`` ...) build their
argparse parser from it, and the ArcGIS Python toolbox builds its
``arcpy.Parameter`` objects from it; both pass the values as text (as ArcGIS's
``valueAsText`` does) to :func:`run_tool`, so both run exactly the same code.
Nothing here imports ``arcpy``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from geomax.config import TilingConfig, TrainConfig, default_of

__all__ = ["Param", "Tool", "TOOLS", "convert_value", "convert_values", "run_tool", "build_argparser", "script_main"]


@dataclass(frozen=True)
class Param:
    """One tool parameter.

    Attributes
    ----------
    name:
        Parameter name (ArcGIS ``name``; ``--name`` on the command line).
    label:
        Display name in ArcGIS.
    datatype:
        ArcGIS data type (``"DERasterDataset"``, ``"DEFeatureClass"``, ``"DEFolder"``,
        ``"DEFile"``, ``"GPString"``, ``"GPLong"``, ``"GPDouble"``, ``"GPBoolean"``,
        ``"Field"``), or a list of them.
    kind:
        Python type of the value: ``"path"``, ``"str"``, ``"int"``, ``"float"``, ``"bool"``.
    required:
        ``True``: a required parameter (positional on the command line).
    direction:
        ``"Input"`` or ``"Output"``.
    default:
        Default value (Python value).
    multivalue:
        A list of values (``;``-separated in ArcGIS).
    choices:
        Allowed values (ArcGIS value list filter).
    help:
        Description.
    depends_on:
        Name of the parameter a ``Field`` parameter takes its fields from.
    """

    name: str
    label: str
    datatype: str | tuple[str, ...]
    kind: str
    help: str
    required: bool = False
    direction: str = "Input"
    default: Any = None
    multivalue: bool = False
    choices: tuple = ()
    depends_on: str | None = None


@dataclass(frozen=True)
class Tool:
    """A geoprocessing tool: parameters and the library call they map to."""

    name: str
    label: str
    description: str
    params: tuple[Param, ...]
    run: Callable[[dict], Any] = field(repr=False)
    category: str = "Deep Learning"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


_TRUE = {"true", "1", "yes", "y", "on", "checked"}
_FALSE = {"false", "0", "no", "n", "off", "unchecked", ""}


def convert_value(param: Param, raw) -> Any:
    """Python value of a parameter from its text (ArcGIS ``valueAsText``) or argparse value.

    Empty text or ``None`` gives the default. Multivalue text is split on ``;``.

    Raises
    ------
    geomax.errors.ArgumentError
        The text is not a valid value of the parameter.
    """
    from geomax.errors import ArgumentError

    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "#")):
        if param.required:
            raise ArgumentError(f"Parameter '{param.label}' ({param.name}) is required.")
        return param.default
    if param.multivalue:
        items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(";")]
        items = [s.strip().strip("'\"") if isinstance(s, str) else s for s in items]
        items = [s for s in items if s != ""]
        return [_convert_one(param, s) for s in items] or param.default
    return _convert_one(param, raw)


def _convert_one(param: Param, raw) -> Any:
    from geomax.errors import ArgumentError

    text = str(raw).strip()
    try:
        if param.kind == "int":
            value: Any = int(float(text)) if float(text) == int(float(text)) else None
            if value is None:
                raise ValueError
        elif param.kind == "float":
            value = float(text)
        elif param.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            value = text.lower() in _TRUE
        else:
            value = text
    except ValueError:
        raise ArgumentError(f"Parameter '{param.label}' ({param.name}) expects a {param.kind} value, got '{text}'.")
    if param.choices and value not in param.choices:
        raise ArgumentError(f"Parameter '{param.label}' ({param.name}) must be one of {list(param.choices)}, "
                            f"got '{value}'.")
    return value


def convert_values(tool: Tool, raw: dict) -> dict:
    """Convert every parameter of ``tool`` from text; unknown names raise ``ArgumentError``."""
    from geomax.errors import ArgumentError

    unknown = set(raw) - {p.name for p in tool.params}
    if unknown:
        raise ArgumentError(f"{tool.name} has no parameter(s) {sorted(unknown)}.")
    return {p.name: convert_value(p, raw.get(p.name)) for p in tool.params}


def run_tool(name: str, raw_values: dict, log: Callable[[str], None] = print) -> Any:
    """Run tool ``name`` with parameter values given as text (or Python values); returns the library result."""
    tool = TOOLS[name]
    values = convert_values(tool, raw_values)
    return tool.run(values, log)


# --------------------------------------------------------------------------- the tools' library calls
def _run_export(v: dict, log) -> Any:
    from geomax.workflows.export import export

    return export(v["in_raster"], v["in_labels"], v["out_folder"], class_field=v["class_field"],
                  thing_classes=v["thing_classes"], class_table_source=v["class_table_source"] or None,
                  tile_size=v["tile_size"], stride=v["stride"], chip_format=v["chip_format"], bands=v["bands"],
                  keep_empty=v["keep_empty"], max_nodata_fraction=v["max_nodata_fraction"],
                  overwrite=v["overwrite"], log=log)


def _run_train(v: dict, log) -> Any:
    from geomax.workflows.train import resolve_train_config, train

    config = resolve_train_config(epochs=v["max_epochs"], minutes=v["max_minutes"], lr=v["learning_rate"],
                                  batch_size=v["batch_size"], chip_size=v["chip_size"], val_split=v["val_split"],
                                  monitor=v["monitor"], early_stopping=v["early_stopping"] or None)
    return train(v["in_folder"], v["out_model"], train=config, backbone=v["backbone"],
                 pretrained=v["pretrained_model"], overwrite=v["overwrite"], log=log).folder


def _run_predict(v: dict, log) -> Any:
    from geomax.workflows.predict import predict_raster

    options = {k: v[k] for k in ("class_threshold", "mask_threshold", "min_thing_area", "min_stuff_area")
               if v[k] is not None}
    if v["keep_disconnected"]:
        options["split_disconnected_things"] = False
    result = predict_raster(v["in_model"], v["in_raster"], v["out_raster"], out_features=v["out_features"],
                            tile_size=v["tile_size"], overlap=v["overlap"], batch_size=v["batch_size"],
                            overwrite=v["overwrite"], progress=False, **options)
    log(f"Wrote {v['out_raster']}" + (f" and {v['out_features']}" if v["out_features"] else "") + ".")
    return result


def _run_accuracy(v: dict, log) -> Any:
    from geomax.evaluate import format_metrics
    from geomax.workflows.evaluate import evaluate

    metrics = evaluate(v["in_panoptic_raster"], v["in_reference"], image=v["in_image"],
                       class_table_source=v["class_table_source"], class_field=v["class_field"],
                       reference_instances=v["in_reference_instances"], out_json=v["out_json"],
                       overwrite=v["overwrite"], progress=False)
    log(format_metrics(metrics))
    return metrics


_RASTER = ("DERasterDataset", "GPRasterLayer")
_FEATURES = ("DEFeatureClass", "GPFeatureLayer")

TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("ExportTrainingDataForDeepLearning", "Export Training Data For Deep Learning (Panoptic)",
         "Cut a raster and its label polygons into training chips in the Panoptic_Segmentation layout "
         "(images, labels, labels2/<class>, map.txt, esri_model_definition.emd).",
         (
             Param("in_raster", "Input Raster", _RASTER, "path", "Georeferenced image.", required=True),
             Param("in_labels", "Input Label Polygons", _FEATURES, "path", "Label polygons with a class field.",
                   required=True),
             Param("out_folder", "Output Folder", "DEFolder", "path", "Folder for the chips.", required=True,
                   direction="Output"),
             Param("class_field", "Class Value Field", "Field", "str", "Field with class names or Values.",
                   default="class_name", depends_on="in_labels"),
             Param("thing_classes", "Thing Classes", "GPString", "str",
                   "Classes whose features are separate instances (e.g. building).", multivalue=True),
             Param("class_table_source", "Class Definition (.emd / model / export)", "DEFile", "path",
                   "Take Values, colours and thing classes from this .emd, model or export folder."),
             Param("tile_size", "Tile Size", "GPLong", "int", "Chip size in pixels.", default=256),
             Param("stride", "Stride", "GPLong", "int", "Step between chips (default: tile size)."),
             Param("chip_format", "Image Format", "GPString", "str", "Chip format.", default="tif",
                   choices=("tif", "png")),
             Param("bands", "Bands", "GPLong", "int", "1-based bands to export (default all).", multivalue=True),
             Param("keep_empty", "Keep Chips Without Labels", "GPBoolean", "bool", "Also export unlabelled chips.",
                   default=False),
             Param("max_nodata_fraction", "Maximum No-Data Fraction", "GPDouble", "float",
                   "Skip chips with more no-data than this share.", default=0.5),
             Param("overwrite", "Overwrite", "GPBoolean", "bool", "Replace a non-empty output folder.",
                   default=False),
         ), _run_export),
    Tool("TrainDeepLearningModel", "Train Deep Learning Model (MaXDeepLab)",
         "Train a MaXDeepLab panoptic segmentation model on exported chips and save the model folder "
         "(.pth, .emd, .dlpk, model_metrics.html).",
         (
             Param("in_folder", "Input Training Data", "DEFolder", "path", "Training-data export folder.",
                   required=True),
             Param("out_model", "Output Model", "DEFolder", "path", "Model folder to write.", required=True,
                   direction="Output"),
             Param("max_epochs", "Max Epochs", "GPLong", "int",
                   f"Epochs to train (default {TrainConfig.DEFAULT_EPOCHS}; not with Max Minutes)."),
             Param("max_minutes", "Max Minutes", "GPDouble", "float",
                   "Train for this many minutes instead of a number of epochs."),
             Param("backbone", "Backbone Model", "GPString", "str", "Network variant (default: CPU or GPU default).",
                   choices=("max_deeplab_cpu", "max_deeplab_s", "max_deeplab_l", "max_deeplab_tiny")),
             Param("learning_rate", "Learning Rate", "GPDouble", "float",
                   f"Peak learning rate (default {default_of(TrainConfig, 'lr')})."),
             Param("batch_size", "Batch Size", "GPLong", "int", "Chips per batch.",
                   default=default_of(TrainConfig, "batch_size")),
             Param("chip_size", "Chip Size", "GPLong", "int", "Training chip size (default: exported size)."),
             Param("val_split", "Validation Fraction", "GPDouble", "float", "Share of chips for validation.",
                   default=default_of(TrainConfig, "val_split")),
             Param("monitor", "Monitor Metric", "GPString", "str", "What the best checkpoint watches.",
                   default=default_of(TrainConfig, "monitor"), choices=("valid_loss", "panoptic_quality")),
             Param("early_stopping", "Stop When Model Stops Improving", "GPBoolean", "bool", "Early stopping.",
                   default=False),
             Param("pretrained_model", "Pretrained Model", "DEFile", "path", "Initialise from a saved model."),
             Param("overwrite", "Overwrite", "GPBoolean", "bool", "Replace a non-empty model folder.",
                   default=False),
         ), _run_train),
    Tool("PanopticSegmentationUsingDeepLearning", "Panoptic Segmentation Using Deep Learning",
         "Run a MaXDeepLab model over a whole raster: a panoptic GeoTIFF (class Value, instance id, confidence) "
         "and optionally one polygon per object and stuff region.",
         (
             Param("in_raster", "Input Raster", _RASTER, "path", "Image to segment.", required=True),
             Param("in_model", "Model Definition", ("DEFile", "DEFolder"), "path", "Model .emd, .dlpk or folder.",
                   required=True),
             Param("out_raster", "Output Panoptic Raster", "DERasterDataset", "path", "Panoptic GeoTIFF.",
                   required=True, direction="Output"),
             Param("out_features", "Output Features", "DEFeatureClass", "path",
                   "Optional polygons (.gpkg, .shp, .geojson).", direction="Output"),
             Param("tile_size", "Tile Size", "GPLong", "int", "Tile size (default: the training chip size)."),
             Param("overlap", "Overlap", "GPLong", "int", "Overlap between tiles in pixels (default: a quarter of the tile)."),
             Param("batch_size", "Batch Size", "GPLong", "int", "Tiles per batch.",
                   default=default_of(TilingConfig, "batch_size")),
             Param("class_threshold", "Class Confidence Threshold", "GPDouble", "float",
                   "Keep segments whose class probability is at least this."),
             Param("mask_threshold", "Mask Threshold", "GPDouble", "float",
                   "Pixels whose best mask probability is below this are void."),
             Param("min_thing_area", "Minimum Object Area (pixels)", "GPLong", "int", "Drop smaller objects."),
             Param("min_stuff_area", "Minimum Stuff Area (pixels)", "GPLong", "int", "Drop smaller stuff regions."),
             Param("keep_disconnected", "Keep Disconnected Parts Together", "GPBoolean", "bool",
                   "One object per detected mask even when its pixels fall apart (default: one object per "
                   "separate region, which separates queued cars and rows of trees).", default=False),
             Param("overwrite", "Overwrite", "GPBoolean", "bool", "Replace existing outputs.", default=False),
         ), _run_predict),
    Tool("ComputePanopticAccuracy", "Compute Panoptic Accuracy",
         "Panoptic quality (PQ, SQ, RQ; all / things / stuff / per class) of a panoptic raster against "
         "reference polygons or a reference raster.",
         (
             Param("in_panoptic_raster", "Input Panoptic Raster", _RASTER, "path",
                   "Panoptic GeoTIFF (band 1 class Value, band 2 instance id).", required=True),
             Param("in_reference", "Reference Labels", _FEATURES + _RASTER, "path",
                   "Reference polygons, or a raster on the same grid.", required=True),
             Param("class_field", "Class Field", "Field", "str", "Class field of the polygons (default: detected).",
                   depends_on="in_reference"),
             Param("in_reference_instances", "Reference Instance Raster", _RASTER, "path",
                   "Instance ids when the reference raster has one band."),
             Param("in_image", "Input Image", _RASTER, "path", "The segmented image: its no-data is left out."),
             Param("class_table_source", "Class Definition (.emd / model)", "DEFile", "path",
                   "Classes (default: those stored in the panoptic raster)."),
             Param("out_json", "Output Metrics (JSON)", "DEFile", "path", "Write the metrics here.",
                   direction="Output"),
             Param("overwrite", "Overwrite", "GPBoolean", "bool", "Replace an existing JSON file.", default=False),
         ), _run_accuracy),
]}


# --------------------------------------------------------------------------- command-line scripts
class _ScriptError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _ScriptError(f"{message} (see '{self.prog} --help')")


def build_argparser(tool: Tool) -> argparse.ArgumentParser:
    """argparse parser of a tool: required parameters positional, the others ``--name``."""
    parser = _Parser(prog=f"{tool.name}.py", description=f"{tool.label}: {tool.description}",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=_EXAMPLES.get(tool.name, ""))
    for p in tool.params:
        kwargs: dict[str, Any] = {"help": p.help + (f" (default: {p.default})" if p.default not in (None, False) else "")}
        if p.multivalue:
            kwargs["nargs"] = "+"
        if p.choices:
            kwargs["choices"] = p.choices
        if p.kind == "bool":
            parser.add_argument(f"--{p.name}", action="store_true", **kwargs)
        elif p.required:
            parser.add_argument(p.name, metavar=p.name.upper(), **kwargs)
        else:
            parser.add_argument(f"--{p.name}", metavar=p.name.upper() if not p.choices else None, **kwargs)
    return parser


def script_main(tool_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of a tool script; one-line error and exit code 2 on bad input."""
    from geomax.errors import GeomaxError

    tool = TOOLS[tool_name]
    try:
        ns = vars(build_argparser(tool).parse_args(argv))
        raw = {k: (str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in ns.items()}
        run_tool(tool_name, raw)
        return 0
    except (_ScriptError, GeomaxError) as exc:
        print(f"{tool_name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


_EXAMPLES = {
    "ExportTrainingDataForDeepLearning": "example:\n  python ExportTrainingDataForDeepLearning.py scene.tif labels.gpkg "
                                         "chips --thing_classes building tree --tile_size 256",
    "TrainDeepLearningModel": "example:\n  python TrainDeepLearningModel.py chips models/city --max_epochs 20",
    "PanopticSegmentationUsingDeepLearning": "example:\n  python PanopticSegmentationUsingDeepLearning.py scene.tif "
                                             "models/city out.tif --out_features out.gpkg",
    "ComputePanopticAccuracy": "example:\n  python ComputePanopticAccuracy.py out.tif reference.gpkg --in_image "
                               "scene.tif --out_json pq.json",
}
