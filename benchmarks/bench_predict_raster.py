"""Benchmark of ``predict_raster``: speed, peak memory, objects split at tile borders.

(a) speed: end-to-end megapixels per second of ``predict_raster`` against the bare
    predictor calls on the same tiles (same run, same machine). The default
    predictor is the tile-view oracle (ground truth of the synthetic scene, as a
    model that only sees its tile would give it) whose cost is a real MaX-DeepLab
    network forward on every tile (``--network``, random weights), so the
    outputs -- and the stitching / writing / vectorising load -- are realistic and
    the compute is a real network's. ``--network none --compute-ms X`` swaps the
    network for a fixed sleep per tile; ``--model PATH`` uses a trained model.
(b) peak memory (peak resident set, ``VmHWM``, of a fresh subprocess per size, and
    its growth over the process's footprint just before ``predict_raster``) and time per
    megapixel of ``predict_raster`` with features (a GeoPackage) for scenes of 2048^2,
    4096^2 and 8192^2 pixels, oracle predictor; both should stay flat (the ratios of the
    largest to the smallest scene are reported).
(c) objects split at tile borders on the synthetic scene: true objects that come
    out with more than one instance id (and output instances that cover more
    than one true object), oracle in tile view.

Prints a table and writes ``benchmarks/results/bench_predict_raster.json`` (paths in it
relative to the repository, or file names).

    python benchmarks/bench_predict_raster.py                   # full run
    python benchmarks/bench_predict_raster.py --sizes 1024 2048 --speed-size 512   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geomax.inference.predictor import TilePredictor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def shown_path(path) -> str | None:
    """``path`` as the JSON shows it: relative to the repository when inside it, else its file name."""
    if path is None:
        return None
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


# --------------------------------------------------------------------------- helpers
def scene(folder: Path, size: int, bands: int = 3, seed: int = 0):
    from geomax.data.synthetic import make_scene

    raster, labels = folder / f"scene_{size}.tif", folder / f"labels_{size}.gpkg"
    return make_scene(raster, labels, size=size, seed=seed, bands=bands, nodata_border=16, overwrite=True)


def oracle_for(info, compute_seconds: float = 0.0, view: str = "tile"):
    import geopandas as gpd

    from geomax.inference.predictor import OracleTilePredictor

    labels = gpd.read_file(info.labels)
    return OracleTilePredictor(labels, info.class_table, n_bands=len(info.band_names),
                               band_names=list(info.band_names), transform=info.transform,
                               class_field=info.class_field, view=view, compute_seconds=compute_seconds)


class NetworkTimedOracle(TilePredictor):
    """Runs a real network forward on every batch (the cost), returns the oracle's truth (the content)."""

    def __init__(self, oracle, variant: str, threads: int):
        import torch

        from geomax.models.maxdeeplab import build_maxdeeplab

        torch.set_num_threads(threads)
        self.torch = torch
        self.oracle = oracle
        self.n_bands, self.class_table, self.band_names = oracle.n_bands, oracle.class_table, oracle.band_names
        self.tile_multiple = 16
        self.network = build_maxdeeplab(variant, in_channels=oracle.n_bands,
                                        num_classes=oracle.class_table.n_classes).eval()
        self.forward_seconds = 0.0

    def forward(self, tiles: np.ndarray, valid: np.ndarray) -> None:
        t0 = time.perf_counter()
        x = self.torch.from_numpy(tiles.astype(np.float32) / 255.0) * self.torch.from_numpy(valid[:, None])
        with self.torch.no_grad():
            self.network(x)
        self.forward_seconds += time.perf_counter() - t0

    def predict_tiles(self, tiles, valid, windows=None, **options):
        self.forward(tiles, valid)
        return self.oracle.predict_tiles(tiles, valid, windows=windows, **options)


def bare_predictor_seconds(predictor, raster, tile_size, overlap, batch_size) -> float:
    """Seconds spent in the predictor alone, on the same tiles and batches predict_raster sends."""
    import rasterio

    from geomax.inference.tiling import TileGrid, TileReader

    with rasterio.open(raster) as src:
        grid = TileGrid(src.height, src.width, tile_size, overlap)
        reader = TileReader(src, list(range(1, predictor.n_bands + 1)))
        seconds, batch = 0.0, []

        def run():
            nonlocal seconds
            todo = [b for b in batch if b[2].any()]
            if todo:
                tiles, valid = np.stack([b[1] for b in todo]), np.stack([b[2] for b in todo])
                t0 = time.perf_counter()
                if isinstance(predictor, NetworkTimedOracle):
                    predictor.forward(tiles, valid)  # the bare network only
                else:
                    predictor.predict_tiles(tiles, valid, windows=[b[0] for b in todo])
                seconds += time.perf_counter() - t0
            batch.clear()

        for r, c in grid:
            w = grid.tile_window(r, c)
            batch.append((w, *reader.read(w)))
            if len(batch) == batch_size:
                run()
        if batch:
            run()
    return seconds


