"""What a new user gets with the defaults: user situations run through the ``geomax`` command, one budget.

Each situation exports a training scene of the second synthetic style (``benchmarks/user_scenes.py``,
never used for tuning), trains with ``geomax train --minutes M`` and nothing else, predicts a separate
test scene of the same situation with ``geomax predict`` and scores it with ``geomax evaluate``:

====================  =====================================================================
``a_256``             all classes labelled (building; track, ground), 256 px chips, no overlap
``b_512``             the same at 512 px chips (a larger scene, few chips)
``c_footprints``      only the building footprints labelled (the background rule applies)
``d_pan_uint16``      1-band uint16 panchromatic, all classes
``e_4band_nodata``    4-band uint16 with a 32 px no-data border, all classes
``f_small``           a small export: about 30 buildings
====================  =====================================================================

Seeds: training scenes ``100 + i``, test scenes ``900 + i`` (i: the situation's position); nothing is
tuned here. Prints a table and writes ``benchmarks/results/bench_user_data.json``.

    python benchmarks/bench_user_data.py --minutes 15
    python benchmarks/bench_user_data.py --minutes 3 --only c_footprints
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from user_scenes import make_user_scene  # noqa: E402

GEOMAX = [sys.executable, "-m", "geomax.cli"]

#: name: (scene options, label classes kept, export tile size)
SITUATIONS = {
    "a_256": (dict(size=1024), None, 256),
    "b_512": (dict(size=1536), None, 512),
    "c_footprints": (dict(size=1024), ["building"], 256),
    "d_pan_uint16": (dict(size=1024, bands=1, dtype="uint16"), None, 256),
    "e_4band_nodata": (dict(size=1024, bands=4, dtype="uint16", nodata_border=32), None, 256),
    "f_small": (dict(size=512, n_buildings=30), None, 256),
}


def _keep(labels: Path, classes, out: Path) -> Path:
    import geopandas as gpd

    if classes is None:
        return labels
    gdf = gpd.read_file(labels)
    gdf[gdf["class_name"].isin(classes)].to_file(out)
    return out


def _run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:])} failed:\n{res.stderr[-2000:]}")
    return res.stdout


def run_situation(name: str, i: int, minutes: float, work: Path) -> dict:
    scene_opts, classes, tile = SITUATIONS[name]
    d = work / name
    d.mkdir()
    train = make_user_scene(d / "train.tif", d / "train_all.gpkg", seed=100 + i, **scene_opts)
    test = make_user_scene(d / "test.tif", d / "test_all.gpkg", seed=900 + i, **{**scene_opts, "size": 1024})
    train_labels = _keep(train["labels"], classes, d / "train.gpkg")
    test_labels = _keep(test["labels"], classes, d / "test.gpkg")
    t0 = time.monotonic()
    export_log = _run(GEOMAX + ["export", str(d / "train.tif"), str(train_labels), str(d / "chips"),
                                "--things", "building", "--tile-size", str(tile)])
    train_log = _run(GEOMAX + ["train", str(d / "chips"), "--out", str(d / "model"), "--minutes", str(minutes)])
    _run(GEOMAX + ["predict", str(d / "model"), str(d / "test.tif"), str(d / "pred.tif"), "--quiet"])
    _run(GEOMAX + ["evaluate", str(d / "pred.tif"), str(test_labels), "--image", str(d / "test.tif"),
                   "--json", str(d / "metrics.json"), "--quiet"])
    metrics = json.loads((d / "metrics.json").read_text())
    emd = json.loads((d / "model" / "model.emd").read_text())
    building = metrics["per_class"].get("building", {})
    tp, fp, fn = (int(building.get(k, 0)) for k in ("tp", "fp", "fn"))
    return {
        "situation": name, "train_buildings": train["n_buildings"], "test_buildings": test["n_buildings"],
        "chips": int(export_log.split("Exported ")[1].split()[0]),
        "epochs": len(emd.get("TrainingHistory") or []),
        "valid_pq": (emd.get("Metrics") or {}).get("all", {}).get("pq"),
        "test_pq": metrics["all"]["pq"], "test_pq_things": metrics["things"]["pq"],
        "test_pq_stuff": metrics["stuff"]["pq"], "building_tp": tp, "building_fp": fp, "building_fn": fn,
        "building_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "warned_empty": "WARNING: The model" in train_log,
        "background_rule": next((line for line in export_log.splitlines() if line.startswith("Background rule")), ""),
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of every situation")
    parser.add_argument("--only", nargs="*", choices=list(SITUATIONS), help="run these situations only")
    args = parser.parse_args()
    names = args.only or list(SITUATIONS)
    work = Path(tempfile.mkdtemp(prefix="geomax_user_data_"))
    rows = []
    for i, name in enumerate(SITUATIONS):
        if name in names:
            rows.append(run_situation(name, i, args.minutes, work))
            r = rows[-1]
            print(f"{name:<15} chips {r['chips']:3d} epochs {r['epochs']:3d} valid PQ "
                  f"{100 * (r['valid_pq'] or 0):5.1f} test PQ {100 * r['test_pq']:5.1f} (things "
                  f"{100 * r['test_pq_things']:5.1f}) buildings F1 {r['building_f1']:.2f} "
                  f"(tp {r['building_tp']}, fp {r['building_fp']}, fn {r['building_fn']})"
                  f"{'  [warned: empty]' if r['warned_empty'] else ''}", flush=True)
    out = Path(__file__).parent / "results" / "bench_user_data.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"settings": {"minutes": args.minutes, "situations": names,
                                            "seeds": "train 100 + i, test 900 + i"}, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
