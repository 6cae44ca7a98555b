"""Multispectral input: a 6-band uint16 scene (R, G, B, NIR, SWIR1, SWIR2), band selection and RGB display.

    python examples/multispectral.py --out multispectral_run

MaX-DeepLab takes any band count: the first convolution is built for the bands
of the training data, and the model remembers which bands (and their statistics)
it was trained on, so prediction reads the same bands from a new raster.
"""
import argparse
from pathlib import Path

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES, make_scene
from geomax.evaluate import evaluate_raster, format_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="multispectral_run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bands", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                        help="1-based bands to train on (e.g. 4 5 6 for NIR + SWIR only)")
    parser.add_argument("--backbone", default=None)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train = make_scene(out / "train6.tif", out / "train6.gpkg", size=768, seed=0, bands=6, dtype="uint16",
                       nodata_border=16, overwrite=True)
    test = make_scene(out / "test6.tif", out / "test6.gpkg", size=512, seed=1, bands=6, dtype="uint16",
                      nodata_border=16, overwrite=True)
    export_training_data(train.raster, train.labels, out / "chips6", class_field=CLASS_FIELD,
                         class_table=SYNTHETIC_CLASSES, tile_size=128, stride=64, bands=args.bands, overwrite=True,
                         progress=False)
    # Display: NIR-red-green false colour when those bands are present, else the first three.
    rgb = [args.bands.index(b) for b in (4, 1, 2)] if {1, 2, 4} <= set(args.bands) else None
    data = prepare_data(out / "chips6", chip_size=128, batch_size=8, rgb_bands=rgb)
    print(f"bands: {data.band_names}")
    data.show_batch(rows=2, file=out / "show_batch_false_colour.png")
    model = MaXDeepLab(data, backbone=args.backbone)
    model.fit(args.epochs)  # the TrainConfig recipe (geomax.config)
    model.save(out / "model6", overwrite=True)
    # The model reads the bands it was trained on from the full 6-band test raster.
    model.predict_raster(test.raster, out / "test6_panoptic.tif", out_features=out / "test6_panoptic.gpkg",
                         bands=args.bands, overwrite=True)
    print(format_metrics(evaluate_raster(out / "test6_panoptic.tif", test.labels, class_table=SYNTHETIC_CLASSES,
                                         valid_raster=test.raster)))


if __name__ == "__main__":
    main()
