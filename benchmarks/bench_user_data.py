"""What a new user gets with the defaults: user situations run through the ``geomax`` command, one budget.

Each cell exports a training scene, trains with ``geomax train --minutes M`` and nothing else, predicts
a separate test scene with ``geomax predict`` and scores it. The synthetic cells of the second style
(``benchmarks/user_scenes.py``, never used for tuning) are scored with ``geomax evaluate``:

====================  =====================================================================
``a_256``             all classes labelled (building; track, ground), 256 px chips, no overlap
``b_512``             the same at 512 px chips (a larger scene, few chips)
``c_footprints``      only the building footprints labelled (the background rule applies)
``d_pan_uint16``      1-band uint16 panchromatic, all classes
``e_4band_nodata``    4-band uint16 with a 32 px no-data border, all classes
``f_small``           a small export: about 30 buildings
``demo_path``         the reference: the demo's own scenes and export (``geomax.data.synthetic``, 4 bands,
                      a 1536 px training and a 1024 px test scene, ``DEMO_DEFAULTS``), exported as
                      ``geomax demo`` does (``--classes synthetic --tile-size 128 --stride 64``)
``g_neon_crowns``     real airborne RGB: NEON tree crowns at 0.1 m (``benchmarks/neon_crowns.py``), trained
                      on the top 60 % of four images, scored on the bottom 40 % by box matching (IoU >= 0.5:
                      precision, recall, F1); needs ``--neon DIR``, skipped without it
====================  =====================================================================

Seeds: training scenes ``100 + i``, test scenes ``900 + i`` (i: the cell's position, ``demo_path`` 6; the
demo itself uses 11 / 1011); nothing is tuned here. Every row also counts the thing instances predicted
on the test scene (``instances_predicted``). The summary compares each cell's test PQ_things with the
``demo_path`` cell's of the same run; the rule: every synthetic cell predicts instances and reaches at
least half the demo path's PQ_things, and the NEON cell reaches F1 >= 0.5 (PASS / FAIL per cell).
Prints a table and writes ``benchmarks/results/bench_user_data.json`` (no paths of this machine).

``--neon DIR``: the folder holding the NEON sample images and their ``.xml`` annotations, the
``deepforest/data`` folder of the ``deepforest==2.1.0`` wheel (``OSBS_029.tif``, ``SOAP_061.png``,
``2019_YELL_2_541000_4977000_image_crop.png``, ``2019_YELL_2_528000_4978000_image_crop2.png``).

    python benchmarks/bench_user_data.py --minutes 15 --neon deepforest/data
    python benchmarks/bench_user_data.py --minutes 3 --only c_footprints demo_path
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import neon_crowns  # noqa: E402
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
#: every cell, in order (a cell's position i gives its seeds)
CELLS = [*SITUATIONS, "demo_path", "g_neon_crowns"]
REFERENCE = "demo_path"
REAL = "g_neon_crowns"
MIN_PQ_RATIO = 0.5   # of the demo path's PQ_things
MIN_F1 = 0.5         # of the real cell
SEEDS = (100, 900)   # training scene 100 + i, test scene 900 + i: this matrix's test seeds, never tuned on


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


def count_instances(pred: Path) -> int:
    """Thing instances in a panoptic raster (``geomax evaluate --json`` does not hold this count: its
    per-class fp leaves out segments on void), i.e. its distinct instance ids of the thing classes."""
    return len(neon_crowns.instance_boxes(pred))


def _export_train(d: Path, raster: Path, labels: Path, export_opts: list[str], minutes: float,
                  train_opts: Sequence[str] = ()) -> dict:
    """``geomax export`` + ``geomax train --minutes`` (plus ``train_opts``): chips, epochs, validation PQ, logs."""
    export_log = _run(GEOMAX + ["export", str(raster), str(labels), str(d / "chips"), *export_opts])
    train_log = _run(GEOMAX + ["train", str(d / "chips"), "--out", str(d / "model"), "--minutes", str(minutes),
                               *train_opts])
    emd = json.loads((d / "model" / "model.emd").read_text())
    return {
        "chips": int(export_log.split("Exported ")[1].split()[0]),
        "epochs": len(emd.get("TrainingHistory") or []),
        "lr": (emd.get("ModelParameters") or {}).get("train_config", {}).get("lr"),
        "valid_pq": (emd.get("Metrics") or {}).get("all", {}).get("pq"),
        "warned_empty": "WARNING: The model" in train_log,
        "background_rule": next((line for line in export_log.splitlines() if line.startswith("Background rule")), ""),
    }


def _predict_evaluate(d: Path, test_raster: Path, test_labels: Path) -> dict:
    """``geomax predict`` + ``geomax evaluate --json`` on the test scene: PQ, building counts, instances."""
    _run(GEOMAX + ["predict", str(d / "model"), str(test_raster), str(d / "pred.tif"), "--quiet"])
    _run(GEOMAX + ["evaluate", str(d / "pred.tif"), str(test_labels), "--image", str(test_raster),
                   "--json", str(d / "metrics.json"), "--quiet"])
    metrics = json.loads((d / "metrics.json").read_text())
    building = metrics["per_class"].get("building", {})
    tp, fp, fn = (int(building.get(k, 0)) for k in ("tp", "fp", "fn"))
    return {
        "test_pq": metrics["all"]["pq"], "test_pq_things": metrics["things"]["pq"],
        "test_pq_stuff": metrics["stuff"]["pq"], "building_tp": tp, "building_fp": fp, "building_fn": fn,
        "building_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "instances_predicted": count_instances(d / "pred.tif"),
    }


def run_situation(name: str, i: int, minutes: float, work: Path, train_opts: Sequence[str] = (),
                  seeds: tuple[int, int] = SEEDS) -> dict:
    """One synthetic cell; scenes of seeds ``seeds[0] + i`` (training) and ``seeds[1] + i`` (test)."""
    scene_opts, classes, tile = SITUATIONS[name]
    d = work / name
    d.mkdir()
    train = make_user_scene(d / "train.tif", d / "train_all.gpkg", seed=seeds[0] + i, **scene_opts)
    test = make_user_scene(d / "test.tif", d / "test_all.gpkg", seed=seeds[1] + i, **{**scene_opts, "size": 1024})
    train_labels = _keep(train["labels"], classes, d / "train.gpkg")
    test_labels = _keep(test["labels"], classes, d / "test.gpkg")
    t0 = time.monotonic()
    trained = _export_train(d, d / "train.tif", train_labels, ["--things", "building", "--tile-size", str(tile)],
                            minutes, train_opts)
    scored = _predict_evaluate(d, d / "test.tif", test_labels)
    return {"situation": name, "train_buildings": train["n_buildings"], "test_buildings": test["n_buildings"],
            **trained, **scored, "seconds": round(time.monotonic() - t0, 1)}


def run_demo_path(name: str, i: int, minutes: float, work: Path, train_opts: Sequence[str] = (),
                  seeds: tuple[int, int] = SEEDS) -> dict:
    """The demo's scenes (``make_scene``, ``DEMO_DEFAULTS``) and its export (``geomax.demo._run_demo`` calls
    ``export(..., class_field=CLASS_FIELD, class_table_source="synthetic", tile_size=chip_size,
    stride=chip_size // 2)``: the same through the command's options); train, predict, evaluate as above."""
    from geomax.data.synthetic import CLASS_FIELD, make_scene
    from geomax.demo import DEMO_DEFAULTS

    d = work / name
    d.mkdir()
    chip, bands = DEMO_DEFAULTS["chip_size"], DEMO_DEFAULTS["bands"]
    train = make_scene(d / "train.tif", d / "train.gpkg", size=DEMO_DEFAULTS["scene_size"], seed=seeds[0] + i,
                       bands=bands)
    test = make_scene(d / "test.tif", d / "test.gpkg", size=DEMO_DEFAULTS["test_size"], seed=seeds[1] + i, bands=bands)
    t0 = time.monotonic()
    trained = _export_train(d, train.raster, train.labels, ["--class-field", CLASS_FIELD, "--classes", "synthetic",
                                                            "--tile-size", str(chip), "--stride", str(chip // 2)],
                            minutes, train_opts)
    scored = _predict_evaluate(d, test.raster, test.labels)
    return {"situation": name, "train_buildings": train.counts["building"], "test_buildings": test.counts["building"],
            "train_counts": train.counts, "test_counts": test.counts, **trained, **scored,
            "seconds": round(time.monotonic() - t0, 1)}


def run_neon(name: str, i: int, minutes: float, work: Path, neon: Path) -> dict:
    """NEON crowns (:mod:`neon_crowns`): train on the mosaic of the top parts, predict each bottom part,
    match the predicted instances' boxes to the crown boxes."""
    d = work / name
    d.mkdir()
    data = neon_crowns.prepare(neon, d / "data")
    t0 = time.monotonic()
    trained = _export_train(d, data["train_raster"], data["train_labels"], ["--things", neon_crowns.CLASS_NAME],
                            minutes)
    pred = {}
    for key, test in data["tests"].items():
        out = d / f"pred_{key}.tif"
        _run(GEOMAX + ["predict", str(d / "model"), str(test["raster"]), str(out), "--quiet"])
        pred[key] = neon_crowns.instance_boxes(out)
    scores = neon_crowns.score({k: t["boxes"] for k, t in data["tests"].items()}, pred)
    pooled = scores["all"]
    return {"situation": name, "train_crowns": data["train_crowns"],
            "test_crowns": sum(t["crowns"] for t in data["tests"].values()), **trained,
            "instances_predicted": pooled["predicted"],
            **{k: pooled[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")},
            "per_image": scores["per_image"], "seconds": round(time.monotonic() - t0, 1)}


def _line(r: dict) -> str:
    """One table line of a row."""
    head = (f"{r['situation']:<15} chips {r['chips']:3d} epochs {r['epochs']:3d} valid PQ "
            f"{100 * (r['valid_pq'] or 0):5.1f} ")
    tail = f" inst {r['instances_predicted']:4d} {r['seconds']:6.0f} s{'  [warned: empty]' if r['warned_empty'] else ''}"
    if r["situation"] == REAL:
        return (head + f"crowns train {r['train_crowns']} test {r['test_crowns']}: F1 {r['f1']:.2f} (P "
                f"{r['precision']:.2f} R {r['recall']:.2f}; tp {r['tp']}, fp {r['fp']}, fn {r['fn']})" + tail)
    return (head + f"test PQ {100 * r['test_pq']:5.1f} (things {100 * r['test_pq_things']:5.1f}) buildings F1 "
            f"{r['building_f1']:.2f} (tp {r['building_tp']}, fp {r['building_fp']}, fn {r['building_fn']})" + tail)


def summarise(rows: list[dict]) -> list[dict]:
    """Each cell against the rule: synthetic cells predict instances and reach PQ_things >= half the demo
    path's of the same run; the real cell F1 >= 0.5. ``verdict``: PASS, FAIL or n/a (no demo_path row)."""
    ref = next((r for r in rows if r["situation"] == REFERENCE), None)
    ref_pq = ref["test_pq_things"] if ref else None
    out = []
    for r in rows:
        if r["situation"] == REAL:
            ok = r["f1"] >= MIN_F1
            out.append({"situation": r["situation"], "f1": r["f1"], "verdict": "PASS" if ok else "FAIL",
                        "rule": f"F1 >= {MIN_F1}"})
            continue
        pq = r["test_pq_things"]
        ratio = pq / ref_pq if ref_pq and pq == pq else None  # pq == pq: not NaN
        if r["situation"] == REFERENCE:
            ok = r["instances_predicted"] > 0
        elif ref is None:
            out.append({"situation": r["situation"], "pq_things": pq, "ratio": None, "verdict": "n/a",
                        "rule": f"needs the {REFERENCE} cell"})
            continue
        else:
            ok = r["instances_predicted"] > 0 and ratio is not None and ratio >= MIN_PQ_RATIO
        out.append({"situation": r["situation"], "pq_things": pq, "ratio": ratio, "verdict": "PASS" if ok else "FAIL",
                    "rule": "predicts instances" + ("" if r["situation"] == REFERENCE
                                                    else f", PQ_things >= {MIN_PQ_RATIO} x {REFERENCE}'s")})
    return out


RESULTS = Path(__file__).parent / "results" / "bench_user_data.json"


def write_results(args, names, work: Path, rows: list[dict], skipped: dict) -> list[dict]:
    """Write the rows so far and their summary to :data:`RESULTS` (no paths of this machine); the summary."""
    summary = summarise(rows)
    RESULTS.parent.mkdir(exist_ok=True)
    text = json.dumps({"settings": {"minutes": args.minutes, "cells": names, "seeds": "train 100 + i, test 900 + i",
                                    "neon": args.neon.name if args.neon else None},
                       "rows": rows, "skipped": skipped, "summary": summary}, indent=2,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))
    for place, alias in ((str(work), "<work>"), (str(args.neon.resolve()) if args.neon else None, "<neon>"),
                         (str(Path.home()), "~")):
        if place:
            text = text.replace(place, alias)
    RESULTS.write_text(text)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of every cell")
    parser.add_argument("--only", nargs="*", choices=CELLS, help="run these cells only")
    parser.add_argument("--neon", type=Path, metavar="DIR", help=f"folder of the NEON images and .xml annotations (cell {REAL})")
    args = parser.parse_args()
    names = args.only or CELLS
    work = Path(tempfile.mkdtemp(prefix="geomax_user_data_"))
    rows, skipped = [], {}
    for i, name in enumerate(CELLS):
        if name not in names:
            continue
        if name == REAL and args.neon is None:
            skipped[name] = "no --neon folder given"
            print(f"{name:<15} skipped: no --neon folder given (the deepforest data folder)", flush=True)
            continue
        if name == REAL:
            rows.append(run_neon(name, i, args.minutes, work, args.neon))
        elif name == REFERENCE:
            rows.append(run_demo_path(name, i, args.minutes, work))
        else:
            rows.append(run_situation(name, i, args.minutes, work))
        print(_line(rows[-1]), flush=True)
        write_results(args, names, work, rows, skipped)  # after every cell: a long run that stops keeps its rows
    summary = write_results(args, names, work, rows, skipped)
    print(f"\nsummary (PQ_things against {REFERENCE}; {REAL}: F1):")
    for s in summary:
        if "f1" in s:
            value = f"F1 {s['f1']:.2f}"
        elif s["ratio"] is not None:
            value = f"PQ_things {100 * s['pq_things']:5.1f}  x{s['ratio']:.2f}"
        else:
            value = f"PQ_things {100 * s['pq_things']:5.1f}" if s["pq_things"] == s["pq_things"] else "PQ_things n/a"
        print(f"  {s['situation']:<15} {value:<26} {s['verdict']:<4}  ({s['rule']})")
    for name, why in skipped.items():
        print(f"  {name:<15} {'':<26} SKIP  ({why})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
