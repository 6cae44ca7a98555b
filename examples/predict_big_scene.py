"""Segment a large raster with a saved model: tiled, memory-flat, seamless across tiles.

    python examples/predict_big_scene.py models/city scene.tif out/scene_panoptic.tif
    python examples/predict_big_scene.py models/city --synthetic 4096 out/big_panoptic.tif

The raster is read and written window by window, so memory does not grow with
its size; objects cut by tile borders come out as one instance and one polygon.
"""
import argparse
import time
from pathlib import Path

import rasterio

from geomax import MaXDeepLab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder, .emd or .dlpk")
    parser.add_argument("raster", nargs="?", help="input raster (or use --synthetic)")
    parser.add_argument("out", help="output panoptic GeoTIFF")
    parser.add_argument("--synthetic", type=int, metavar="SIZE", help="generate a synthetic scene of SIZE pixels")
    parser.add_argument("--features", help="output vector layer (default: next to the raster, .gpkg)")
    parser.add_argument("--tile-size", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        from geomax.data.synthetic import make_scene

        model_bands = len(MaXDeepLab.from_model(args.model).band_names)
        scene = make_scene(out.with_name("synthetic_scene.tif"), out.with_name("synthetic_labels.gpkg"),
                           size=args.synthetic, seed=7, bands=model_bands, overwrite=True)
        raster = scene.raster
    elif args.raster:
        raster = Path(args.raster)
    else:
        parser.error("give a raster or --synthetic SIZE")
    features = Path(args.features) if args.features else out.with_suffix(".gpkg")
    model = MaXDeepLab.from_model(args.model)
    with rasterio.open(raster) as src:
        mpix = src.width * src.height / 1e6
    t0 = time.perf_counter()
    kwargs = {} if args.tile_size is None else {"tile_size": args.tile_size}
    result = model.predict_raster(raster, out, out_features=features, overlap=args.overlap,
                                  batch_size=args.batch_size, overwrite=True, **kwargs)
    dt = time.perf_counter() - t0
    print(f"{mpix:.1f} Mpixel in {dt:.1f} s ({mpix / dt:.2f} Mpixel/s); {result.n_instances} objects, "
          f"{result.n_merges} merges across tile borders")
    print(f"raster: {out}\nfeatures: {features}")


if __name__ == "__main__":
    main()
