"""Loss / matching cost, evaluator throughput, and the void-overlap weighting comparison.

Run: ``python benchmarks/bench_loss.py [--quick]``. Prints tables and writes
``benchmarks/results/bench_loss.json``.

1. Share of matching + loss in one training step (forward, loss, backward, optimiser
   step) of the ``max_deeplab_cpu`` variant at batch 8, 256 px, on CPU.
2. PanopticEvaluator throughput in megapixels/s on random 1024 x 1024 maps, as a ratio
   against panopticapi's own counting step (``np.unique`` of combined ids) measured in
   the same run.
3. ``void_overlap_weighting`` "none" vs "official": train ``max_deeplab_tiny`` on the same
   synthetic chips (a third with no-data borders) for the same number of steps from the
   same initial weights, then PQ on those chips and on held-out chips.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from geomax.common import GT_CLASSES, GT_IS_THING, GT_MASKS, GT_SEMANTIC, GT_VALID, PRED_MASK_LOGITS
from geomax.data.classes import ClassTable
from geomax.metrics import PanopticEvaluator
from geomax.models.criterion import MaXDeepLabLoss
from geomax.models.maxdeeplab import build_maxdeeplab
from geomax.models.postprocess import PanopticPostProcessor

TABLE = ClassTable.from_lists(["water", "field", "building", "tree"], things=["building", "tree"])
C = len(TABLE)


def make_chips(n, size, seed, K=24, nodata_every=3):
    """Synthetic chips: two stuff regions split by a random line, thing rectangles, optional no-data border."""
    rng = np.random.default_rng(seed)
    colors = rng.normal(size=(C + 1, 3)) * 1.5
    imgs, sem_l, inst_l, masks_l, cls_l, valid_l = [], [], [], [], [], []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        a, b = rng.normal(size=2)
        stuff = np.where(a * (yy - size / 2) + b * (xx - size / 2) > 0, 1, 2)
        seg = stuff.copy()  # 1, 2 stuff segment ids; 3.. things
        seg_cls = {1: 1, 2: 2}
        for t in range(rng.integers(2, 7)):
            h, w = rng.integers(size // 10, size // 4, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            seg[y:y + h, x:x + w] = 3 + t
            seg_cls[3 + t] = int(rng.integers(3, C + 1))
        valid = np.ones((size, size), bool)
        if i % nodata_every == 0:
            valid[:, : size // 4] = False
        sem = np.zeros((size, size), np.int64)
        inst = np.zeros((size, size), np.int64)
        masks = np.zeros((K, size, size), bool)
        cls = np.zeros(K, np.int64)
        for s, c in seg_cls.items():
            m = (seg == s) & valid
            if m.any():
                masks[s - 1], cls[s - 1] = m, c
                sem[m] = c
                if c >= 3:
                    inst[m] = s
        img = colors[sem].transpose(2, 0, 1) + rng.normal(size=(3, size, size)) * 0.5
        img[:, ~valid] = 0
        imgs.append(img)
        sem_l.append(sem), inst_l.append(inst), masks_l.append(masks), cls_l.append(cls), valid_l.append(valid)
    cls = torch.as_tensor(np.stack(cls_l))
    target = {GT_SEMANTIC: torch.as_tensor(np.stack(sem_l)), GT_MASKS: torch.as_tensor(np.stack(masks_l)),
              GT_CLASSES: cls, GT_IS_THING: cls >= 3, GT_VALID: torch.as_tensor(np.stack(valid_l))}
    return torch.as_tensor(np.stack(imgs), dtype=torch.float32), target, np.stack(inst_l)


def subset(target, idx):
    return {k: v[idx] for k, v in target.items()}


def bench_step_share(repeats):
    torch.manual_seed(0)
    model = build_maxdeeplab("max_deeplab_cpu", 3, C)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    loss_fn = MaXDeepLabLoss(C)
    x, tgt, _ = make_chips(8, 256, seed=1)
    rows = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        out = model(x)
        t1 = time.perf_counter()
        loss = loss_fn(out, tgt)
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if r:  # first step is warm-up
            rows.append((t1 - t0, t2 - t1, t3 - t2))
    fwd, lss, bwd = np.median(np.array(rows), axis=0)
    # matching alone
    with torch.no_grad():
        out = model(x)
    t = time.perf_counter()
    for _ in range(3):
        loss_fn.matcher(out, tgt)
    match = (time.perf_counter() - t) / 3
    total = fwd + lss + bwd
    return {"variant": "max_deeplab_cpu", "batch": 8, "size": 256, "num_slots": int(out[PRED_MASK_LOGITS].shape[1]),
            "forward_s": fwd, "loss_incl_matching_s": lss, "matching_only_s": match, "backward_step_s": bwd,
            "step_s": total, "loss_share_of_step": lss / total}


def bench_evaluator(n_images, size=1024):
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(n_images):
        gc = rng.choice([0] + TABLE.values, size=(size // 32, size // 32)).repeat(32, 0).repeat(32, 1).astype(np.int32)
        gi = rng.integers(1, 50, size=(size // 16, size // 16)).repeat(16, 0).repeat(16, 1).astype(np.int32)
        pc, pi = gc.copy(), gi.copy()
        pc[rng.random(gc.shape) < 0.05] = TABLE.values[0]
        maps.append((pc, pi, gc, gi))
    ev = PanopticEvaluator(TABLE)
    t = time.perf_counter()
    for m in maps:
        ev.update(*m)
    t_ev = time.perf_counter() - t
    # baseline: panopticapi's counting step alone (np.unique of combined gt x pred ids)
    t = time.perf_counter()
    for pc, pi, gc, gi in maps:
        g = gc.astype(np.uint64) * 1000 + gi
        p = pc.astype(np.uint64) * 1000 + pi
        np.unique(g * np.uint64(1 << 20) + p, return_counts=True)
    t_base = time.perf_counter() - t
    mp = n_images * size * size / 1e6
    return {"images": n_images, "size": size, "evaluator_mpix_per_s": mp / t_ev,
            "panopticapi_unique_count_mpix_per_s": mp / t_base, "ratio_vs_unique_count": t_base / t_ev}


def evaluate(model, x, tgt, inst, pp):
    model.eval()
    ev = PanopticEvaluator(TABLE)
    with torch.no_grad():
        results = pp(model(x), out_size=x.shape[-2:], valid=tgt[GT_VALID])
    lut = TABLE.value_lut()
    for b, res in enumerate(results):
        gc = lut[tgt[GT_SEMANTIC][b].numpy()]
        ev.update(res.class_map, res.instance_map, gc, inst[b])
    model.train()
    return ev.compute()


def bench_void_weighting(steps, n_train=12, size=128, batch=4, seeds=(0,)):
    x, tgt, inst = make_chips(n_train, size, seed=10)
    xv, tv, iv = make_chips(6, size, seed=11)
    out = {}
    for weighting in ("none", "official"):
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_maxdeeplab("max_deeplab_tiny", 3, C)
            opt = torch.optim.AdamW(model.parameters(), 2e-3)
            loss_fn = MaXDeepLabLoss(C, void_overlap_weighting=weighting)
            rng = np.random.default_rng(seed)
            t = time.perf_counter()
            for s in range(steps):
                idx = rng.choice(n_train, batch, replace=False)
                loss = loss_fn(model(x[idx]), subset(tgt, idx))
                opt.zero_grad()
                loss.backward()
                opt.step()
            res = {"train_s": time.perf_counter() - t, "final_terms": dict(loss_fn.last_terms)}
            for name, thr in (("default_0.7", 0.7), ("low_0.5", 0.5)):
                pp = PanopticPostProcessor(TABLE, class_threshold=thr, min_thing_area=8, min_stuff_area=16)
                tr = evaluate(model, x, tgt, inst, pp)
                va = evaluate(model, xv, tv, iv, pp)
                res[f"pq_train_{name}"] = tr["all"]["pq"]
                res[f"pq_heldout_{name}"] = va["all"]["pq"]
                res[f"fp_train_{name}"] = sum(v["fp"] for v in tr["per_class"].values())
            runs.append(res)
        out[weighting] = runs
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and training steps")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    steps = args.steps or (40 if args.quick else 150)
    result = {"torch_threads": torch.get_num_threads()}
    result["step_share"] = s = bench_step_share(1 if args.quick else 3)
    print("\n== matching + loss share of a training step (CPU) ==")
    for k, v in s.items():
        print(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
    result["evaluator"] = e = bench_evaluator(4 if args.quick else 10)
    print("\n== PanopticEvaluator throughput ==")
    for k, v in e.items():
        print(f"{k:>36}: {v:.3f}" if isinstance(v, float) else f"{k:>36}: {v}")
    result["void_weighting"] = vw = bench_void_weighting(steps, seeds=(0,) if args.quick else (0, 1))
    result["void_weighting_steps"] = steps
    print(f"\n== void_overlap_weighting, max_deeplab_tiny, {steps} steps, 128 px chips ==")
    print(f"{'weighting':>10} {'seed':>4} {'PQ train@0.7':>12} {'PQ held@0.7':>12} {'PQ train@0.5':>12} "
          f"{'PQ held@0.5':>12} {'FP train@0.7':>12}")
    for w, runs in vw.items():
        for i, r in enumerate(runs):
            print(f"{w:>10} {i:>4} {r['pq_train_default_0.7']:>12.3f} {r['pq_heldout_default_0.7']:>12.3f} "
                  f"{r['pq_train_low_0.5']:>12.3f} {r['pq_heldout_low_0.5']:>12.3f} {r['fp_train_default_0.7']:>12}")
    path = Path(__file__).parent / "results" / "bench_loss.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
