"""Synthetic scene -> export_training_data -> prepare_data -> show_batch PNG.

Usage::

    python examples/show_batch_demo.py [OUT_FOLDER] [--size 1024] [--seed 0] [--chip-size 256]

Writes OUT_FOLDER/scene.tif, OUT_FOLDER/labels.gpkg, the export OUT_FOLDER/chips/
and OUT_FOLDER/show_batch.png (default OUT_FOLDER: ./geomax_demo).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_folder", nargs="?", default="geomax_demo", help="output folder (default ./geomax_demo)")
    p.add_argument("--size", type=int, default=1024, help="scene width and height in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chip-size", type=int, default=256)
    p.add_argument("--bands", type=int, default=4)
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    from geomax import export_training_data, prepare_data
    from geomax.data.synthetic import make_scene

    out = Path(args.out_folder)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = make_scene(out / "scene.tif", out / "labels.gpkg", size=args.size, seed=args.seed, bands=args.bands,
                       nodata_border=16, overwrite=True)
    t1 = time.perf_counter()
    print(f"scene: {scene.raster} ({args.size} px, {args.bands} bands), labels: {scene.labels} "
          f"{scene.counts} [{t1 - t0:.1f} s]")
    info = export_training_data(scene.raster, scene.labels, out / "chips", class_field=scene.class_field,
                                class_table=scene.class_table, tile_size=args.chip_size,
                                stride=args.chip_size // 2, overwrite=True, progress=False)
    t2 = time.perf_counter()
    print(f"export: {info.n_chips} chips in {info.out_folder}, instances {info.n_instances} [{t2 - t1:.1f} s]")
    data = prepare_data(out / "chips", chip_size=args.chip_size, batch_size=8, seed=args.seed)
    print(data)
    png = out / "show_batch.png"
    data.show_batch(rows=2, cols=3, file=png)
    print(f"show_batch: {png} [{time.perf_counter() - t2:.1f} s]")
    return png


if __name__ == "__main__":
    main()
