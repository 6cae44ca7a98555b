"""Training-data pipeline throughput: scene generation, export, and the prepare_data loader.

Usage::

    python benchmarks/bench_data.py [--size 2048] [--large] [--threads 2]

Prints a table and writes benchmarks/results/bench_data.json. Timings are noisy on
shared machines, so each is also given as a ratio against a baseline measured in
the same run: the export against a plain windowed read + GeoTIFF write of the same
tiles, the loader against plain rasterio reads of the same chips.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048, help="scene size in pixels for export / loader")
    p.add_argument("--large", action="store_true", help="also time an 8192 px scene generation")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--batches", type=int, default=8, help="loader batches to time")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_data.json"))
    args = p.parse_args(argv)

    import rasterio
    import torch
    from rasterio.windows import Window

    from geomax.data.export import export_training_data
    from geomax.data.prepare import prepare_data
    from geomax.data.synthetic import make_scene

    torch.set_num_threads(args.threads)
    rows = []
    results: dict = {"machine": platform.platform(), "torch_threads": args.threads, "scene_size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes = [args.size] + ([8192] if args.large else [])
        for size in sizes:
            scene, sec = _timed(lambda: make_scene(tmp / f"s{size}.tif", tmp / f"s{size}.gpkg", size=size, seed=0,
                                                   bands=4, nodata_border=16))
            mpx = size * size / 1e6
            results[f"make_scene_{size}"] = {"seconds": sec, "megapixels_per_s": mpx / sec}
            rows.append((f"make_scene {size} px, 4 bands uint8", f"{sec:.2f} s", f"{mpx / sec:.1f} Mpx/s", ""))
        scene_raster, scene_labels = tmp / f"s{args.size}.tif", tmp / f"s{args.size}.gpkg"

        # Baseline: read every 256 px window and write it as a GeoTIFF chip (what any export must do).
        def copy_tiles():
            out = tmp / "copy"
            out.mkdir()
            with rasterio.open(scene_raster) as src:
                n = 0
                for r in range(0, src.height - 255, 256):
                    for c in range(0, src.width - 255, 256):
                        a = src.read(window=Window(c, r, 256, 256))
                        with rasterio.open(out / f"{n}.tif", "w", driver="GTiff", width=256, height=256, count=4,
                                           dtype=a.dtype, crs=src.crs, compress="deflate",
                                           transform=src.window_transform(Window(c, r, 256, 256))) as dst:
                            dst.write(a)
                        n += 1
            return n

        n_copy, sec_copy = _timed(copy_tiles)
        info, sec_export = _timed(lambda: export_training_data(
            scene_raster, scene_labels, tmp / "chips", class_field="class_name",
            thing_classes=["building", "tree", "vehicle"], tile_size=256, progress=False))
        mpx = info.megapixels
        results["export"] = {"seconds": sec_export, "chips": info.n_chips, "megapixels": mpx,
                             "megapixels_per_s": mpx / sec_export, "baseline_copy_seconds": sec_copy,
                             "ratio_vs_copy": sec_export / sec_copy}
        rows.append(("export_training_data 256 px tiles", f"{sec_export:.2f} s", f"{mpx / sec_export:.1f} Mpx/s",
                     f"{sec_export / sec_copy:.2f} x read+write copy"))

        # Loader: chips per second through the fastai loader, batch 8, 256 px, 4 bands.
        def raw_reads(n_items):
            data_dir = tmp / "chips"
            ims = sorted((data_dir / "images").glob("*.tif"))
            k = 0
            while k < n_items:
                for im in ims:
                    with rasterio.open(im) as a:
                        a.read()
                    with rasterio.open(data_dir / "labels" / im.name) as b:
                        b.read()
                    for cls in ("building", "tree", "vehicle"):
                        with rasterio.open(data_dir / "labels2" / cls / im.name) as c:
                            c.read()
                    k += 1
                    if k >= n_items:
                        break
            return k

        n_items = args.batches * 8
        _, sec_raw = _timed(lambda: raw_reads(n_items))
        results["loader_baseline_raw_reads"] = {"chips_per_s": n_items / sec_raw}
        rows.append(("raw rasterio reads (image+labels)", f"{sec_raw:.2f} s", f"{n_items / sec_raw:.1f} chips/s", "baseline"))
        for label, tfms in (("prepare_data loader, no transforms", False), ("prepare_data loader, default transforms", None)):
            data = prepare_data(tmp / "chips", chip_size=256, batch_size=8, transforms=tfms, val_split_pct=0.0)
            it = iter(data.train)
            next(it)  # warm-up
            t = time.perf_counter()
            n = 0
            while n < n_items:
                try:
                    xb, yb = next(it)
                except StopIteration:
                    it = iter(data.train)
                    continue
                n += xb.shape[0]
            sec = time.perf_counter() - t
            key = "loader_no_transforms" if tfms is False else "loader_default_transforms"
            results[key] = {"chips_per_s": n / sec, "n_masks": data.n_masks, "batch_size": 8, "chip_size": 256,
                            "bands": data.n_bands, "ratio_vs_raw_reads": (n / sec) / (n_items / sec_raw)}
            rows.append((label, f"{sec:.2f} s", f"{n / sec:.1f} chips/s",
                         f"{(n / sec) / (n_items / sec_raw):.2f} x raw reads (n_masks={data.n_masks})"))

    w = max(len(r[0]) for r in rows)
    print(f"{'step':<{w}}  {'time':>9}  {'rate':>15}  note")
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>9}  {r[2]:>15}  {r[3]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
