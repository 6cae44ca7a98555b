"""Kill ``geomax train``, ``geomax predict`` and ``geomax export`` at random moments; every rerun must succeed
and nothing the user had may change.

Each trial starts the command (replacing an earlier complete output with ``--overwrite``) in a
subprocess, sends SIGKILL after a random delay drawn over the command's measured duration, then
checks:

* every file of the user's (the source raster and labels, an unrelated file beside the outputs,
  the export while training) is byte-identical;
* the output is complete, old or new: the model folder loads, the panoptic raster opens with its
  features file beside it, the export folder is prepared;
* the same command run again (``geomax train --resume`` when an interrupted training left
  checkpoints) succeeds, and leaves no scratch entry behind.

Prints a table and writes ``benchmarks/results/bench_faults.json``.

    python benchmarks/bench_faults.py --trials 15 --seed 0
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEOMAX = [sys.executable, "-m", "geomax.cli"]


def _digest(paths) -> dict:
    out = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _hidden_geomax_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".geomax-" in p.name
                  and not p.name.endswith(".geomax-train"))


def _run(cmd, timeout=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _timed(cmd) -> float:
    t0 = time.monotonic()
    res = _run(cmd)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return time.monotonic() - t0


def _kill_after(cmd, delay: float) -> bool:
    """Run ``cmd``, SIGKILL it after ``delay`` s; True when it was killed (False: it had finished)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _complete_model(folder: Path) -> bool:
    from geomax.models.package import read_model_package

    try:
        read_model_package(folder)
        return True
    except Exception:
        return False


def _complete_prediction(raster: Path, features: Path) -> bool:
    import geopandas as gpd
    import rasterio

    try:
        with rasterio.open(raster) as src:
            src.read(1, window=((0, 8), (0, 8)))
        gpd.read_file(features)
        return True
    except Exception:
        return False


def _complete_export(folder: Path) -> bool:
    from geomax import prepare_data

    try:
        return len(prepare_data(folder, batch_size=2, val_split_pct=0.0).train_ds) > 0
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=15, help="kills per command")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    from geomax.data.synthetic import make_scene

    work = Path(tempfile.mkdtemp(prefix="geomax_faults_"))
    make_scene(work / "scene.tif", work / "labels.gpkg", size=256, seed=11, bands=3)
    (work / "notes.txt").write_text("the user's own file beside the outputs")
    chips, model, pred, feats = work / "chips", work / "model", work / "pred.tif", work / "pred.gpkg"
    export = GEOMAX + ["export", str(work / "scene.tif"), str(work / "labels.gpkg"), str(chips), "--classes",
                       "synthetic", "--tile-size", "64", "--overwrite"]
    train = GEOMAX + ["train", str(chips), "--out", str(model), "--backbone", "max_deeplab_tiny", "--epochs", "3",
                      "--batch-size", "4", "--overwrite"]
    predict = GEOMAX + ["predict", str(model), str(work / "scene.tif"), str(pred), "--features", str(feats),
                        "--overwrite", "--quiet"]
    durations = {"export": _timed(export), "train": _timed(train), "predict": _timed(predict)}
    user_files = [work / "scene.tif", work / "labels.gpkg", work / "notes.txt"]
    plans = {
        "export": (export, lambda: _complete_export(chips), [], chips),
        "train": (train, lambda: _complete_model(model), [chips], model),
        "predict": (predict, lambda: _complete_prediction(pred, feats), [chips, model], pred),
    }
    rows = []
    for name, (cmd, complete, also_kept, out) in plans.items():
        counts = {"trials": 0, "killed": 0, "complete_after_kill": 0, "reruns_ok": 0, "user_files_changed": 0,
                  "scratch_left": 0}
        for _ in range(args.trials):
            kept = _digest(user_files + also_kept)
            delay = rng.uniform(0.2, durations[name])
            counts["trials"] += 1
            counts["killed"] += _kill_after(cmd, delay)
            counts["complete_after_kill"] += complete()
            rerun = list(cmd)
            if name == "train" and (work / ".model.geomax-train" / "geomax_last.json").exists():
                rerun.append("--resume")
            res = _run(rerun)
            counts["reruns_ok"] += res.returncode == 0 and complete()
            if res.returncode != 0:
                print(f"   {name} rerun failed: {res.stderr.strip()[-300:]}")
            counts["user_files_changed"] += _digest(user_files + also_kept) != kept
            counts["scratch_left"] += bool(_hidden_geomax_entries(out.parent))
        rows.append({"command": name, "seconds_full_run": round(durations[name], 1), **counts})
    print(f"{'command':<8} {'s/run':>6} {'trials':>6} {'killed':>6} {'intact':>6} {'rerun ok':>8} "
          f"{'changed':>7} {'scratch':>7}")
    for r in rows:
        print(f"{r['command']:<8} {r['seconds_full_run']:6.1f} {r['trials']:6d} {r['killed']:6d} "
              f"{r['complete_after_kill']:6d} {r['reruns_ok']:8d} {r['user_files_changed']:7d} {r['scratch_left']:7d}")
    out = Path(__file__).parent / "results" / "bench_faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
