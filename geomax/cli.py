"""The ``geomax`` command: export, train, predict, evaluate, info, demo.

Each subcommand only parses its arguments and calls a library function. Bad
input (a :class:`geomax.errors.GeomaxError` or an argument error) ends with one
line ``geomax: error: ...`` on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from ._version import __version__
from .config import TilingConfig, TrainConfig, default_of
from .errors import DataError, GeomaxError, OutputExistsError

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


class _UsageError(Exception):
    """An argument error found by argparse (turned into the one-line message)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and do not exit from inside argparse."""

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=100)


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def _number(cast, ok, expected: str, parse_expected: str | None = None):
    """An argparse ``type=`` that converts with ``cast`` and checks ``ok(value)``, with a one-line reason."""
    def convert(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {parse_expected or expected}, got '{text}'")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return convert


_positive_int = _number(int, lambda v: v >= 1, "a number >= 1", "a whole number")
_nonneg_int = _number(int, lambda v: v >= 0, "a number >= 0", "a whole number")
_positive_float = _number(float, lambda v: v > 0, "a number > 0", "a number")
_fraction = _number(float, lambda v: 0 <= v <= 1, "a number between 0 and 1")


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} '{p}' does not exist.")
    return p


# --------------------------------------------------------------------------- subcommands
def _cmd_export(args) -> int:
    from .workflows.export import export

    export(args.raster, args.labels, args.out, class_field=args.class_field, thing_classes=args.things,
           class_table_source=args.classes, tile_size=args.tile_size, stride=args.stride, chip_format=args.format,
           bands=args.bands, keep_empty=args.keep_empty, max_nodata_fraction=args.max_nodata,
           label_layer=args.layer, overwrite=args.overwrite, log=print)
    return 0


def _cmd_train(args) -> int:
    from .workflows.train import resolve_train_config, train

    config = resolve_train_config(epochs=args.epochs, minutes=args.minutes, lr=args.lr, chip_size=args.chip_size,
                                  batch_size=args.batch_size, val_split=args.val_split, seed=args.seed,
                                  monitor=args.monitor, early_stopping=args.early_stopping or None,
                                  num_threads=args.threads)
    train(args.data, args.out, train=config, backbone=args.backbone, pretrained=args.pretrained,
          overwrite=args.overwrite, log=print)
    return 0


def _cmd_predict(args) -> int:
    from .workflows.predict import predict_raster

    _existing(args.model, "Model")
    _existing(args.raster, "Input raster")
    options = {k: getattr(args, k) for k in ("class_threshold", "mask_threshold", "min_thing_area",
                                             "min_stuff_area") if getattr(args, k) is not None}
    if args.keep_disconnected:
        options["split_disconnected_things"] = False
    for path in (args.out, args.features):  # refuse before loading the model
        if path is not None and Path(path).exists() and not args.overwrite:
            raise OutputExistsError(f"'{path}' already exists; pass --overwrite to replace it.")
    result = predict_raster(args.model, args.raster, args.out, out_features=args.features, tile_size=args.tile_size,
                            overlap=args.overlap, batch_size=args.batch_size, bands=args.bands,
                            simplify_tolerance=args.simplify, overwrite=args.overwrite, progress=not args.quiet,
                            **options)
    print(f"panoptic raster: {args.out} ({result.n_instances} thing instances)")
    if args.features:
        print(f"features: {args.features}")
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import format_metrics
    from .workflows.evaluate import evaluate

    metrics = evaluate(args.prediction, args.reference, model=args.model, image=args.image,
                       class_table_source=args.classes, class_field=args.class_field,
                       reference_instances=args.instances, tile_size=args.tile_size, window_size=args.window_size,
                       out_json=args.json, overwrite=args.overwrite, progress=not args.quiet)
    print(format_metrics(metrics))
    if args.json:
        print(f"metrics written to {args.json}")
    return 0


def _cmd_info(args) -> int:
    path = _existing(args.path, "Path")
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


def _cmd_demo(args) -> int:
    from .demo import DEMO_SEED, run_demo

    seed = DEMO_SEED if args.seed is None else args.seed
    result = run_demo(args.out, quick=args.quick, train_minutes=args.minutes, total_minutes=args.total_minutes,
                      scene_size=args.scene_size,
                      test_size=args.test_size, seed=seed, backbone=args.backbone, overwrite=args.overwrite,
                      num_threads=args.threads, verbose=True)
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

    p = sub.add_parser("export", help="cut a raster + vector labels into training chips (ArcGIS Panoptic_Segmentation layout)",
                       formatter_class=_formatter, description="Export training data for deep learning: chips in "
                       "ArcGIS's Panoptic_Segmentation layout (images/, labels/, labels2/<class>/, map.txt, .emd).",
                       epilog=_examples("""
                           geomax export scene.tif labels.gpkg chips --things building tree vehicle
                           geomax export scene.tif labels.shp chips --class-field Classname --things building \\
                               --tile-size 512 --stride 256 --bands 1 2 3
                           geomax export scene.tif labels.gpkg chips --classes model_or_export_folder
                       """))
    p.add_argument("raster", help="georeferenced input raster (GeoTIFF or any format GDAL reads)")
    p.add_argument("labels", help="label polygons (GeoPackage, shapefile, GeoJSON...)")
    p.add_argument("out", help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--class-field", default="class_name", help="field holding class names or Values (default: class_name)")
    p.add_argument("--things", nargs="+", metavar="CLASS", help="thing classes: each feature is one instance")
    p.add_argument("--classes", metavar="SOURCE", help="take the class table (Values, colours, things) from an .emd, "
                   "model or export folder, or 'synthetic'")
    p.add_argument("--tile-size", type=_positive_int, default=256, help="chip size in pixels (default 256)")
    p.add_argument("--stride", type=_positive_int, help="step between chips in pixels (default: tile size)")
    p.add_argument("--format", choices=("tif", "png"), default="tif", help="chip format (default tif)")
    p.add_argument("--bands", type=_positive_int, nargs="+", metavar="N", help="1-based bands to export (default all)")
    p.add_argument("--keep-empty", action="store_true", help="also export chips without any label")
    p.add_argument("--max-nodata", type=_fraction, default=0.5, help="skip chips with more no-data than this share")
    p.add_argument("--layer", help="layer of a multi-layer vector file")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty output folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train a MaXDeepLab model on exported chips", formatter_class=_formatter,
                       description="Train Deep Learning Model (MaXDeepLab) on a training-data export and save the "
                       "model folder (.pth, .emd, .dlpk, model_metrics.html).",
                       epilog=_examples("""
                           geomax train chips --out models/city --epochs 20
                           geomax train chips --out models/city --minutes 30           # wall-clock budget
                           geomax train chips --out models/city --backbone max_deeplab_s --batch-size 4
                       """))
    p.add_argument("data", help="training-data export folder")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--backbone", help="network variant (default: max_deeplab_s with a GPU, max_deeplab_cpu without)")
    p.add_argument("--epochs", type=_positive_int, help=f"epochs to train (default {TrainConfig.DEFAULT_EPOCHS})")
    p.add_argument("--minutes", type=_positive_float, help="train for this many minutes instead of a number of epochs")
    p.add_argument("--lr", type=_positive_float, help=f"peak learning rate (default {default_of(TrainConfig, 'lr')})")
    p.add_argument("--chip-size", type=_positive_int, help="training chip size (default: the exported size)")
    p.add_argument("--batch-size", type=_positive_int, help=f"chips per batch (default {default_of(TrainConfig, 'batch_size')})")
    p.add_argument("--val-split", type=_fraction, help="share of chips for validation "
                   f"(default {default_of(TrainConfig, 'val_split')})")
    p.add_argument("--monitor", choices=("valid_loss", "panoptic_quality"),
                   help="what the best checkpoint and early stopping watch")
    p.add_argument("--early-stopping", action="store_true", help="stop when --monitor stops improving")
    p.add_argument("--pretrained", help="initialise from a saved model or .pth state dict")
    p.add_argument("--seed", type=_nonneg_int, help=f"seed of the validation split and weights (default {default_of(TrainConfig, 'seed')})")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty model folder")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="panoptic segmentation of a whole raster -> GeoTIFF (+ features)",
                       formatter_class=_formatter,
                       description="Panoptic Segmentation Using Deep Learning: tile a raster, predict, stitch "
                       "objects across tiles and write a cloud-optimised panoptic GeoTIFF (band 1 class Value, "
                       "band 2 instance id, band 3 confidence) and optionally a vector layer.",
                       epilog=_examples("""
                           geomax predict models/city scene.tif out/scene_panoptic.tif --features out/scene.gpkg
                           geomax predict models/city/city.dlpk scene.tif out.tif --tile-size 512 --overlap 64
                           geomax predict models/city scene.tif out.tif --class-threshold 0.6 --min-thing-area 20
                       """))
    p.add_argument("model", help="model folder, .emd or .dlpk")
    p.add_argument("raster", help="input raster")
    p.add_argument("out", help="output panoptic GeoTIFF")
    p.add_argument("--features", help="output vector layer (.gpkg, .shp, .geojson, .fgb, .parquet)")
    p.add_argument("--tile-size", type=_positive_int, help="tile size in pixels (default: the training chip size)")
    p.add_argument("--overlap", type=_nonneg_int, help="overlap between tiles in pixels (default: a quarter of the tile)")
    p.add_argument("--batch-size", type=_positive_int, help=f"tiles per batch (default {default_of(TilingConfig, 'batch_size')})")
    p.add_argument("--bands", type=_positive_int, nargs="+", metavar="N", help="1-based input bands in the model's order")
    p.add_argument("--class-threshold", type=_fraction, help="keep segments whose class probability is at least this")
    p.add_argument("--mask-threshold", type=_fraction, help="pixels whose best mask probability is below this are void")
    p.add_argument("--min-thing-area", type=_nonneg_int, help="drop thing segments smaller than this (pixels)")
    p.add_argument("--min-stuff-area", type=_nonneg_int, help="drop stuff segments smaller than this (pixels)")
    p.add_argument("--keep-disconnected", action="store_true",
                   help="one object per detected mask even when its pixels fall apart "
                        "(default: one object per separate region)")
    p.add_argument("--simplify", type=_positive_float, help="polygon simplification tolerance (CRS units)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="panoptic quality (PQ/SQ/RQ) of a panoptic raster or a model",
                       formatter_class=_formatter,
                       description="Compute Panoptic Accuracy: PQ, SQ and RQ (all / things / stuff / per class, "
                       "as panopticapi defines them) of a panoptic raster against reference labels given as "
                       "vectors or as a raster on the same grid. With --model, PREDICTION is the input image and "
                       "the model is run first.",
                       epilog=_examples("""
                           geomax evaluate scene_panoptic.tif reference.gpkg --image scene.tif
                           geomax evaluate scene_panoptic.tif ref_classes.tif --instances ref_instances.tif
                           geomax evaluate scene.tif reference.gpkg --model models/city --json pq.json
                       """))
    p.add_argument("prediction", help="panoptic GeoTIFF from 'geomax predict' (or the input image with --model)")
    p.add_argument("reference", help="reference labels: vector file, or raster (band 1 class Value, band 2 instance id)")
    p.add_argument("--model", help="run this model on PREDICTION (an image) first")
    p.add_argument("--class-field", help="class field of vector labels (default: detected, e.g. class_name)")
    p.add_argument("--instances", help="reference instance raster, when REFERENCE is a one-band class raster")
    p.add_argument("--image", help="the input image: its no-data pixels are left out")
    p.add_argument("--classes", help="class table source (.emd, model or export folder, 'synthetic'); default: the "
                   "class names stored in the panoptic raster")
    p.add_argument("--tile-size", type=_positive_int, help="tile size with --model")
    p.add_argument("--window-size", type=_positive_int, default=4096, help="evaluation window (pixels, default 4096)")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("info", help="describe a model, a training-data export or a (panoptic) raster",
                       formatter_class=_formatter, description="What a model folder (.emd / .dlpk), a "
                       "training-data export or a raster contains: classes, bands, sizes, metrics.",
                       epilog=_examples("""
                           geomax info models/city
                           geomax info models/city/city.dlpk
                           geomax info chips
                           geomax info out/scene_panoptic.tif
                       """))
    p.add_argument("path", help="model folder / .emd / .dlpk, export folder, or raster")
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
    p.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    p.add_argument("--quick", action="store_true", help="small scenes and a short training (a few minutes)")
    p.add_argument("--minutes", type=_positive_float, help="training budget in minutes (default: whatever keeps the "
                   "whole run within --total-minutes)")
    p.add_argument("--total-minutes", type=_positive_float, help="target for the whole run when --minutes is not "
                   "given (default 14; 3 with --quick)")
    p.add_argument("--scene-size", type=_positive_int, help="training scene side in pixels")
    p.add_argument("--test-size", type=_positive_int, help="test scene side in pixels")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the scenes (test scene: seed + 1000; default 11, a training scene with every class)")
    p.add_argument("--backbone", help="network variant (default: the CPU variant without a GPU)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch")
    p.add_argument("--min-pq", type=_fraction, help="exit with code 1 if the test PQ is below this (for CI)")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty output folder")
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
        return int(args.func(args) or 0)
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
