"""Benchmark of distributed inference: megapixels per second with 1 and 2 Dask workers vs one process.

One run, one machine, the same synthetic scene and the same predictor for every path:

* ``single``: :func:`geomax.inference.predict_raster.predict_raster` in this process;
* ``dask-N``: :func:`geomax.inference.distributed.predict_raster_distributed` on a
  ``LocalCluster`` of N worker processes (one thread each), N = 1 and 2.

The predictor returns the synthetic scene's ground truth as a model that only sees
its tile would (tile-view oracle), and its cost is a real MaX-DeepLab forward pass
(random weights, ``--variant``, one torch thread per process) on every batch, so the
stitching / merging / writing load is realistic and the compute is a real
network's. Every path writes the COG and a GeoPackage; the distributed outputs are
checked against the single-process ones (class band equal, instance count equal).
Times exclude cluster start-up (reported apart) and include everything else. The
ratio ``vs single`` is the speed-up (>1) or the overhead (<1) against ``single``.

Prints a table and writes ``benchmarks/results/bench_distributed.json``.

    python benchmarks/bench_distributed.py                    # default: 1536^2 scene
    python benchmarks/bench_distributed.py --size 1024 --repeats 1   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geomax.inference.predictor import TilePredictor

HERE = Path(__file__).resolve().parent


class NetworkCostOracle(TilePredictor):
    """Network forward on every batch for the cost, the oracle's truth for the content."""

    def __init__(self, labels_path: str, variant: str, threads: int = 1):
        import geopandas as gpd
        import rasterio
        import torch

        from geomax.data.synthetic import SYNTHETIC_CLASSES
        from geomax.inference.predictor import OracleTilePredictor
        from geomax.models.maxdeeplab import build_maxdeeplab

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        raster = str(labels_path).replace("labels_", "scene_").replace(".gpkg", ".tif")
        with rasterio.open(raster) as src:
            transform, n_bands = src.transform, src.count
        self.oracle = OracleTilePredictor(gpd.read_file(labels_path), SYNTHETIC_CLASSES, n_bands=n_bands,
                                          transform=transform, view="tile")
        self.n_bands, self.class_table, self.band_names = n_bands, SYNTHETIC_CLASSES, None
        self.tile_multiple = 16
        self.network = build_maxdeeplab(variant, in_channels=n_bands, num_classes=SYNTHETIC_CLASSES.n_classes).eval()

    def predict_tiles(self, tiles, valid, windows=None, **options):
        x = self.torch.from_numpy(tiles.astype(np.float32) / 255.0) * self.torch.from_numpy(valid[:, None])
        with self.torch.no_grad():
            self.network(x)
        return self.oracle.predict_tiles(tiles, valid, windows=windows, **options)


def make_factory(labels_path: str, variant: str):
    """A picklable zero-argument factory (each worker builds its predictor once)."""
    from functools import partial

    return partial(NetworkCostOracle, labels_path, variant, 1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1536, help="scene side in pixels")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--block-size", type=int, default=672, help="block core side (rounded to whole tiles)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--variant", default="max_deeplab_cpu", help="network whose forward is the per-tile cost")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2, help="timed runs per path (best kept)")
    p.add_argument("--out", default=str(HERE / "results" / "bench_distributed.json"))
    args = p.parse_args(argv)

    import rasterio
    from distributed import Client

    from geomax.data.synthetic import make_scene
    from geomax.inference.distributed import local_cluster, predict_raster_distributed
    from geomax.inference.predict_raster import predict_raster

    tmp = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    info = make_scene(tmp / f"scene_{args.size}.tif", tmp / f"labels_{args.size}.gpkg", size=args.size, seed=0,
                      bands=3, nodata_border=16, overwrite=True)
    megapixels = args.size * args.size / 1e6
    common = dict(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, progress=False,
                  overwrite=True)
    rows = []

    def read(path):
        with rasterio.open(path) as src:
            return src.read()

    # ---- single process
    predictor = NetworkCostOracle(str(info.labels), args.variant, threads=1)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        single = predict_raster(predictor, info.raster, tmp / "single.tif", out_features=tmp / "single.gpkg", **common)
        best = min(best, time.perf_counter() - t0)
    reference = read(tmp / "single.tif")
    rows.append({"path": "single", "workers": 0, "seconds": best, "mpx_per_s": megapixels / best,
                 "startup_s": 0.0, "n_instances": single.n_instances, "same_as_single": True})

    # ---- Dask, N worker processes
    factory = make_factory(str(info.labels), args.variant)
    for n in args.workers:
        t0 = time.perf_counter()
        cluster = local_cluster(n_workers=n, threads_per_worker=1)
        client = Client(cluster)
        startup = time.perf_counter() - t0
        try:
            best, res = float("inf"), None
            for k in range(args.repeats + 1):  # the first run also loads the model on the workers: untimed
                t0 = time.perf_counter()
                [res] = predict_raster_distributed(factory, info.raster, tmp / f"dask{n}.tif",
                                                   out_features=tmp / f"dask{n}.gpkg", client=client,
                                                   block_size=args.block_size, **common)
                if k:
                    best = min(best, time.perf_counter() - t0)
            out = read(tmp / f"dask{n}.tif")
            same = bool(np.array_equal(out[0], reference[0]) and np.array_equal(out[2], reference[2])
                        and res.n_instances == single.n_instances)
            rows.append({"path": f"dask-{n}", "workers": n, "seconds": best, "mpx_per_s": megapixels / best,
                         "startup_s": startup, "n_instances": res.n_instances, "same_as_single": same,
                         "timings": {k: round(v, 3) for k, v in res.timings.items()}})
        finally:
            client.close()
            cluster.close()
    base = rows[0]["seconds"]
    for r in rows:
        r["vs_single"] = base / r["seconds"]

    print(f"\nscene {args.size}x{args.size} ({megapixels:.2f} MPx), tile {args.tile_size}, overlap {args.overlap}, "
          f"block {args.block_size}, network {args.variant}, {os.cpu_count()} CPU cores")
    print(f"{'path':<8} {'seconds':>8} {'MPx/s':>7} {'vs single':>10} {'start-up s':>11} {'same output':>12}")
    for r in rows:
        print(f"{r['path']:<8} {r['seconds']:8.2f} {r['mpx_per_s']:7.3f} {r['vs_single']:10.2f} "
              f"{r['startup_s']:11.1f} {str(r['same_as_single']):>12}")
    result = {"benchmark": "bench_distributed", "machine": platform.platform(), "cpu_count": os.cpu_count(),
              "python": sys.version.split()[0], "args": vars(args), "megapixels": megapixels, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
