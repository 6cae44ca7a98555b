"""Tests of the panoptic-quality and mask-AP evaluators."""
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from geomax.data.classes import ClassTable
from geomax.errors import ArgumentError
from geomax.metrics import MaskAPEvaluator, PanopticEvaluator
from geomax.panoptic import SEGMENT_COLUMNS, PanopticResult

TABLE = ClassTable.from_lists(["road", "car", "grass"], things=["car"], values=[1, 2, 3])
ROAD, CAR, GRASS = 1, 2, 3


def _ev(pairs):
    ev = PanopticEvaluator(TABLE)
    for p in pairs:
        ev.update(*p)
    return ev.compute()


def _maps(shape=(20, 20)):
    return [np.zeros(shape, np.int32) for _ in range(4)]  # pred cls, pred inst, gt cls, gt inst


def test_split_object():
    pc, pi, gc, gi = _maps()
    gc[:], pc[:] = ROAD, ROAD
    gc[:10, :10], gi[:10, :10] = CAR, 1
    pc[:10, :10] = CAR
    pi[:6, :10], pi[6:10, :10] = 1, 2  # 60 + 40 pixels
    r = _ev([(pc, pi, gc, gi)])
    car = r["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 1, 0)
    assert car["pq"] == pytest.approx(0.6 / 1.5) and car["sq"] == pytest.approx(0.6) and car["rq"] == pytest.approx(2 / 3)
    assert r["per_class"]["road"]["pq"] == pytest.approx(1.0)
    assert r["all"]["pq"] == pytest.approx((0.4 + 1.0) / 2) and r["all"]["n"] == 2
    assert r["things"]["pq"] == pytest.approx(0.4) and r["stuff"]["pq"] == pytest.approx(1.0)
    assert math.isnan(r["per_class"]["grass"]["pq"]) and r["stuff"]["n"] == 1


def test_merged_object():
    pc, pi, gc, gi = _maps()
    gc[:], pc[:] = ROAD, ROAD
    gc[:6, :10], gi[:6, :10] = CAR, 1
    gc[6:10, :10], gi[6:10, :10] = CAR, 2
    pc[:10, :10], pi[:10, :10] = CAR, 7
    car = _ev([(pc, pi, gc, gi)])["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 0, 1)
    assert car["pq"] == pytest.approx(0.6 / 1.5) and car["sq"] == pytest.approx(0.6)
    # an exact 50 / 50 merge matches nothing: IoU must be strictly above 0.5
    gi[5, :10] = 2
    gi[:5, :10], gi[5:10, :10] = 1, 2
    car = _ev([(pc, pi, gc, gi)])["per_class"]["car"]
    assert (car["tp"], car["fp"], car["fn"], car["pq"]) == (0, 1, 2, 0.0)


def test_false_positive_on_void():
    pc, pi, gc, gi = _maps()
    gc[:] = ROAD
    gc[:10, :10] = 0  # ground-truth void
    pc[:] = ROAD
    pc[:10, :5], pi[:10, :5] = CAR, 1  # a car entirely on void: not a false positive
    r = _ev([(pc, pi, gc, gi)])
    assert r["per_class"]["road"]["pq"] == pytest.approx(1.0)  # road's 50 void pixels leave the union
    assert r["per_class"]["car"]["fp"] == 0 and math.isnan(r["per_class"]["car"]["pq"])
    assert r["things"]["n"] == 0 and math.isnan(r["things"]["pq"]) and r["all"]["pq"] == pytest.approx(1.0)
    # a car only 40% on void IS a false positive
    pc[:], pi[:] = ROAD, 0
    pc[:5, 6:16], pi[:5, 6:16] = CAR, 1  # 50 px: 20 on void, 30 on road
    r = _ev([(pc, pi, gc, gi)])
    assert r["per_class"]["car"]["fp"] == 1 and r["per_class"]["car"]["pq"] == 0.0
    # road: pred 350 px (80 on void, 270 on road); IoU = 270 / (350 + 300 - 270 - 80) = 0.9
    assert r["per_class"]["road"]["pq"] == pytest.approx(0.9)
    assert r["all"]["pq"] == pytest.approx(0.45)


def test_crowd_free_stuff_region():
    pc, pi, gc, gi = _maps()
    gc[:10], gc[10:] = ROAD, GRASS
    pc[:15], pc[15:] = ROAD, GRASS  # road 300 px (200 right), grass 100 px of 200
    r = _ev([(pc, pi, gc, gi)])
    road, grass = r["per_class"]["road"], r["per_class"]["grass"]
    assert (road["tp"], road["fp"], road["fn"]) == (1, 0, 0) and road["pq"] == pytest.approx(2 / 3)
    assert (grass["tp"], grass["fp"], grass["fn"]) == (0, 1, 1) and grass["pq"] == 0.0
    assert r["stuff"]["pq"] == pytest.approx(1 / 3) and r["stuff"]["sq"] == pytest.approx(1 / 3)
    assert r["stuff"]["rq"] == pytest.approx(0.5)
    # stuff ignores instance ids: any instance values on stuff give the same result
    pi[:] = np.arange(400).reshape(20, 20)
    assert _ev([(pc, pi, gc, gi)]) == r


def test_perfect_prediction_is_one():
    rng = np.random.default_rng(0)
    gc, gi = _random_gt(rng)
    r = _ev([(gc, gi, gc, gi)])
    assert r["all"]["pq"] == pytest.approx(1.0) and r["things"]["sq"] == pytest.approx(1.0)


def _random_gt(rng, shape=(48, 48)):
    gc = rng.choice([0, ROAD, GRASS], size=(6, 6), p=[0.1, 0.45, 0.45]).repeat(8, 0).repeat(8, 1)
    gi = np.zeros(shape, np.int32)
    for k in range(rng.integers(2, 7)):
        y, x = rng.integers(0, 40, 2)
        h, w = rng.integers(2, 9, 2)
        gc[y:y + h, x:x + w] = CAR
        gi[y:y + h, x:x + w] = k + 1
    return gc.astype(np.int32), gi


def _reference_pq(pairs, table):
    """Straightforward re-implementation of panopticapi's pq_compute_single_core + pq_average."""
    thing_values = set(table.thing_values)
    stats = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
    for pc, pi, gc, gi in pairs:
        def seg_label(c, i):
            return (int(c), int(i) if int(c) in thing_values else 0)

        gt_area, pred_area, inter = defaultdict(int), defaultdict(int), defaultdict(int)
        for a, b, c, d in zip(pc.ravel(), pi.ravel(), gc.ravel(), gi.ravel()):
            p = seg_label(a, b) if a != 0 else None
            g = seg_label(c, d) if c != 0 else None
            if p is not None:
                pred_area[p] += 1
            if g is not None:
                gt_area[g] += 1
            inter[(g, p)] += 1
        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g is None or p is None or g[0] != p[0]:
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((None, p), 0)
            iou = n / union
            if iou > 0.5:
                stats[g[0]]["tp"] += 1
                stats[g[0]]["iou"] += iou
                gt_matched.add(g)
                pred_matched.add(p)
        for g in gt_area:
            if g not in gt_matched:
                stats[g[0]]["fn"] += 1
        for p in pred_area:
            if p in pred_matched:
                continue
            if inter.get((None, p), 0) / pred_area[p] > 0.5:
                continue
            stats[p[0]]["fp"] += 1

    def average(values):
        pq = sq = rq = 0.0
        n = 0
        for v in values:
            s = stats[v]
            if s["tp"] + s["fp"] + s["fn"] == 0:
                continue
            n += 1
            pq += s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
            sq += s["iou"] / s["tp"] if s["tp"] else 0
            rq += s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n} if n else None

    return stats, average(table.values), average(table.thing_values), average(table.stuff_values)


def test_agrees_with_independent_panopticapi_computation():
    rng = np.random.default_rng(42)
    pairs = []
    for _ in range(6):
        gc, gi = _random_gt(rng)
        pc, pi = gc.copy(), gi.copy()
        for _ in range(8):  # perturb blocks: class swaps, instance splits, void predictions
            y, x = rng.integers(0, 44, 2)
            h, w = rng.integers(2, 12, 2)
            pc[y:y + h, x:x + w] = rng.choice([0, ROAD, CAR, GRASS])
            pi[y:y + h, x:x + w] = rng.integers(0, 9)
        pairs.append((pc, pi, gc, gi))
    ev = PanopticEvaluator(TABLE)
    for p in pairs:
        ev.update(*p)
    got = ev.compute()
    stats, ref_all, ref_things, ref_stuff = _reference_pq(pairs, TABLE)
    for name, value in zip(TABLE.names, TABLE.values):
        for k in ("tp", "fp", "fn"):
            assert got["per_class"][name][k] == stats[value][k], (name, k)
    for group, ref in (("all", ref_all), ("things", ref_things), ("stuff", ref_stuff)):
        for k in ("pq", "sq", "rq", "n"):
            assert got[group][k] == pytest.approx(ref[k], rel=1e-9), (group, k)
    assert 0.05 < got["all"]["pq"] < 0.95  # the random case exercises both matches and errors

    # streaming: two evaluators merged == one evaluator over everything
    a, b = PanopticEvaluator(TABLE), PanopticEvaluator(TABLE)
    for p in pairs[:3]:
        a.update(*p)
    for p in pairs[3:]:
        b.update(*p)
    assert a.merge(b).compute() == got
    a.reset()
    assert a.compute()["all"]["n"] == 0 and a.n_images == 0


def test_summary_table_and_bad_input():
    pc, pi, gc, gi = _maps()
    gc[:], pc[:] = ROAD, ROAD
    ev = PanopticEvaluator(TABLE)
    ev.update(pc, pi, gc, gi)
    table = ev.summary_table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["road", "car", "grass", "all", "things", "stuff"]
    assert table.loc["road", "pq"] == pytest.approx(100.0)
    pc[0, 0] = 9
    with pytest.raises(ArgumentError, match="Values \\[9\\]"):
        ev.update(pc, pi, gc, gi)
    with pytest.raises(ArgumentError, match="same shape"):
        ev.update(pc[:5], pi, gc, gi)


def _result(class_map, instance_map, scores):
    seg = np.zeros_like(class_map)
    rows = []
    for k, (inst, score) in enumerate(scores.items(), start=1):
        m = (instance_map == inst) & (class_map == CAR)
        seg[m] = k
        rows.append((k, CAR, "car", True, score, int(m.sum())))
    return PanopticResult(class_map, instance_map, seg, np.ones(class_map.shape, np.float32),
                          pd.DataFrame(rows, columns=SEGMENT_COLUMNS))


def test_mask_ap():
    gc = np.full((40, 40), ROAD, np.int32)
    gi = np.zeros((40, 40), np.int32)
    for k, (y, x) in enumerate([(2, 2), (2, 20), (20, 2), (20, 20)], start=1):
        gc[y:y + 10, x:x + 10], gi[y:y + 10, x:x + 10] = CAR, k
    ev = MaskAPEvaluator(TABLE)
    ev.update(_result(gc, gi, {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}), gc, gi)
    r = ev.compute()
    assert r["mAP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0) and r["per_class"]["car"] == pytest.approx(1.0)
    # two cars missed -> recall 0.5 -> AP about 0.5 (101-point interpolation)
    pc, pi = gc.copy(), gi.copy()
    pc[20:], pi[20:] = ROAD, 0
    ev = MaskAPEvaluator(TABLE)
    ev.update(_result(pc, pi, {1: 0.9, 2: 0.8}), gc, gi)
    assert ev.compute()["mAP"] == pytest.approx(51 / 101, abs=1e-6)
    # a confident detection lying on ground-truth void is ignored, not a false positive
    gcv = gc.copy()
    gcv[30:, 30:] = 0
    pc, pi = gc.copy(), gi.copy()
    pc[31:39, 31:39], pi[31:39, 31:39] = CAR, 9
    ev = MaskAPEvaluator(TABLE)
    ev.update(_result(pc, pi, {9: 0.99, 1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}), gcv, gi)
    assert ev.compute()["mAP"] == pytest.approx(1.0)
    # the same detection on road is a false positive ranked first -> AP drops
    pc2, pi2 = gc.copy(), gi.copy()
    pc2[12:20, 12:20], pi2[12:20, 12:20] = CAR, 9
    ev = MaskAPEvaluator(TABLE)
    ev.update(_result(pc2, pi2, {9: 0.99, 1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}), gc, gi)
    assert ev.compute()["mAP"] < 0.95
    assert math.isnan(MaskAPEvaluator(TABLE).compute()["mAP"])


def test_sparse_instance_ids_give_same_result():
    rng = np.random.default_rng(5)
    gc, gi = _random_gt(rng)
    pc, pi = gc.copy(), gi.copy()
    pc[:10, :10] = GRASS
    dense = _ev([(pc, pi, gc, gi)])
    sparse = _ev([(pc, pi * 1_000_003, gc, gi * 999_983)])  # huge ids take the sorting path
    assert sparse == dense
