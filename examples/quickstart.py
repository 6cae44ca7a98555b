"""Quickstart: the whole geomax workflow in the arcgis.learn style, on a synthetic scene.

    python examples/quickstart.py --out quickstart_run            # about 3 minutes on 2 CPU cores (test PQ ~46)
    python examples/quickstart.py --out quickstart_run --epochs 40   # longer training, about 9 minutes

Steps: make a synthetic georeferenced scene (GeoTIFF + GeoPackage labels) ->
export_training_data -> prepare_data -> MaXDeepLab -> fit -> show_results ->
compute_metrics -> save -> from_model -> predict -> predict_raster.
"""
import argparse
from pathlib import Path

import rasterio
from rasterio.windows import Window

from geomax import MaXDeepLab, export_training_data, predict_raster, prepare_data
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES, make_scene
from geomax.evaluate import evaluate_raster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="quickstart_run", help="output folder")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the training config's)")
    parser.add_argument("--lr-find", action="store_true", help="run lr_find and use its suggestion")
    parser.add_argument("--backbone", default=None, help="network variant (default: CPU or GPU default)")
    parser.add_argument("--size", type=int, default=768, help="side of the synthetic training scene (pixels)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Data: a training scene and a separate test scene (a user starts from their own GeoTIFF + labels).
    train = make_scene(out / "train.tif", out / "train.gpkg", size=args.size, seed=0, bands=4, overwrite=True)
    test = make_scene(out / "test.tif", out / "test.gpkg", size=512, seed=1, bands=4, overwrite=True)
    export_training_data(train.raster, train.labels, out / "chips", class_field=CLASS_FIELD,
                         class_table=SYNTHETIC_CLASSES, tile_size=128, stride=64, overwrite=True, progress=False)

    # 2. The arcgis.learn-style API.
    data = prepare_data(out / "chips", chip_size=128, batch_size=8)
    data.show_batch(rows=2, file=out / "show_batch.png")
    model = MaXDeepLab(data, backbone=args.backbone)
    model.fit(args.epochs, lr=args.lr, lr_find=args.lr_find)  # the TrainConfig recipe, these two overridden
    model.show_results(rows=3, save_path=out / "show_results.png")
    metrics = model.compute_metrics()
    print(f"validation PQ {100 * metrics['all']['pq']:.1f} (things {100 * metrics['things']['pq']:.1f}, "
          f"stuff {100 * metrics['stuff']['pq']:.1f})")
    folder = model.save(out / "quickstart_model", overwrite=True)  # replaces this example's earlier model only

    # 3. Reload without the training data and predict.
    model = MaXDeepLab.from_model(folder / "quickstart_model.emd")
    # One image (any size; here a chip-sized window: the memory slots were sized to a
    # training chip's objects, and predict_raster tiles larger rasters at the chip size).
    with rasterio.open(test.raster) as src:
        chip = src.read(window=Window(128, 128, 128, 128))
    result = model.predict(chip)  # a PanopticResult: class map, instance map, segment table
    print(f"predict: {result.n_things} objects, segments:\n{result.segments.head()}")
    predict_raster(model, test.raster, out / "test_panoptic.tif", out_features=out / "test_panoptic.gpkg",
                   overwrite=True)
    metrics = evaluate_raster(out / "test_panoptic.tif", test.labels, class_table=SYNTHETIC_CLASSES, progress=False)
    print(f"test scene PQ {100 * metrics['all']['pq']:.1f} (things {100 * metrics['things']['pq']:.1f}, "
          f"stuff {100 * metrics['stuff']['pq']:.1f})")
    print(f"outputs in {out.resolve()}")


if __name__ == "__main__":
    main()
