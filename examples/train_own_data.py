"""Train MaXDeepLab on your own GeoTIFF and label polygons, then segment the whole raster.

    python examples/train_own_data.py scene.tif labels.gpkg --class-field Classname \
        --things building tree --out my_run --epochs 20

The labels may be any vector format geopandas reads (GeoPackage, shapefile,
GeoJSON), in any CRS (they are reprojected to the raster's). Every feature of a
thing class is one instance; all other classes are stuff.
"""
import argparse
from pathlib import Path

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.evaluate import evaluate_raster, format_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raster", help="georeferenced image (GeoTIFF)")
    parser.add_argument("labels", help="label polygons (GeoPackage, shapefile...)")
    parser.add_argument("--class-field", default="class_name", help="field holding class names or Values")
    parser.add_argument("--things", nargs="+", required=True, help="thing classes (each feature one instance)")
    parser.add_argument("--out", default="own_data_run", help="output folder")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the training config's)")
    parser.add_argument("--backbone", default=None)
    args = parser.parse_args()
    out = Path(args.out)

    export_training_data(args.raster, args.labels, out / "chips", class_field=args.class_field,
                         thing_classes=args.things, tile_size=args.chip_size, stride=args.chip_size // 2,
                         progress=False)
    data = prepare_data(out / "chips", chip_size=args.chip_size, batch_size=args.batch_size)
    model = MaXDeepLab(data, backbone=args.backbone)
    model.fit(args.epochs, lr=args.lr, early_stopping=True, monitor="valid_loss")
    print(format_metrics(model.compute_metrics()))
    folder = model.save(out / "model", overwrite=True)  # replaces an earlier run's model only
    model.predict_raster(args.raster, out / "panoptic.tif", out_features=out / "panoptic.gpkg")
    # In-sample check only: evaluate on a raster the model did not see for a real accuracy figure.
    metrics = evaluate_raster(out / "panoptic.tif", args.labels, class_table=model.class_table,
                              class_field=args.class_field, valid_raster=args.raster)
    print(format_metrics(metrics))
    print(f"model: {folder}\npanoptic raster: {out / 'panoptic.tif'}\nfeatures: {out / 'panoptic.gpkg'}")


if __name__ == "__main__":
    main()
