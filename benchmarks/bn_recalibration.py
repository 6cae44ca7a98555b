"""Diagnostic: does a trained model's validation PQ change when its batch-norm statistics are recomputed?

Short CPU budgets leave the running means and variances of batch norm (momentum 0.1) as an
average over the last few hundred steps of a moving network. If they were the cause of poor
predictions (and of tiles that disagree at their borders), recomputing them over the training
chips with the final weights would raise the validation PQ. The script loads a saved model
(``geomax train --out DIR``), reports the validation PQ of its export, recomputes every
batch-norm layer's statistics as a plain average over ``--passes`` passes of the training
chips (train mode, no gradient), and reports the PQ again. The model on disk is not changed.

    python benchmarks/bn_recalibration.py MODEL_DIR CHIPS_DIR [--chip-size 128] [--passes 3]

Appends a row to ``benchmarks/results/bn_recalibration.json`` (``--label`` names it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "bn_recalibration.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="the model folder (or .emd) written by geomax train")
    ap.add_argument("chips", type=Path, help="the export the model was trained on")
    ap.add_argument("--chip-size", type=int, default=None, help="the training chip size (default: the export's)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    from geomax import MaXDeepLab, prepare_data

    data = prepare_data(args.chips, batch_size=8, val_split_pct=0.1, chip_size=args.chip_size)
    model = MaXDeepLab.from_model(args.model, data=data)

    def pq() -> dict:
        r = model.compute_metrics()
        return {k: r[k]["pq"] for k in ("all", "things", "stuff")}

    before = pq()
    net = model.learn.model
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over every batch seen
    net.train()
    batches = 0
    with torch.no_grad():
        for _ in range(args.passes):
            for xb, _ in data.train:
                net(xb)
                batches += 1
    net.eval()
    after = pq()
    row = {"label": args.label, "batch_norms": len(norms), "batches": batches, "before": before, "after": after}
    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    rows.append(row)
    RESULTS.write_text(json.dumps({"benchmark": "bn_recalibration", "rows": rows}, indent=2))
    print(f"{'label':24s} {'':13s} {'PQ':>6s} {'things':>7s} {'stuff':>6s}")
    for r in rows:
        for when in ("before", "after"):
            v = r[when]
            print(f"{r['label']:24s} {when + ' (' + str(r['batches']) + ')':13s} {100 * v['all']:6.1f} "
                  f"{100 * v['things']:7.1f} {100 * v['stuff']:6.1f}")


if __name__ == "__main__":
    main()
