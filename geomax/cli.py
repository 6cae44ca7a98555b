"""The ``geomax`` command: export, train, predict, evaluate, info, demo.

``export``, ``train``, ``predict`` and ``evaluate`` are generated from the tool table
:data:`geomax.workflows.tools.TOOLS` (the same parameters, help texts, defaults and
checks as the ArcGIS toolbox, under their command-line flags) and run the workflow
functions through :func:`geomax.workflows.tools.run_tool`. ``info`` and ``demo`` are not
toolbox tools and are declared here; they only parse arguments and call a library
function. Bad input (a :class:`geomax.errors.GeomaxError` or an argument error) ends
with one line ``geomax: error: ...`` on stderr and exit code 2, never a traceback.

What is shown is decided here: every subcommand takes ``-q`` / ``--quiet`` (warnings and errors
only, no progress bar) and ``-v`` / ``--verbose`` (debug messages too); the library's messages go
through the ``geomax`` logger (:mod:`geomax.log`), the command's own lines through ``geomax.cli``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from ._version import __version__
from .errors import DataError, GeomaxError
from .log import LOGGER_NAME, get_logger, set_verbosity, verbosity_level
from .workflows.tools import (
    TOOLS,
    Param,
    Tool,
    add_argument,
    add_cli_arguments,
    cli_values,
    one_line_warnings,
    run_tool,
)

__all__ = ["main", "build_parser", "describe_path"]

EXIT_USER_ERROR = 2

log = get_logger("geomax.cli")


class _UsageError(Exception):
    """An argument error found by argparse (turned into the one-line message)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and do not exit from inside argparse."""

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=100)


class _CommandLog:
    """The log a tool command runs with: messages through the ``geomax.cli`` logger (hidden by ``-q``),
    results (the metrics table of ``evaluate``) on stdout always."""

    def __call__(self, message: str) -> None:
        log.info(message)

    @staticmethod
    def result(text: str) -> None:
        print(text)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q`` / ``-v`` of every subcommand."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="Show warnings and errors only; no progress bar.")
    group.add_argument("-v", "--verbose", action="store_true", help="Show debug messages too.")


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


# --------------------------------------------------------------------------- the toolbox tools
def _add_tool_command(sub, tool: Tool) -> None:
    p = sub.add_parser(tool.command, help=tool.summary, formatter_class=_formatter,
                       description=textwrap.fill(f"{tool.label}: {tool.description}", 100),
                       epilog=_examples(tool.examples))
    add_cli_arguments(p, tool)
    _add_verbosity(p)

    def run(args) -> int:
        run_tool(tool.name, cli_values(tool, args), log=_CommandLog(), progress=tool.progress and not args.quiet,
                 name_of=lambda param: param.flag)
        return 0

    p.set_defaults(func=run)


# --------------------------------------------------------------------------- info
def _cmd_info(args) -> int:
    path = Path(args.path)
    if not path.exists():
        raise DataError(f"Path '{path}' does not exist. Check the path of the model, training data or raster "
                        "(relative paths start from the current folder).")
    print(describe_path(path))
    return 0


def describe_path(path: Path) -> str:
    """Text description of a model (folder / .emd / .dlpk), a training-data export or a raster."""
    from .data.classes import ClassTable

    lines: list[str] = []

    def classes(table: ClassTable) -> None:
        lines.append("classes (Value: name, kind):")
        for c in table:
            lines.append(f"  {c.value:>4}: {c.name} ({'thing' if c.is_thing else 'stuff'})")

    if path.is_dir() and (path / "esri_model_definition.emd").exists():
        from .data.esri_layout import read_export

        layout = read_export(path)
        lines.append(f"training-data export: {path}")
        lines.append(f"chips: {len(layout.chips)}" + (f" of {layout.image_size[0]} x {layout.image_size[1]} px"
                                                       if layout.image_size else ""))
        if layout.band_names:
            lines.append(f"bands: {', '.join(map(str, layout.band_names))}")
        if layout.band_stats is not None:
            s = layout.band_stats
            for i, name in enumerate(s.names):
                lines.append(f"  {name}: min {s.min[i]:g} max {s.max[i]:g} mean {s.mean[i]:.4g} std {s.std[i]:.4g}")
        classes(layout.class_table)
        return "\n".join(lines)
    if path.is_dir() or path.suffix.lower() in (".emd", ".dlpk"):
        from .models.package import read_model_package

        emd, state = read_model_package(path)
        params = emd.get("ModelParameters", {})
        n_params = sum(v.numel() for v in state.values() if hasattr(v, "numel"))
        lines.append(f"model: {path}")
        lines.append(f"backbone: {params.get('backbone')}  ({n_params / 1e6:.2f} M weights)")
        lines.append(f"bands: {', '.join(map(str, params.get('band_names', [])))}  (extract bands "
                     f"{emd.get('ExtractBands')})")
        lines.append(f"chip size: {emd.get('ImageHeight')} x {emd.get('ImageWidth')} px")
        lines.append(f"geomax version: {emd.get('GeomaxVersion')}")
        classes(ClassTable.from_emd(emd, source=str(path)))
        m = emd.get("Metrics") or {}
        if "all" in m:
            lines.append(f"validation PQ: all {100 * m['all']['pq']:.1f}, things {100 * m['things']['pq']:.1f}, "
                         f"stuff {100 * m['stuff']['pq']:.1f}")
        hist = emd.get("TrainingHistory") or []
        if hist:
            lines.append(f"trained epochs: {len(hist)}; last: " + ", ".join(
                f"{k} {v:.4f}" for k, v in hist[-1].items() if isinstance(v, (int, float))))
        return "\n".join(lines)
    import rasterio

    from .evaluate import class_table_from_tags

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"'{path}' is neither a model, a training-data export nor a raster ({exc}).") from exc
    with src:
        lines.append(f"raster: {path}")
        lines.append(f"size: {src.width} x {src.height} px, {src.count} bands, {src.dtypes[0]}")
        lines.append(f"CRS: {src.crs}  pixel size: {abs(src.transform.a):g} x {abs(src.transform.e):g}")
        lines.append(f"bands: {', '.join(d or f'band {i + 1}' for i, d in enumerate(src.descriptions))}")
        lines.append(f"no data: {src.nodata}")
        table = class_table_from_tags(src)
        if table is not None:
            lines.append("panoptic raster (band 1 class Value, band 2 instance id, band 3 confidence)")
            classes(table)
    return "\n".join(lines)


#: Arguments of ``geomax demo`` (declared like the tools' parameters, for the same checks and messages).
_DEMO_PARAMS = (
    Param("out", "", "", "path", "Output folder (new or empty unless --overwrite).", required=True, cli="--out"),
    Param("quick", "", "", "bool", "Small scenes and a short training (a few minutes)."),
    Param("minutes", "", "", "float", "Training budget in minutes (default: whatever keeps the whole run within "
          "--total-minutes).", check="positive"),
    Param("total_minutes", "", "", "float", "Target for the whole run when --minutes is not given (default: 14; "
          "3 with --quick).", check="positive"),
    Param("scene_size", "", "", "int", "Training scene side in pixels.", check="positive"),
    Param("test_size", "", "", "int", "Test scene side in pixels.", check="positive"),
    Param("seed", "", "", "int", "Seed of the scenes (test scene: seed + 1000; default: 11, a training scene "
          "with every class).", check="non_negative"),
    Param("backbone", "", "", "str", "Network variant (default: the CPU variant without a GPU)."),
    Param("threads", "", "", "int", "CPU threads for torch.", check="positive"),
    Param("min_pq", "", "", "float", "Exit with code 1 if the test PQ is below this (for CI).", check="fraction"),
    Param("overwrite", "", "", "bool", "Replace the contents of a non-empty output folder."),
)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    result = run_demo(args.out, quick=args.quick, train_minutes=args.minutes, total_minutes=args.total_minutes,
                      scene_size=args.scene_size, test_size=args.test_size,
                      **({"seed": args.seed} if args.seed is not None else {}), backbone=args.backbone,
                      overwrite=args.overwrite, num_threads=args.threads, verbose=True)
    if args.min_pq is not None and not result["metrics"]["all"]["pq"] >= args.min_pq:
        print(f"geomax: PQ {result['metrics']['all']['pq']:.3f} is below --min-pq {args.min_pq}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``geomax`` command (subcommands with examples in their help)."""
    parser = _Parser(
        prog="geomax", formatter_class=_formatter,
        description="Panoptic segmentation of satellite and aerial imagery with MaX-DeepLab.",
        epilog=_examples("""
            geomax demo --out demo_run                 # the whole workflow on synthetic data (~15 min on a CPU)
            geomax export scene.tif labels.gpkg chips --things building tree
            geomax train chips --out models/city --epochs 20
            geomax predict models/city scene.tif scene_panoptic.tif --features scene.gpkg
            geomax evaluate scene_panoptic.tif reference.gpkg --image scene.tif
            geomax info models/city
        """))
    parser.add_argument("--version", action="version", version=f"geomax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for tool in TOOLS.values():
        _add_tool_command(sub, tool)

    p = sub.add_parser("info", help="describe a model, a training-data export or a (panoptic) raster",
                       formatter_class=_formatter, description="What a model folder (.emd / .dlpk), a "
                       "training-data export or a raster contains: classes, bands, sizes, metrics.",
                       epilog=_examples("""
                           geomax info models/city
                           geomax info models/city/city.dlpk
                           geomax info chips
                           geomax info out/scene_panoptic.tif
                       """))
    p.add_argument("path", help="Model folder / .emd / .dlpk, export folder, or raster.")
    _add_verbosity(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="run the whole workflow on synthetic data and write a report",
                       formatter_class=_formatter,
                       description="Generate a synthetic training scene and a separate test scene, export chips, "
                       "train MaXDeepLab for a fixed time, predict the test scene, compute PQ and write "
                       "report.html, the panoptic GeoTIFF, the GeoPackage and the model into one folder.",
                       epilog=_examples("""
                           geomax demo --out demo_run                    # about 15 minutes on 2 CPU cores
                           geomax demo --out demo_quick --quick          # a few minutes, lower PQ
                           geomax demo --out demo_long --minutes 30      # train for 30 minutes
                           geomax demo --out demo_ci --total-minutes 10 --min-pq 0.5
                       """))
    for param in _DEMO_PARAMS:
        add_argument(p, param)
    _add_verbosity(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geomax`` command; returns the exit code (0 success, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USER_ERROR
        level = logging.getLogger(LOGGER_NAME).level
        set_verbosity(verbosity_level(args.verbose, args.quiet))
        try:
            with one_line_warnings("geomax"):
                return int(args.func(args) or 0)
        finally:
            set_verbosity(level)  # a call from Python leaves the library's level as it was
    except _UsageError as exc:
        print(f"geomax: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except GeomaxError as exc:
        print(f"geomax: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("geomax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
