"""Which learning-rate policy should ``geomax train`` use? Measured across user situations, on tuning seeds.

The recipe's learning rate is a fixed peak of the one-cycle schedule (``TrainConfig.lr``). This
script runs cells of ``bench_user_data.py`` (``geomax export`` / ``geomax train --minutes M`` /
``geomax predict`` / ``geomax evaluate``, every other setting at its default) once per policy:

``peak=X``   ``geomax train --lr X`` (the default peak is one of them)
``lr_find``  ``geomax train --lr-find``: fastai's finder (its ``valley`` suggestion) sets the peak; the
             finder runs before the budget starts, so this policy gets its ~100 extra steps for free

Scenes come from **tuning seeds** (training scene ``500 + i``, test scene ``700 + i``, ``i`` the cell's
position in ``bench_user_data.CELLS``), apart from the matrix's test seeds (``100 + i`` / ``900 + i``):
a policy chosen here is then reported by ``bench_user_data.py`` on scenes it never saw. The real NEON
cell is not run here (one point in ``neon_variants.json``: a 1e-2 peak gave no better F1 than 3e-3).

Reported per policy and cell: test PQ, PQ_things, the peak used, epochs; per policy the mean over the
cells and its rank. Prints a table and writes ``benchmarks/results/bench_lr_policy.json``. Run it alone.

    python benchmarks/bench_lr_policy.py --minutes 3
    python benchmarks/bench_lr_policy.py --minutes 3 --cells a_256 demo_path --policies 3e-3 lr_find
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_user_data as bud  # noqa: E402

TUNING_SEEDS = (500, 700)
DEFAULT_CELLS = ["a_256", "d_pan_uint16", "f_small", "demo_path"]
DEFAULT_POLICIES = ["1e-3", "3e-3", "1e-2", "lr_find"]
RESULTS = Path(__file__).parent / "results" / "bench_lr_policy.json"


def train_options(policy: str) -> list[str]:
    """The ``geomax train`` options of a policy: ``lr_find`` or a peak learning rate."""
    if policy == "lr_find":
        return ["--lr-find"]
    float(policy)  # a bad policy fails here, before any run
    return ["--lr", policy]


def run_cell(cell: str, policy: str, minutes: float, work: Path) -> dict:
    i = bud.CELLS.index(cell)
    run = bud.run_demo_path if cell == bud.REFERENCE else bud.run_situation
    d = work / policy.replace("-", "m")
    d.mkdir(exist_ok=True)
    row = run(cell, i, minutes, d, train_options(policy), seeds=TUNING_SEEDS)
    keep = ("situation", "chips", "epochs", "lr", "valid_pq", "test_pq", "test_pq_things", "test_pq_stuff",
            "building_f1", "instances_predicted", "warned_empty", "seconds")
    return {"policy": policy, **{k: row[k] for k in keep}}


def summarise(rows: list[dict], policies: list[str], cells: list[str]) -> list[dict]:
    """Mean test PQ and PQ_things per policy over the cells every policy finished."""
    done = [c for c in cells if all(any(r["policy"] == p and r["situation"] == c for r in rows) for p in policies)]
    out = []
    for p in policies:
        mine = [r for r in rows if r["policy"] == p and r["situation"] in done]
        if not mine:
            continue
        out.append({"policy": p, "cells": len(mine),
                    "mean_pq": sum(r["test_pq"] for r in mine) / len(mine),
                    "mean_pq_things": sum(r["test_pq_things"] for r in mine) / len(mine),
                    "worst_pq_things": min(r["test_pq_things"] for r in mine)})
    for rank, s in enumerate(sorted(out, key=lambda s: -s["mean_pq"]), 1):
        s["rank_by_mean_pq"] = rank
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of every run")
    ap.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, choices=[c for c in bud.CELLS if c != bud.REAL])
    ap.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES, help="peaks (e.g. 3e-3) or lr_find")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    for p in args.policies:
        train_options(p)
    work = Path(tempfile.mkdtemp(prefix="geomax_lr_policy_"))
    rows: list[dict] = []
    result: dict = {"benchmark": "lr_policy", "minutes": args.minutes, "cells": args.cells,
                    "policies": args.policies, "seeds": "tuning: train 500 + i, test 700 + i"}
    t0 = time.monotonic()
    for cell in args.cells:  # cell by cell: a cut-short run still compares policies on the cells it finished
        for policy in args.policies:
            row = run_cell(cell, policy, args.minutes, work)
            rows.append(row)
            print(f"{cell:<15} {policy:>8}: lr {row['lr']:.2e}, {row['epochs']:3d} epochs, test PQ "
                  f"{100 * row['test_pq']:5.1f} (things {100 * row['test_pq_things']:5.1f}), "
                  f"{row['instances_predicted']} instances  [{(time.monotonic() - t0) / 60:.0f} min]", flush=True)
            result.update(rows=rows, summary=summarise(rows, args.policies, args.cells))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{'cell':<15}" + "".join(f"{p:>18}" for p in args.policies) + "   (test PQ / PQ_things)")
    for cell in args.cells:
        line = f"{cell:<15}"
        for p in args.policies:
            r = next(r for r in rows if r["policy"] == p and r["situation"] == cell)
            line += f"{100 * r['test_pq']:11.1f} / {100 * r['test_pq_things']:4.1f}"
        print(line)
    print(f"\n{'policy':>8} {'mean PQ':>8} {'mean PQth':>9} {'worst PQth':>10} {'rank':>5}")
    for s in result["summary"]:
        print(f"{s['policy']:>8} {100 * s['mean_pq']:8.1f} {100 * s['mean_pq_things']:9.1f} "
              f"{100 * s['worst_pq_things']:10.1f} {s['rank_by_mean_pq']:5d}")
    print(f"\nwritten {args.out.name}")
    return result


if __name__ == "__main__":
    main()
