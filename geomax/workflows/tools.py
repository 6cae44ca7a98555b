"""The geoprocessing tools of geomax as one declarative table: the toolbox, its scripts and ``geomax``.

Every tool (:class:`Tool`) lists its parameters (:class:`Param`: ArcGIS name, label,
data type, kind, default, choices, the range a number must fall in, its ``geomax``
command-line flag) and a ``run`` that calls one workflow function of
:mod:`geomax.workflows`. Three entry points are generated from :data:`TOOLS`:

* the ArcGIS Python toolbox ``toolboxes/geomax.pyt``, which runs inside ArcGIS Pro without
  geomax: it builds its ``arcpy.Parameter`` objects from this table as
  :mod:`geomax.workflows.bridge` describes it (JSON), and runs a tool by handing the
  values (text, ArcGIS's ``valueAsText``) to the bridge in geomax's own Python environment;
* the tool scripts ``toolboxes/<tool>.py`` (:func:`script_main`): required parameters
  positional, the others ``--<name>``, values as text;
* the ``geomax`` command's ``export``, ``train``, ``predict`` and ``evaluate``
  (:func:`add_cli_arguments`, used by :mod:`geomax.cli`): flags from ``Param.cli``,
  numbers checked while parsing, with the same messages.

All three end in :func:`run_tool` -> :func:`convert_values` -> ``Tool.run``, so one set of
names, help texts, defaults and checks serves them. Defaults are read from where they
are defined (:mod:`geomax.config`, the workflow functions' signatures), never retyped.
Nothing here imports ``arcpy`` or torch.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import MIXED_PRECISION_MODES, PostprocessConfig, TilingConfig, TrainConfig, default_of
from ..errors import ArgumentError, GeomaxError
from ..evaluate import CLASS_FIELD_CANDIDATES, _pick_class_field
from ..log import get_logger
from .evaluate import WINDOW_SIZE
from .export import export as _export

__all__ = ["Param", "Tool", "TOOLS", "convert_value", "convert_values", "run_tool", "add_cli_arguments",
           "add_argument", "cli_values", "build_argparser", "script_main", "parse_text", "label_class_field"]

#: Ranges a number parameter may be limited to: name -> (test, what the message says is expected).
CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 <= v <= 1, "between 0 and 1"),
}


@dataclass(frozen=True)
class Param:
    """One tool parameter.

    Attributes
    ----------
    name:
        Parameter name (ArcGIS ``name``; ``--name`` for the tool scripts).
    label:
        Display name in ArcGIS (error messages of the toolbox name it).
    datatype:
        ArcGIS data type (``"DERasterDataset"``, ``"DEFeatureClass"``, ``"DEFolder"``,
        ``"DEFile"``, ``"GPString"``, ``"GPLong"``, ``"GPDouble"``, ``"GPBoolean"``,
        ``"Field"``), or a tuple of them.
    kind:
        Python type of the value: ``"path"``, ``"str"``, ``"int"``, ``"float"``, ``"bool"``.
    help:
        Description (ArcGIS, ``--help`` of the scripts and of ``geomax``).
    required:
        ``True``: a required parameter (positional for the scripts).
    direction:
        ``"Input"`` or ``"Output"``.
    default:
        Default value (Python value). A ``bool`` parameter defaults to ``False`` (a flag).
    multivalue:
        A list of values (``;``-separated in ArcGIS, several words on a command line).
    choices:
        Allowed values (ArcGIS value list filter, argparse choices).
    choices_of:
        A function returning the allowed values, called only by the ArcGIS toolbox (for
        lists that need heavy imports, such as the network variants); elsewhere the
        workflow function checks the value.
    depends_on:
        Name of the parameter a ``Field`` parameter takes its fields from.
    check:
        Range of a number: a key of :data:`CHECKS` (``"positive"``, ``"non_negative"``,
        ``"fraction"``).
    cli:
        Its name in the ``geomax`` command: a flag (``"--things"``), or the display name of
        a positional argument (``"raster"``). Default: ``--name-with-dashes``, or the name
        for a required parameter (positional).
    metavar:
        Placeholder of the value in ``geomax`` help (``"CLASS"``).
    percent:
        A share (``kind`` ``"float"``, value a fraction 0-1) that may also be typed as a percent
        with a ``%`` sign (``"10%"`` = 0.1; a bare number is a fraction). The ArcGIS toolbox
        shows it as a percent 0-100, as ArcGIS Pro's own tools do, and sends the typed number
        with ``%`` (:mod:`geomax.workflows.bridge` describes its default as a percent).
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
    choices_of: Callable[[], Sequence] | None = field(default=None, repr=False)
    depends_on: str | None = None
    check: str | None = None
    cli: str | None = None
    metavar: str | None = None
    percent: bool = False

    def __post_init__(self) -> None:
        if self.kind == "bool" and self.default is None:
            object.__setattr__(self, "default", False)  # a flag: off unless given

    @property
    def flag(self) -> str:
        """Its name in the ``geomax`` command (a ``--flag`` or a positional's name)."""
        if self.cli:
            return self.cli
        return self.name if self.required else "--" + self.name.replace("_", "-")

    @property
    def script_flag(self) -> str:
        """Its name in the tool scripts: the name (positional) when required, else ``--name``."""
        return self.name if self.required else f"--{self.name}"

    @property
    def described(self) -> str:
        """How the toolbox and the scripts name it in messages: ``'Tile Size' (tile_size)``."""
        return f"'{self.label}' ({self.name})"

    def help_text(self) -> str:
        """``help`` with the default appended (when there is one to show)."""
        text = self.help
        if self.default not in (None, False, ()):
            shown = " ".join(map(str, self.default)) if isinstance(self.default, (list, tuple)) else self.default
            text = f"{text.rstrip('.')} (default: {shown})."
        return text


