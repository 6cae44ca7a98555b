"""Tests of benchmarks/probe_merges.py's counting (merged / split / missed objects)."""
import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "probe_merges", Path(__file__).parents[1] / "benchmarks" / "probe_merges.py")
probe_merges = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe_merges)


def test_probe_counts_merges_splits_and_misses():
    gt_class = np.zeros((4, 16), int)
    gt_inst = np.zeros((4, 16), int)
    for k, c0 in enumerate((0, 4, 8, 12)):  # four cars of 2x3 px in a queue
        gt_class[1:3, c0:c0 + 3] = 7
        gt_inst[1:3, c0:c0 + 3] = k + 1
    pred_class = np.zeros_like(gt_class)
    pred_inst = np.zeros_like(gt_inst)
    pred_class[1:3, 0:7] = 7; pred_inst[1:3, 0:7] = 1       # cars 1 and 2 merged into one
    pred_class[1:3, 8:11] = 7; pred_inst[1:3, 8:11] = 2     # car 3 exact
    # car 4 missed; a stray prediction covering nothing
    pred_class[0, 13:16] = 7; pred_inst[0, 13:16] = 3
    r = probe_merges.probe(pred_class, pred_inst, gt_class, gt_inst, 7)
    assert (r["predicted"], r["covering_0"], r["covering_1"], r["covering_2"], r["covering_3+"]) == (3, 1, 1, 1, 0)
    assert (r["true"], r["missed"], r["found_iou_below_0.5"], r["matched"]) == (4, 1, 2, 1)