def piecewise(instance_map: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    out = np.zeros(instance_map.shape, np.int64)
    n_total = 0
    for i, box in enumerate(ndimage.find_objects(instance_map), start=1):
        if box is None:
            continue
        comp, n = ndimage.label(instance_map[box] == i)
        sub = out[box]
        sub[comp > 0] = comp[comp > 0] + n_total
        n_total += n
    return out


def split_report(info, out_raster) -> dict:
    """Compare the output instances with the truth (true objects cut to 4-connected pieces)."""
    import geopandas as gpd
    import rasterio

    from geomax.data.rasterize import rasterize_labels

    labels = gpd.read_file(info.labels)
    with rasterio.open(out_raster) as src, rasterio.open(info.raster) as img:
        inst = src.read(2).astype(np.int64)
        valid = img.dataset_mask() > 0
    _, truth = rasterize_labels(labels, info.class_field, info.class_table, info.transform, (info.size, info.size))
    truth = piecewise(np.where(valid, truth, 0))
    m = (truth > 0) & (inst > 0)
    pairs = np.unique(np.stack([truth[m], inst[m]]), axis=1)
    t_ids, t_n = np.unique(pairs[0], return_counts=True)
    o_ids, o_n = np.unique(pairs[1], return_counts=True)
    return {"true_objects": int(len(np.unique(truth[truth > 0]))), "output_instances": int(inst.max()),
            "objects_split": int((t_n > 1).sum()), "instances_merging_objects": int((o_n > 1).sum())}


# --------------------------------------------------------------------------- parts
def part_speed(args, folder: Path) -> dict:
    from geomax.inference.predict_raster import predict_raster

    info = scene(folder, args.speed_size)
    if args.model:
        from geomax.models.loading import load_predictor

        predictor, kind = load_predictor(args.model), f"model {shown_path(args.model)}"
    elif args.network != "none":
        predictor = NetworkTimedOracle(oracle_for(info), args.network, args.threads)
        kind = f"oracle + {args.network} forward (random weights, {args.threads} threads)"
    else:
        predictor, kind = oracle_for(info, args.compute_ms / 1000.0), f"oracle + {args.compute_ms} ms sleep per tile"
    if isinstance(predictor, NetworkTimedOracle):  # warm-up: first calls allocate and tune kernels
        predictor.forward(np.zeros((args.batch_size, predictor.n_bands, args.tile_size, args.tile_size), np.uint8),
                          np.ones((args.batch_size, args.tile_size, args.tile_size), bool))
    # bare predictor before and after the end-to-end run (shared machine: average out drifting load)
    bare_runs = [bare_predictor_seconds(predictor, info.raster, args.tile_size, args.overlap, args.batch_size)]
    if isinstance(predictor, NetworkTimedOracle):
        predictor.forward_seconds = 0.0
    res = predict_raster(predictor, info.raster, folder / "speed_out.tif", folder / "speed_out.gpkg",
                         tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                         overwrite=True, progress=False)
    forward_in_run = getattr(predictor, "forward_seconds", None)
    bare_runs.append(bare_predictor_seconds(predictor, info.raster, args.tile_size, args.overlap, args.batch_size))
    bare = float(np.mean(bare_runs))
    t = res.timings
    mpx = info.size ** 2 / 1e6
    # what predict_raster adds on top of the predictor: everything but the predict_tiles calls
    pipeline = t["total"] - t["predict"]
    oracle_labels = 0.0
    if forward_in_run is not None:
        oracle_labels = t["predict"] - forward_in_run  # the oracle's own labelling, not a model cost
    return {
        "predictor": kind, "size": info.size, "megapixels": mpx, "tiles": res.n_tiles,
        "bare_predictor_s": bare, "bare_predictor_runs_s": bare_runs, "bare_mpx_per_s": mpx / bare,
        "predict_tiles_in_run_s": t["predict"], "network_forward_in_run_s": forward_in_run,
        "end_to_end_s": t["total"], "end_to_end_mpx_per_s": mpx / t["total"],
        "end_to_end_without_oracle_labelling_s": t["total"] - oracle_labels,
        "pipeline_s": pipeline, "pipeline_overhead_vs_bare": pipeline / bare,
        "pipeline_ms_per_tile": 1000 * pipeline / res.n_tiles,
        "stage_s": {k: round(v, 3) for k, v in t.items()}, "instances": res.n_instances, "features": res.n_features,
    }


def _rss_kb(field: str) -> float:
    """Resident memory of this process in kB: ``VmRSS`` (now) or ``VmHWM`` (peak) from /proc (Linux).

    ``ru_maxrss`` is not used: Linux carries it over from the parent across fork + exec, so a
    child started by a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_child(raster: str, labels_info: str, out: str, tile_size: int, overlap: int, batch_size: int) -> None:
    """Runs in a fresh process: one predict_raster, prints peak RSS figures as JSON."""
    import pickle

    from geomax.inference.predict_raster import predict_raster

    info = pickle.loads(bytes.fromhex(labels_info))
    predictor = oracle_for(info)
    base = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    res = predict_raster(predictor, raster, out, str(Path(out).with_suffix(".gpkg")), tile_size=tile_size,
                         overlap=overlap, batch_size=batch_size, overwrite=True, progress=False)
    peak = _rss_kb("VmHWM")
    print(json.dumps({"peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024, "growth_mb": (peak - base) / 1024,
                      "seconds": time.perf_counter() - t0, "tiles": res.n_tiles, "instances": res.n_instances,
                      "features": res.n_features}))


def part_memory(args, folder: Path) -> list[dict]:
    import pickle

    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        info = scene(folder, size)
        gen = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child-memory", str(info.raster), pickle.dumps(info).hex(),
               str(folder / f"mem_out_{size}.tif"), str(args.tile_size), str(args.overlap), str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        row = {"size": size, "scene_generation_s": gen, **json.loads(out.stdout.strip().splitlines()[-1])}
        row["megapixels"] = size ** 2 / 1e6
        row["s_per_mpx"] = row["seconds"] / row["megapixels"]
        rows.append(row)
        for p in folder.glob(f"*_{size}.*"):
            p.unlink()
        for p in folder.glob(f"mem_out_{size}.*"):
            p.unlink()
    return rows


def part_split(args, folder: Path) -> dict:
    from geomax.inference.predict_raster import predict_raster

    info = scene(folder, args.split_size, seed=7)
    res = predict_raster(oracle_for(info), info.raster, folder / "split_out.tif", tile_size=args.tile_size,
                         overlap=args.overlap, batch_size=args.batch_size, overwrite=True, progress=False)
    return {"size": info.size, "tiles": res.n_tiles, "merges": res.n_merges, **split_report(info, res.out_raster)}


# --------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192], help="scene sizes for (b)")
    ap.add_argument("--speed-size", type=int, default=1024, help="scene size for (a)")
    ap.add_argument("--split-size", type=int, default=2048, help="scene size for (c)")
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--network", default="max_deeplab_cpu", help="variant whose forward is the predictor's cost, "
                                                                 "or 'none'")
    ap.add_argument("--compute-ms", type=float, default=200.0, help="sleep per tile when --network none")
    ap.add_argument("--model", default=None, help="trained model (.emd / .dlpk / folder) for (a)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_predict_raster.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_predict_raster_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        speed = part_speed(args, folder)
        split = part_split(args, folder)
        memory = part_memory(args, folder)
        wall = time.perf_counter() - t0
    memory_ratio = memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"] if memory else None
    time_ratio = memory[-1]["s_per_mpx"] / memory[0]["s_per_mpx"] if memory else None

    print(f"\n(a) speed, {speed['size']}^2 px, {speed['tiles']} tiles of {args.tile_size} (overlap {args.overlap}), "
          f"predictor: {speed['predictor']}")
    runs = ", ".join(f"{x:.2f}" for x in speed["bare_predictor_runs_s"])
    print(f"    bare predictor     {speed['bare_predictor_s']:8.2f} s  {speed['bare_mpx_per_s']:8.3f} Mpx/s "
          f"(runs before / after: {runs} s)")
    print(f"    predict_raster     {speed['end_to_end_s']:8.2f} s  {speed['end_to_end_mpx_per_s']:8.3f} Mpx/s "
          f"(predict_tiles inside: {speed['predict_tiles_in_run_s']:.2f} s"
          + (f", of which network {speed['network_forward_in_run_s']:.2f} s" if speed["network_forward_in_run_s"]
             is not None else "") + ")")
    print(f"    pipeline (all but predict_tiles) {speed['pipeline_s']:.2f} s = "
          f"{100 * speed['pipeline_overhead_vs_bare']:.1f}% of the bare predictor, "
          f"{speed['pipeline_ms_per_tile']:.0f} ms per tile; stages {speed['stage_s']}")
    print("\n(b) peak memory and time per megapixel (fresh process per size, oracle predictor, features to .gpkg)")
    print(f"    {'size':>6} {'peak RSS MB':>12} {'before MB':>10} {'growth MB':>10} {'seconds':>8} {'s / Mpx':>8} "
          f"{'instances':>9} {'features':>8}")
    for r in memory:
        print(f"    {r['size']:>6} {r['peak_rss_mb']:12.0f} {r['rss_before_mb']:10.0f} {r['growth_mb']:10.0f} "
              f"{r['seconds']:8.1f} {r['s_per_mpx']:8.3f} {r['instances']:9d} {r['features']:8d}")
    if len(memory) > 1:
        print(f"    largest / smallest: peak RSS {memory_ratio:.2f}, time per Mpx {time_ratio:.2f}")
    print(f"\n(c) split objects, {split['size']}^2 synthetic scene, {split['tiles']} tiles, tile-view oracle: "
          f"{split['objects_split']} of {split['true_objects']} objects split, "
          f"{split['instances_merging_objects']} wrong merges ({split['merges']} overlap matches)")

    result = {
        "benchmark": "predict_raster",
        "args": {**vars(args), "out": shown_path(args.out), "model": shown_path(args.model)}, "wall_s": wall,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "speed": speed, "memory": memory, "split": split,
        "memory_ratio_largest_smallest": memory_ratio,
        "s_per_mpx_ratio_largest_smallest": time_ratio,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {shown_path(out)}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        memory_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
    else:
        main()