@dataclass(frozen=True)
class Tool:
    """A geoprocessing tool: its parameters and the workflow call they map to.

    Attributes
    ----------
    name:
        Tool (class and script) name, ArcGIS style.
    label, description, category:
        What ArcGIS shows; ``description`` is also the ``--help`` description.
    params:
        The parameters, in ArcGIS's order.
    run:
        ``run(values, log, progress)``: calls the workflow function with the converted
        values; returns its result.
    command:
        Subcommand of ``geomax`` (``"export"``).
    summary:
        One line for ``geomax --help``.
    examples:
        ``geomax`` command lines shown in its ``--help``.
    script_example:
        A command line of the tool script shown in its ``--help``.
    cli_order:
        Order of the positional arguments of the ``geomax`` subcommand (parameter names;
        default: the table's order).
    exclusive:
        Pairs of parameters that may not both be given.
    progress:
        The run can show a progress bar (``geomax``: on unless ``-q`` / ``--quiet``; the toolbox
        always asks for it: its bridge turns it into ArcGIS's progressor).
    """

    name: str
    label: str
    description: str
    params: tuple[Param, ...]
    run: Callable[[dict, Callable[[str], Any], bool], Any] = field(repr=False)
    command: str = ""
    summary: str = ""
    examples: str = ""
    script_example: str = ""
    cli_order: tuple[str, ...] = ()
    exclusive: tuple[tuple[str, str], ...] = ()
    progress: bool = False
    category: str = "Deep Learning"

    def param(self, name: str) -> Param:
        """The parameter called ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------- values
def _described(param: Param) -> str:
    return param.described


_TRUE = {"true", "1", "yes", "y", "on", "checked"}
_FALSE = {"false", "0", "no", "n", "off", "unchecked", ""}
_PERCENT_HINT = " or a percent such as 10%"


def parse_text(param: Param, raw) -> Any:
    """One value of ``param`` from its text (or a Python value); :class:`ValueError` says what was expected.

    The one conversion of every entry point: the toolbox and the scripts wrap the reason
    with the parameter's label, ``geomax`` with its flag. A :attr:`Param.percent` share is a
    fraction (``0.1``) or a percent with a ``%`` sign (``"10%"``), both giving 0.1.
    """
    if param.kind == "bool" and isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    if param.kind == "int":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got '{text}'") from None
        if not number.is_integer():
            raise ValueError(f"expected a whole number, got '{text}'")
        value: Any = int(number)
    elif param.kind == "float":
        as_percent = param.percent and text.endswith("%")
        try:
            value = float(text[:-1].strip() if as_percent else text)
        except ValueError:
            raise ValueError(f"expected a number{_PERCENT_HINT if param.percent else ''}, got '{text}'") from None
        if as_percent:
            if not 0 <= value <= 100:
                raise ValueError(f"expected a percent from 0% to 100%, got '{text}'")
            value = value / 100
    elif param.kind == "bool":
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"expected true or false, got '{text}'")
        value = text.lower() in _TRUE
    else:
        value = text
    if param.check is not None:
        ok, expected = CHECKS[param.check]
        if not ok(value):
            raise ValueError(f"expected a {'whole ' if param.kind == 'int' else ''}number {expected}"
                             f"{_PERCENT_HINT if param.percent else ''}, got {value}")
    if param.choices and value not in param.choices:
        raise ValueError(f"must be one of {list(param.choices)}, got '{value}'")
    return value


def convert_value(param: Param, raw, name_of: Callable[[Param], str] | None = None) -> Any:
    """Python value of a parameter from its text (ArcGIS ``valueAsText``) or a parsed value.

    Empty text (or ``"#"``, ArcGIS's "not given") and ``None`` give the default. Multivalue
    text is split on ``;``.

    Raises
    ------
    geomax.errors.ArgumentError
        A required parameter is missing, or the text is not a valid value.
    """
    name_of = name_of or _described
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "#")):
        if param.required:
            raise ArgumentError(f"Parameter {name_of(param)} is required. Give a value for it.")
        return param.default
    try:
        if param.multivalue:
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(";")
            items = [s.strip().strip("'\"") if isinstance(s, str) else s for s in items]
            return [parse_text(param, s) for s in items if s != ""] or param.default
        return parse_text(param, raw)
    except ValueError as exc:
        raise ArgumentError(f"Parameter {name_of(param)}: {exc}. Check the value given for it.") from None


def convert_values(tool: Tool, raw: dict, name_of: Callable[[Param], str] | None = None) -> dict:
    """Convert every parameter of ``tool``; unknown names and excluded pairs raise ``ArgumentError``.

    ``name_of`` says how messages name a parameter (default: its label and name).
    """
    name_of = name_of or _described
    unknown = set(raw) - {p.name for p in tool.params}
    if unknown:
        raise ArgumentError(f"{tool.name} has no parameter(s) {sorted(unknown)}.")
    values = {p.name: convert_value(p, raw.get(p.name), name_of) for p in tool.params}
    for a, b in tool.exclusive:
        if values[a] is not None and values[b] is not None:
            raise ArgumentError(f"Give either {name_of(tool.param(a))} or {name_of(tool.param(b))}, not both.")
    return values


def run_tool(name: str, raw_values: dict, log: Callable[[str], Any] | None = None, *, progress: bool = False,
             name_of: Callable[[Param], str] | None = None) -> Any:
    """Run tool ``name`` with parameter values given as text (or Python values); returns the workflow's result.

    Parameters
    ----------
    name:
        A key of :data:`TOOLS`.
    raw_values:
        Parameter name -> text or value; missing ones take their defaults.
    log:
        Where the tool's messages go (ArcGIS: ``messages.addMessage``; default: the ``geomax.workflows``
        logger, shown on stdout unless quietened, :mod:`geomax.log`).
    progress:
        Show progress bars.
    name_of:
        How error messages name a parameter (``geomax``: its flag).
    """
    tool = TOOLS[name]
    log = log or get_logger("geomax.workflows").info
    return tool.run(convert_values(tool, raw_values, name_of), log, progress)


# --------------------------------------------------------------------------- argparse from the table
def _argparse_type(param: Param):
    def convert(text: str):
        try:
            return parse_text(param, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def add_argument(parser: argparse.ArgumentParser, param: Param, flag: str | None = None, typed: bool = True) -> None:
    """Add one parameter to an argparse parser.

    ``flag``: a ``--flag`` (an option) or a positional's display name (default:
    :attr:`Param.flag`). ``typed``: values are parsed and checked by :func:`parse_text`
    while parsing (``geomax``); otherwise they stay text for :func:`run_tool` (the tool
    scripts, whose messages name the parameter's label as ArcGIS does).
    """
    flag = flag or param.flag
    kwargs: dict[str, Any] = {"help": param.help_text().replace("%", "%%")}
    if param.kind == "bool":
        parser.add_argument(flag, dest=param.name, action="store_true", **kwargs)
        return
    if param.multivalue:
        kwargs["nargs"] = "+"
    if param.choices:
        kwargs["choices"] = param.choices
    if typed:
        kwargs["type"] = _argparse_type(param)
    if flag.startswith("-"):
        if not param.choices:
            kwargs["metavar"] = param.metavar or flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, dest=param.name, required=param.required, **kwargs)
    else:
        parser.add_argument(param.name, metavar=flag if typed else param.name.upper(), **kwargs)


def add_cli_arguments(parser: argparse.ArgumentParser, tool: Tool) -> None:
    """Add the ``geomax`` subcommand's arguments of ``tool`` (flags from ``Param.cli``; values parsed and checked).

    ``-q`` / ``-v`` (what is shown) are added by ``geomax.cli`` to every subcommand.
    """
    positional = [p for p in tool.params if not p.flag.startswith("-")]
    if tool.cli_order:
        positional = [tool.param(name) for name in tool.cli_order]
    for p in positional:
        add_argument(parser, p, p.flag, typed=True)
    for p in tool.params:
        if p.flag.startswith("-"):
            add_argument(parser, p, p.flag, typed=True)


def cli_values(tool: Tool, args: argparse.Namespace) -> dict:
    """The parameter values of a parsed ``geomax`` subcommand, for :func:`run_tool`."""
    return {p.name: getattr(args, p.name) for p in tool.params}


class _ScriptError(Exception):
    pass


class _ScriptParser(argparse.ArgumentParser):
    def error(self, message):
        raise _ScriptError(f"{message} (see '{self.prog} --help')")


def build_argparser(tool: Tool) -> argparse.ArgumentParser:
    """argparse parser of a tool script: required parameters positional, the others ``--name``; values as text."""
    parser = _ScriptParser(prog=f"{tool.name}.py", description=f"{tool.label}: {tool.description}",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"example:\n  {tool.script_example}" if tool.script_example else None)
    for p in tool.params:
        add_argument(parser, p, p.script_flag, typed=False)
    return parser


@contextlib.contextmanager
def one_line_warnings(prefix: str):
    """Show warnings as one line ``<prefix>: warning: ...`` on stderr (not Python's file:line form)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def script_main(tool_name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of a tool script; one-line error and exit code 2 on bad input, one-line warnings."""
    tool = TOOLS[tool_name]
    try:
        with one_line_warnings(tool_name):
            run_tool(tool_name, vars(build_argparser(tool).parse_args(argv)))
        return 0
    except (_ScriptError, GeomaxError) as exc:
        print(f"{tool_name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- the tools' workflow calls
def label_class_field(labels, class_field: str | None = None, label_layer: str | None = None) -> str:
    """The class field of a label file: ``class_field`` when given, else detected as evaluate detects it.

    Detection takes the first of :data:`geomax.evaluate.CLASS_FIELD_CANDIDATES` (``class_name``,
    ``Classname``, ... ``Classvalue``: what ArcGIS Pro's training samples have) the file has,
    reading one feature. A file that does not exist or cannot be read gives the export's
    default field, so that the export's own check says what is wrong.

    Raises
    ------
    geomax.errors.DataError
        The file has none of the candidate fields (the message lists its fields).
    """
    if class_field is not None:
        return class_field
    default = _arg_default(_export, "class_field")
    if not isinstance(labels, (str, os.PathLike)) or not Path(labels).exists():
        return default
    import geopandas as gpd

    try:
        head = gpd.read_file(labels, layer=label_layer, rows=1) if label_layer else gpd.read_file(labels, rows=1)
    except Exception:  # pyogrio / fiona raise many types; the export says why the file cannot be read
        return default
    return _pick_class_field(head, None, Path(labels))


def _run_export(v: dict, log, progress: bool) -> Any:
    class_field = label_class_field(v["in_labels"], v["class_field"], v["label_layer"])
    if v["class_field"] is None and class_field != _arg_default(_export, "class_field"):
        log(f"note: classes read from the field '{class_field}' (detected).")
    return _export(v["in_raster"], v["in_labels"], v["out_folder"], class_field=class_field,
                   thing_classes=v["thing_classes"], class_table_source=v["class_table_source"],
                   tile_size=v["tile_size"], stride=v["stride"], chip_format=v["chip_format"], bands=v["bands"],
                   keep_empty=v["keep_empty"], max_nodata_fraction=v["max_nodata_fraction"],
                   label_layer=v["label_layer"], background=v["background"], overwrite=v["overwrite"], log=log,
                   progress=progress)


def _run_train(v: dict, log, progress: bool) -> Any:
    from .train import resolve_train_config, train

    config = resolve_train_config(epochs=v["max_epochs"], minutes=v["max_minutes"], lr=v["learning_rate"],
                                  lr_find=v["lr_find"], batch_size=v["batch_size"], chip_size=v["chip_size"],
                                  val_split=v["val_split"], seed=v["seed"], monitor=v["monitor"],
                                  early_stopping=v["early_stopping"], patience=v["patience"],
                                  num_threads=v["num_threads"], mixed_precision=v["mixed_precision"])
    return train(v["in_folder"], v["out_model"], train=config, backbone=v["backbone"],
                 pretrained=v["pretrained_model"], overwrite=v["overwrite"], resume=v["resume"], log=log)


def _run_predict(v: dict, log, progress: bool) -> Any:
    from .predict import predict_raster

    result = predict_raster(v["in_model"], v["in_raster"], v["out_raster"], v["out_features"],
                            tile_size=v["tile_size"], overlap=v["overlap"], batch_size=v["batch_size"],
                            bands=v["bands"], simplify_tolerance=v["simplify_tolerance"], overwrite=v["overwrite"],
                            mixed_precision=v["mixed_precision"],
                            progress=progress, class_threshold=v["class_threshold"],
                            mask_threshold=v["mask_threshold"], min_thing_area=v["min_thing_area"],
                            min_stuff_area=v["min_stuff_area"],
                            split_disconnected_things=False if v["keep_disconnected"] else None)
    log(f"Wrote {result.out_raster} ({result.n_instances} thing instances, tiles of {result.tiling.tile_size} px)"
        + (f" and {result.out_features} ({result.n_features} features)" if result.out_features else "") + ".")
    return result


def _run_accuracy(v: dict, log, progress: bool) -> Any:
    from ..evaluate import format_metrics
    from .evaluate import evaluate

    metrics = evaluate(v["in_panoptic_raster"], v["in_reference"], model=v["in_model"], image=v["in_image"],
                       class_table_source=v["class_table_source"], class_field=v["class_field"],
                       reference_instances=v["in_reference_instances"], tile_size=v["tile_size"],
                       window_size=v["window_size"], out_json=v["out_json"], overwrite=v["overwrite"],
                       progress=progress)
    # the table is the tool's result: a log with a ``result`` channel (``geomax``: stdout even when quiet)
    getattr(log, "result", log)(format_metrics(metrics))
    if v["out_json"]:
        log(f"Metrics written to {v['out_json']}.")
    return metrics


def _arg_default(func, name: str) -> Any:
    """The default of argument ``name`` of ``func`` (defaults live in the workflow signatures)."""
    return inspect.signature(func).parameters[name].default


def _backbones() -> list[str]:
    from ..models.maxdeeplab import list_variants

    return list(list_variants())


def _model_default(setting: str, what: str) -> str:
    return f"{what} (default: the model's own; {default_of(PostprocessConfig, setting)} for a new model)."


_RASTER = ("DERasterDataset", "GPRasterLayer")
_FEATURES = ("DEFeatureClass", "GPFeatureLayer")
_MIXED_PRECISION = Param(
    "mixed_precision", "Mixed Precision", "GPString", "str",
    "auto: bfloat16 where it pays (a CPU with AVX512-BF16 or AMX: prediction, and training on chips of 256 px or "
    "more; a GPU: float16 training, bfloat16 prediction), float32 elsewhere; bf16: bfloat16 everywhere; off: "
    "float32 everywhere.",
    default=default_of(TrainConfig, "mixed_precision"), choices=MIXED_PRECISION_MODES)

_OVERWRITE_HELP = ("Replace {what} (otherwise an existing one is refused before any work). Only outputs geomax "
                   "wrote are ever replaced; anything else is refused.")

TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("ExportTrainingDataForDeepLearning", "Export Training Data For Deep Learning (Panoptic)",
         "Cut a georeferenced raster and its label polygons into training chips in ArcGIS's "
         "Panoptic_Segmentation layout (images/, labels/, labels2/<class>/, map.txt, esri_model_definition.emd).",
         (
             Param("in_raster", "Input Raster", _RASTER, "path",
                   "Georeferenced input raster (GeoTIFF or any format GDAL reads).", required=True, cli="raster"),
             Param("in_labels", "Input Label Polygons", _FEATURES, "path",
                   "Label polygons with a class field (GeoPackage, shapefile, GeoJSON...).", required=True,
                   cli="labels"),
             Param("out_folder", "Output Folder", "DEFolder", "path",
                   "Folder for the chips (new or empty unless overwrite).", required=True, direction="Output",
                   cli="out"),
             Param("class_field", "Class Value Field", "Field", "str",
                   "Field holding class names or Values (default: detected, the first of "
                   f"{', '.join(CLASS_FIELD_CANDIDATES)} the labels have; ArcGIS Pro's training samples "
                   "have Classname and Classvalue).", depends_on="in_labels"),
             Param("thing_classes", "Thing Classes", "GPString", "str",
                   "Thing classes: each of their features is one instance (e.g. building tree).", multivalue=True,
                   cli="--things", metavar="CLASS"),
             Param("class_table_source", "Class Definition (.emd / model / export)", "DEFile", "path",
                   "Take the class table (Values, colours, things) from an .emd, a model or export folder, "
                   "or 'synthetic'.", cli="--classes", metavar="SOURCE"),
             Param("tile_size", "Tile Size", "GPLong", "int", "Chip size in pixels.",
                   default=_arg_default(_export, "tile_size"), check="positive"),
             Param("stride", "Stride", "GPLong", "int", "Step between chips in pixels (default: the tile size).",
                   check="positive"),
             Param("chip_format", "Image Format", "GPString", "str", "Chip format.",
                   default=_arg_default(_export, "chip_format"), choices=("tif", "png"), cli="--format"),
             Param("bands", "Bands", "GPLong", "int", "1-based bands to export (default: all).", multivalue=True,
                   check="positive", metavar="N"),
             Param("keep_empty", "Keep Chips Without Labels", "GPBoolean", "bool",
                   "Also export chips without any label."),
             Param("max_nodata_fraction", "Maximum No-Data Fraction", "GPDouble", "float",
                   "Skip chips with a larger share of no-data pixels.",
                   default=_arg_default(_export, "max_nodata_fraction"), check="fraction", cli="--max-nodata"),
             Param("label_layer", "Label Layer", "GPString", "str", "Layer of a multi-layer vector file.",
                   cli="--layer"),
             Param("background", "Unlabelled Pixels", "GPString", "str",
                   "What valid pixels under no label become: 'auto' (a stuff class 'background' when every "
                   "labelled class is a thing, e.g. a building footprint layer; otherwise void), 'class' or "
                   "'void' (ignored by training: for partially labelled images).",
                   default=_arg_default(_export, "background"), choices=("auto", "class", "void")),
             Param("overwrite", "Overwrite", "GPBoolean", "bool",
                   _OVERWRITE_HELP.format(what="an earlier geomax export")),
         ), _run_export, command="export",
         summary="cut a raster + vector labels into training chips (ArcGIS Panoptic_Segmentation layout)",
         examples="""
             geomax export scene.tif labels.gpkg chips --things building tree vehicle
             geomax export scene.tif labels.shp chips --class-field Classname --things building \\
                 --tile-size 512 --stride 256 --bands 1 2 3
             geomax export scene.tif labels.gpkg chips --classes model_or_export_folder
         """,
         script_example="python ExportTrainingDataForDeepLearning.py scene.tif labels.gpkg chips "
                        "--thing_classes building tree --tile_size 256", progress=True),
    Tool("TrainDeepLearningModel", "Train Deep Learning Model (MaXDeepLab)",
         "Train a MaXDeepLab panoptic segmentation model on a training-data export and save the model folder "
         "(.pth, .emd, .dlpk, model_metrics.html). The recipe is geomax's one TrainConfig: settings not "
         "given take its defaults.",
         (
             Param("in_folder", "Input Training Data", "DEFolder", "path", "Training-data export folder.",
                   required=True, cli="data"),
             Param("out_model", "Output Model", "DEFolder", "path",
                   "Model folder to write (new or empty unless overwrite).", required=True, direction="Output",
                   cli="--out"),
             Param("max_epochs", "Max Epochs", "GPLong", "int",
                   f"Epochs to train (default: {TrainConfig.DEFAULT_EPOCHS}; not with a time budget).",
                   check="positive", cli="--epochs"),
             Param("max_minutes", "Max Minutes", "GPDouble", "float",
                   "Train for this many minutes instead of a number of epochs (the one-cycle schedule is "
                   "stretched over them).", check="positive", cli="--minutes"),
             Param("backbone", "Backbone Model", "GPString", "str",
                   "Network variant (default: max_deeplab_s with a GPU, max_deeplab_cpu without).",
                   choices_of=_backbones),
             Param("learning_rate", "Learning Rate", "GPDouble", "float", "Peak learning rate.",
                   default=default_of(TrainConfig, "lr"), check="positive", cli="--lr"),
             Param("lr_find", "Find Learning Rate", "GPBoolean", "bool",
                   "Run fastai's learning-rate finder and use its suggestion instead of the learning rate."),
             Param("batch_size", "Batch Size", "GPLong", "int", "Chips per batch.",
                   default=default_of(TrainConfig, "batch_size"), check="positive"),
             Param("chip_size", "Chip Size", "GPLong", "int", "Training chip size (default: the exported size on a GPU, random 128 px crops on a CPU).",
                   check="positive"),
             Param("val_split", "Validation %", "GPDouble", "float",
                   "Share of the chips held out for validation: a fraction (0.1) or a percent with a % sign (10%). "
                   "The ArcGIS toolbox takes a percent, as ArcGIS Pro's Train Deep Learning Model does (10 = 10 %).",
                   default=default_of(TrainConfig, "val_split"), check="fraction", percent=True),
             Param("monitor", "Monitor Metric", "GPString", "str",
                   "What the best checkpoint and early stopping watch.", default=default_of(TrainConfig, "monitor"),
                   choices=("valid_loss", "panoptic_quality")),
             Param("early_stopping", "Stop When Model Stops Improving", "GPBoolean", "bool",
                   "Stop when the monitored value stops improving."),
             Param("patience", "Patience (Epochs)", "GPLong", "int",
                   "Epochs without improvement before early stopping.", default=default_of(TrainConfig, "patience"),
                   check="positive"),
             Param("pretrained_model", "Pretrained Model", "DEFile", "path",
                   "Initialise from a saved model or a .pth state dict.", cli="--pretrained"),
             Param("seed", "Random Seed", "GPLong", "int", "Seed of the validation split and of the initialisation.",
                   default=default_of(TrainConfig, "seed"), check="non_negative"),
             Param("num_threads", "CPU Threads", "GPLong", "int", "CPU threads for torch (default: torch's choice).",
                   check="positive", cli="--threads"),
             _MIXED_PRECISION,
             Param("overwrite", "Overwrite", "GPBoolean", "bool",
                   _OVERWRITE_HELP.format(what="an earlier geomax model folder")),
             Param("resume", "Resume Interrupted Training", "GPBoolean", "bool",
                   "Continue an interrupted training of the same output folder from its last epoch (same data and "
                   "settings; checkpoints are kept beside the output until the model is saved)."),
         ), _run_train, command="train", summary="train a MaXDeepLab model on exported chips",
         examples="""
             geomax train chips --out models/city --epochs 20
             geomax train chips --out models/city --minutes 30           # wall-clock budget
             geomax train chips --out models/city --minutes 30 --resume  # after an interruption
             geomax train chips --out models/city --backbone max_deeplab_s --batch-size 4 --lr 1e-3
         """,
         script_example="python TrainDeepLearningModel.py chips models/city --max_epochs 20",
         exclusive=(("max_epochs", "max_minutes"),)),
    Tool("PanopticSegmentationUsingDeepLearning", "Panoptic Segmentation Using Deep Learning",
         "Run a MaXDeepLab model over a whole raster: tile it, predict, stitch objects across tiles and write a "
         "cloud-optimised panoptic GeoTIFF (band 1 class Value, band 2 instance id, band 3 confidence) and "
         "optionally one polygon per object and stuff region.",
         (
             Param("in_raster", "Input Raster", _RASTER, "path", "Image to segment.", required=True, cli="raster"),
             Param("in_model", "Model Definition", ("DEFile", "DEFolder"), "path",
                   "Model folder, .emd or .dlpk.", required=True, cli="model"),
             Param("out_raster", "Output Panoptic Raster", "DERasterDataset", "path", "Output panoptic GeoTIFF.",
                   required=True, direction="Output", cli="out"),
             Param("out_features", "Output Features", "DEFeatureClass", "path",
                   "Optional polygons (.gpkg, .shp, .geojson, .fgb, .parquet).", direction="Output",
                   cli="--features"),
             Param("tile_size", "Tile Size", "GPLong", "int", "Tile size in pixels (default: the training chip size).",
                   check="positive"),
             Param("overlap", "Overlap", "GPLong", "int",
                   "Overlap between tiles in pixels (default: a quarter of the tile).", check="non_negative"),
             Param("batch_size", "Batch Size", "GPLong", "int",
                   f"Tiles per batch (default: {default_of(TilingConfig, 'batch_size')}).", check="positive"),
             Param("bands", "Bands", "GPLong", "int", "1-based input bands in the model's band order (default: all).",
                   multivalue=True, check="positive", metavar="N"),
             Param("class_threshold", "Class Confidence Threshold", "GPDouble", "float",
                   _model_default("class_threshold", "Keep segments whose class probability is at least this"),
                   check="fraction"),
             Param("mask_threshold", "Mask Threshold", "GPDouble", "float",
                   _model_default("mask_threshold", "Pixels whose best mask probability is below this are void"),
                   check="fraction"),
             Param("min_thing_area", "Minimum Object Area (pixels)", "GPLong", "int",
                   _model_default("min_thing_area", "Drop smaller objects"), check="non_negative"),
             Param("min_stuff_area", "Minimum Stuff Area (pixels)", "GPLong", "int",
                   _model_default("min_stuff_area", "Drop smaller stuff regions"), check="non_negative"),
             Param("keep_disconnected", "Keep Disconnected Parts Together", "GPBoolean", "bool",
                   "One object per detected mask even when its pixels fall apart (default: one object per "
                   "separate region, which separates queued cars and rows of trees)."),
             Param("simplify_tolerance", "Simplify Tolerance", "GPDouble", "float",
                   "Polygon simplification tolerance in CRS units.", check="positive", cli="--simplify"),
             _MIXED_PRECISION,
             Param("overwrite", "Overwrite", "GPBoolean", "bool", _OVERWRITE_HELP.format(what="existing outputs")),
         ), _run_predict, command="predict",
         summary="panoptic segmentation of a whole raster -> GeoTIFF (+ features)",
         examples="""
             geomax predict models/city scene.tif out/scene_panoptic.tif --features out/scene.gpkg
             geomax predict models/city/city.dlpk scene.tif out.tif --tile-size 512 --overlap 64
             geomax predict models/city scene.tif out.tif --class-threshold 0.6 --min-thing-area 20
         """,
         script_example="python PanopticSegmentationUsingDeepLearning.py scene.tif models/city out.tif "
                        "--out_features out.gpkg",
         cli_order=("in_model", "in_raster", "out_raster"), progress=True),
    Tool("ComputePanopticAccuracy", "Compute Panoptic Accuracy",
         "Panoptic quality: PQ, SQ and RQ (all / things / stuff / per class, as panopticapi defines them) of a "
         "panoptic raster against reference polygons or a reference raster on the same grid. With a model, the "
         "input is the image and the model is run on it first.",
         (
             Param("in_panoptic_raster", "Input Panoptic Raster (or Image With a Model)", _RASTER, "path",
                   "Panoptic GeoTIFF (band 1 class Value, band 2 instance id), or the image when a model is given.",
                   required=True, cli="prediction"),
             Param("in_reference", "Reference Labels", _FEATURES + _RASTER, "path",
                   "Reference polygons, or a raster on the same grid (band 1 class Value, band 2 instance id).",
                   required=True, cli="reference"),
             Param("in_model", "Model Definition (Run First)", ("DEFile", "DEFolder"), "path",
                   "Run this model (folder, .emd or .dlpk) on the input image first.", cli="--model"),
             Param("class_field", "Class Field", "Field", "str",
                   "Class field of the reference polygons (default: detected, e.g. class_name).",
                   depends_on="in_reference"),
             Param("in_reference_instances", "Reference Instance Raster", _RASTER, "path",
                   "Instance ids when the reference raster has one band.", cli="--instances"),
             Param("in_image", "Input Image", _RASTER, "path",
                   "The image the panoptic raster was made from: its no-data pixels are left out.", cli="--image"),
             Param("class_table_source", "Class Definition (.emd / model)", "DEFile", "path",
                   "Class table source (.emd, model or export folder, 'synthetic'; default: the class names "
                   "stored in the panoptic raster, or the model's).", cli="--classes"),
             Param("tile_size", "Tile Size", "GPLong", "int", "Tile size of the model run (default: its chip size).",
                   check="positive"),
             Param("window_size", "Evaluation Window (pixels)", "GPLong", "int",
                   "Side of the windows the rasters are read and evaluated in.", default=WINDOW_SIZE,
                   check="positive"),
             Param("out_json", "Output Metrics (JSON)", "DEFile", "path", "Also write the metrics to this JSON file.",
                   direction="Output", cli="--json"),
             Param("overwrite", "Overwrite", "GPBoolean", "bool", _OVERWRITE_HELP.format(what="an existing JSON file")),
         ), _run_accuracy, command="evaluate",
         summary="panoptic quality (PQ/SQ/RQ) of a panoptic raster or a model",
         examples="""
             geomax evaluate scene_panoptic.tif reference.gpkg --image scene.tif
             geomax evaluate scene_panoptic.tif ref_classes.tif --instances ref_instances.tif
             geomax evaluate scene.tif reference.gpkg --model models/city --json pq.json
         """,
         script_example="python ComputePanopticAccuracy.py out.tif reference.gpkg --in_image scene.tif "
                        "--out_json pq.json",
         progress=True),
]}
