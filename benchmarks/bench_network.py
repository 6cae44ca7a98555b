"""Benchmark the MaX-DeepLab network on this CPU.

For each variant and input size: parameters (with / without the auxiliary
semantic head), forward FLOPs (``torch.utils.flop_counter``), forward time per
image (eval, no grad), forward + backward time per image (train mode), and the
achieved forward GFLOP/s as a fraction of this machine's matrix-multiply
GFLOP/s measured in the same run (the machine is shared and noisy, so the
ratio is the figure to compare). When the forward pass of the CPU variant at
512 px reaches less than a third of the matmul rate, the top operators of a
``torch.profiler`` run are printed and saved.

Usage::

    python benchmarks/bench_network.py                     # tiny + cpu at 256/512, S at 256
    python benchmarks/bench_network.py --no-s --threads 1   # steadier on a busy machine

Writes ``benchmarks/results/bench_network.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from geomax.models.maxdeeplab import build_maxdeeplab

HERE = os.path.dirname(os.path.abspath(__file__))


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    """Best-of-``reps`` float32 (n x n) @ (n x n) rate in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def best_time(fn, reps: int) -> float:
    """Warm up once, then the best of ``reps`` wall times (seconds)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eval forward pass (matmuls and convolutions, as the counter defines)."""
    model.eval()
    # (grad mode on: the counter's module tracker needs autograd nodes)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def profile_forward(model: torch.nn.Module, x: torch.Tensor, rows: int = 12) -> list[dict]:
    """Top operators by self CPU time of one eval forward pass."""
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total, "calls": e.count}
            for e in events[:rows]]


def bench(variant: str, size: int, batch: int, reps: int, bands: int, classes: int) -> dict:
    torch.manual_seed(0)
    model = build_maxdeeplab(variant, bands, classes)
    total = sum(p.numel() for p in model.parameters())
    semantic = sum(p.numel() for p in model.semantic_head.parameters())
    x = torch.randn(batch, bands, size, size)
    flops = forward_flops(model, x[:1])

    def fwd():
        with torch.no_grad():
            model(x)

    model.eval()
    t_fwd = best_time(fwd, reps)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        out = model(x)
        sum(t.float().mean() for t in out.values()).backward()

    model.train()
    t_train = best_time(fwd_bwd, reps)
    # matmul rate measured right after this row: the load of a shared machine drifts
    peak = matmul_gflops()
    per_image_fwd = t_fwd / batch
    achieved = flops / per_image_fwd / 1e9
    return {
        "variant": variant, "size": size, "batch": batch,
        "params": total, "params_without_aux_semantic": total - semantic,
        "forward_gflops_per_image": flops / 1e9,
        "forward_s_per_image": per_image_fwd,
        "fwd_bwd_s_per_image": t_train / batch,
        "fwd_bwd_s_per_batch": t_train,
        "achieved_gflop_s": achieved,
        "matmul_gflop_s_local": peak,
        "fraction_of_local_matmul": achieved / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["max_deeplab_tiny", "max_deeplab_cpu"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--no-s", action="store_true", help="skip max_deeplab_s at 256 px")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_network.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    peak_before = matmul_gflops()
    runs = []
    plan = [(v, s) for v in args.variants for s in args.sizes]
    if not args.no_s:
        plan.append(("max_deeplab_s", 256))
    for variant, size in plan:
        batch = 8 if size <= 256 else 2
        if variant == "max_deeplab_s":
            batch = 2
        runs.append(bench(variant, size, batch, args.reps, args.bands, args.classes))
        r = runs[-1]
        print(f"  {variant} @ {size}: {r['forward_s_per_image']:.3f} s/img fwd, "
              f"{r['fwd_bwd_s_per_image']:.3f} s/img fwd+bwd", flush=True)
    peak_after = matmul_gflops()
    peak = max(peak_before, peak_after)
    peak = max([peak] + [r["matmul_gflop_s_local"] for r in runs])
    for r in runs:  # also express every run against the best matmul rate seen in this run
        r["fraction_of_matmul_peak"] = r["achieved_gflop_s"] / peak

    profile = None
    target = [r for r in runs if r["variant"] == "max_deeplab_cpu" and r["size"] == 512]
    if target and min(target[0]["fraction_of_local_matmul"],
                      target[0]["fraction_of_matmul_peak"]) < 1 / 3:
        model = build_maxdeeplab("max_deeplab_cpu", args.bands, args.classes)
        profile = profile_forward(model, torch.randn(2, args.bands, 512, 512))

    header = (f"{'variant':18s} {'px':>4s} {'params(M)':>9s} {'noaux(M)':>9s} {'GFLOP':>7s} "
              f"{'fwd s/img':>9s} {'f+b s/img':>9s} {'f+b s/b8':>8s} {'GFLOP/s':>8s} {'%peak':>6s} "
              f"{'%local':>6s}")
    print(f"\nmatmul fp32 peak: {peak:.1f} GFLOP/s (best seen; before {peak_before:.1f}, after "
          f"{peak_after:.1f}), threads {torch.get_num_threads()}; %local: against the matmul "
          f"rate measured right after that row")
    print(header)
    print("-" * len(header))
    for r in runs:
        print(f"{r['variant']:18s} {r['size']:4d} {r['params'] / 1e6:9.2f} "
              f"{r['params_without_aux_semantic'] / 1e6:9.2f} {r['forward_gflops_per_image']:7.2f} "
              f"{r['forward_s_per_image']:9.3f} {r['fwd_bwd_s_per_image']:9.3f} "
              f"{r['fwd_bwd_s_per_image'] * 8:8.2f} {r['achieved_gflop_s']:8.1f} "
              f"{100 * r['fraction_of_matmul_peak']:5.1f}% "
              f"{100 * r['fraction_of_local_matmul']:5.1f}%")
    if profile:
        print("\nmax_deeplab_cpu forward @ 512 px, top operators (self CPU time):")
        for p in profile:
            print(f"  {p['op']:40s} {p['self_ms']:9.1f} ms {100 * p['share']:5.1f}% "
                  f"({p['calls']} calls)")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    result = {"machine": platform.platform(), "processor": platform.processor(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "matmul_gflop_s": peak, "matmul_gflop_s_before": peak_before,
              "matmul_gflop_s_after": peak_after, "runs": runs, "profile_cpu_512": profile}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
