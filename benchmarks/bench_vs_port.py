"""Compare geomax's ``max_deeplab_s`` with the PyTorch port conradry/max-deeplab (optional).

Both networks at the same setting: 256 px input, batch 2, 32 memory slots, 6 classes
(+ void: 7 class logits in both), on the CPU, with torch's default thread count. In one
process, after warm-up, the two networks alternate (the order flips every round, so a
drift of the shared machine's load cancels) over ``--repeats`` rounds of:

* train step: forward + a trivial loss (the sum of the means of the float outputs) +
  backward + an SGD step, in train mode;
* forward: eval mode, ``torch.no_grad()``;

each in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Reported per
precision: the median seconds of each network and the ratio port / geomax (> 1: geomax
is faster); the "defaults" row compares each network's default on this CPU (geomax:
:func:`geomax.models.precision.autocast_dtype`, bfloat16 autocast on a CPU with native
bfloat16; the port: float32, its only mode).

``--channels-last`` adds both networks as copies in channels-last memory format (the layout
geomax's ``fit`` gives its network on a CPU) to the same alternating rounds, with rows for
geomax channels-last against the port as it ships and against the port also channels-last.
``--profile`` adds the share of the float32 train step each network spends in convolutions
and in batch norm (``torch.profiler``, self CPU time of one step after warm-up): operations
both networks share, which no change of the memory-bound code around them can speed up.

The port is not part of geomax and is not installed with it: pass the folder of its
source (a checkout, or ``git archive`` of it) as ``--port``; it needs ``einops`` and
``torchvision``. Without ``--port``, or when the port cannot be imported, the script
prints ``skipped: ...`` and exits 0.

Usage::

    python benchmarks/bench_vs_port.py --port /path/to/max-deeplab [--repeats 7]

Writes ``benchmarks/results/bench_vs_port.json`` (no paths of this machine in it).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = ("float32", "bfloat16")
MODES = ("train_step", "forward")


class _Batch:
    """The port's input type (its ``util.misc.NestedTensor``): only ``decompose()`` is used."""

    def __init__(self, tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.sizes = torch.tensor([list(tensors.shape[-2:])] * tensors.shape[0])

    def decompose(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors, self.sizes


#: The port's dual-path block adds the feed-forward output in place to a ReLU output that
#: the ReLU and the feed-forward's first linear layer saved for backward, so its backward
#: raises "modified by an inplace operation" under torch 2.x; the same sum out of place.
_PORT_FIX = ("M_out += M_ffn", "M_out = M_out + M_ffn")


def import_port(port: str) -> Any:
    """The port's ``MaXDeepLabS`` class (``max_deeplab/model.py`` under ``port``).

    ``max_deeplab/blocks.py`` is loaded from its source with the one statement of
    :data:`_PORT_FIX` rewritten out of place (same result, trainable); the port's files
    are not changed.
    """
    sys.path.insert(0, port)
    spec = importlib.util.find_spec("max_deeplab.blocks")
    if spec is None or spec.loader is None or spec.origin is None:
        raise ImportError(f"no max_deeplab/blocks.py under {port}")
    source = spec.loader.get_source("max_deeplab.blocks")  # type: ignore[attr-defined]
    if source is None or source.count(_PORT_FIX[0]) != 1:
        raise ImportError(f"max_deeplab/blocks.py does not contain {_PORT_FIX[0]!r} once "
                          "(another version of the port)")
    blocks = importlib.util.module_from_spec(spec)
    sys.modules["max_deeplab.blocks"] = blocks
    exec(compile(source.replace(*_PORT_FIX), spec.origin, "exec"), blocks.__dict__)
    return importlib.import_module("max_deeplab.model").MaXDeepLabS


def port_commit(port: str, given: str | None) -> str:
    """The port's git commit: ``--port-commit``, else ``git rev-parse HEAD`` in ``port``."""
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", port, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (pass --port-commit)"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def float_outputs(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a network's output (geomax: a dict; the port: a tuple)."""
    values = out.values() if isinstance(out, dict) else out
    return [t for t in values if isinstance(t, torch.Tensor) and t.is_floating_point()]


def trivial_loss(out: Any) -> torch.Tensor:
    """Sum of the means of the float outputs, in float32."""
    return sum(t.float().mean() for t in float_outputs(out))


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_steps(model: torch.nn.Module, call: Callable[[], Any], lr: float
               ) -> dict[str, Callable[[str], float]]:
    """Timed train-step and forward functions of one network: ``fn(precision) -> seconds``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def train_step(precision: str) -> float:
        model.train()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision_context(precision):
            out = call()
        loss = trivial_loss(out)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite trivial loss {loss.item()} (lower --lr)")
        return elapsed

    def forward(precision: str) -> float:
        model.eval()
        start = time.perf_counter()
        with torch.no_grad(), precision_context(precision):
            call()
        return time.perf_counter() - start

    return {"train_step": train_step, "forward": forward}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def output_shapes(out: Any) -> dict[str, list[int]] | list[list[int]]:
    if isinstance(out, dict):
        return {k: list(v.shape) for k, v in out.items()}
    return [list(t.shape) for t in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", default=None,
                        help="folder of the conradry/max-deeplab source (holds max_deeplab/model.py)")
    parser.add_argument("--port-commit", default=None,
                        help="the port's git commit, when --port is not a git checkout")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--classes", type=int, default=6, help="real classes (void excluded)")
    parser.add_argument("--lr", type=float, default=1e-4, help="SGD learning rate of the train step")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one float32 train step of each network (convolution share)")
    parser.add_argument("--channels-last", action="store_true",
                        help="also run both networks in channels-last memory format (geomax's fit on a CPU)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_vs_port.json"))
    args = parser.parse_args()

    if not args.port:
        print("skipped: no --port (folder of the conradry/max-deeplab source) given")
        return
    port = os.path.abspath(args.port)
    try:
        port_class = import_port(port)
    except Exception as exc:  # any import failure of optional third-party code means: skip
        print(f"skipped: cannot import MaXDeepLabS from {port}/max_deeplab/model.py "
              f"({type(exc).__name__}: {exc}); it needs einops and torchvision")
        return

    from geomax.models.maxdeeplab import build_maxdeeplab
    try:
        from geomax.models.precision import autocast_dtype
        geomax_default = autocast_dtype("cpu", "auto", training=True)
    except ImportError:  # precision rule not available in this checkout: same rule by hand
        native = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
        geomax_default = torch.bfloat16 if native else None
    geomax_default_name = "bfloat16" if geomax_default == torch.bfloat16 else "float32"

    torch.manual_seed(0)
    geomax_net = build_maxdeeplab("max_deeplab_s", in_channels=3, num_classes=args.classes,
                                  num_slots=args.slots)
    # the port's n_classes counts every class logit, void included (its example: 201 + 1)
    port_net = port_class(im_size=args.size, n_classes=args.classes + 1, n_masks=args.slots)
    x = torch.randn(args.batch, 3, args.size, args.size)
    port_x = _Batch(x)

    networks = {
        "geomax": make_steps(geomax_net, lambda: geomax_net(x), args.lr),
        "port": make_steps(port_net, lambda: port_net(port_x), args.lr),
    }
    if args.channels_last:  # copies in channels-last memory format (as geomax's fit runs its network on a CPU)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        port_x_cl = _Batch(x_cl)
        geomax_cl = copy.deepcopy(geomax_net).to(memory_format=torch.channels_last)
        port_cl = copy.deepcopy(port_net).to(memory_format=torch.channels_last)
        networks["geomax_cl"] = make_steps(geomax_cl, lambda: geomax_cl(x_cl), args.lr)
        networks["port_cl"] = make_steps(port_cl, lambda: port_cl(port_x_cl), args.lr)
    geomax_net.eval()
    port_net.eval()
    with torch.no_grad():
        shapes = {"geomax": output_shapes(geomax_net(x)), "port": output_shapes(port_net(port_x))}
    params = {
        "geomax": {"total": n_params(geomax_net),
                   "without_aux_semantic_head": n_params(geomax_net) - n_params(geomax_net.semantic_head)},
        "port": {"total": n_params(port_net),
                 "without_aux_semantic_head": n_params(port_net) - n_params(port_net.semantic_head)},
    }
    print(f"threads {torch.get_num_threads()}, {args.size} px, batch {args.batch}, "
          f"{args.slots} slots, {args.classes} classes; params geomax "
          f"{params['geomax']['total'] / 1e6:.2f} M, port {params['port']['total'] / 1e6:.2f} M",
          flush=True)

    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        net: {p: {m: [] for m in MODES} for p in PRECISIONS} for net in networks}
    round_load: list[float] = []  # 1-min load average after each timed round (shared machine)
    t_start = time.perf_counter()
    for round_ in range(args.warmup + args.repeats):
        order = list(networks) if round_ % 2 == 0 else list(networks)[::-1]
        for precision in PRECISIONS:
            for mode in MODES:
                for net in order:
                    seconds = networks[net][mode](precision)
                    if round_ >= args.warmup:
                        samples[net][precision][mode].append(seconds)
        kind = "warm-up" if round_ < args.warmup else "timed"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        if round_ >= args.warmup:
            round_load.append(load)
        print(f"  round {round_ + 1}/{args.warmup + args.repeats} ({kind}) done at "
              f"{time.perf_counter() - t_start:.0f} s, 1-min load {load:.2f}", flush=True)

    def median(net: str, precision: str, mode: str) -> float:
        return statistics.median(samples[net][precision][mode])

    def best(net: str, precision: str, mode: str) -> float:
        return min(samples[net][precision][mode])

    def paired(geomax: str, port: str, precision_geomax: str, precision_port: str, mode: str) -> float:
        """Median over rounds of port / geomax measured in the same round."""
        return statistics.median(
            p / g for p, g in zip(samples[port][precision_port][mode],
                                  samples[geomax][precision_geomax][mode]))

    rows = []
    layouts = [("", "geomax", "port")]
    if args.channels_last:
        layouts += [(", geomax channels-last", "geomax_cl", "port"),
                    (", both channels-last", "geomax_cl", "port_cl")]
    for suffix, gnet, pnet in layouts:
        for label, pg, pp in (("float32", "float32", "float32"), ("bfloat16", "bfloat16", "bfloat16"),
                              (f"defaults (geomax {geomax_default_name}, port float32)",
                               geomax_default_name, "float32")):
            row: dict[str, Any] = {"row": label + suffix, "geomax": gnet, "port": pnet,
                                   "geomax_precision": pg, "port_precision": pp}
            for mode in MODES:
                g, p = median(gnet, pg, mode), median(pnet, pp, mode)
                gb, pb = best(gnet, pg, mode), best(pnet, pp, mode)
                row[mode] = {"geomax_s": g, "port_s": p, "ratio_port_over_geomax": p / g,
                             "paired_ratio_median": paired(gnet, pnet, pg, pp, mode),
                             "geomax_best_s": gb, "port_best_s": pb, "ratio_best": pb / gb}
            rows.append(row)

    header = (f"{'precision':66s} {'train geomax s':>14s} {'train port s':>12s} {'port/geomax':>11s} "
              f"{'paired':>6s} {'fwd geomax s':>12s} {'fwd port s':>10s} {'port/geomax':>11s} "
              f"{'paired':>6s}")
    for title, g_key, p_key, r_key in (("median", "geomax_s", "port_s", "ratio_port_over_geomax"),
                                       ("best", "geomax_best_s", "port_best_s", "ratio_best")):
        print(f"\n{title} of {args.repeats} rounds (after {args.warmup} warm-up), batch {args.batch}; "
              "port/geomax > 1: geomax faster; paired: median over rounds of the ratio in one round")
        print(header)
        print("-" * len(header))
        for row in rows:
            t, f = row["train_step"], row["forward"]
            print(f"{row['row']:66s} {t[g_key]:14.3f} {t[p_key]:12.3f} {t[r_key]:11.2f} "
                  f"{t['paired_ratio_median']:6.2f} {f[g_key]:12.3f} {f[p_key]:10.3f} "
                  f"{f[r_key]:11.2f} {f['paired_ratio_median']:6.2f}")
    print(f"\n1-min load average after each timed round: {' '.join(f'{v:.2f}' for v in round_load)} "
          f"({os.cpu_count()} CPUs; this run alone adds about {torch.get_num_threads()}, more: "
          "another process shared the cores)")
    print(f"\nparameters: geomax {params['geomax']['total']:,} "
          f"({params['geomax']['without_aux_semantic_head']:,} without the auxiliary semantic head), "
          f"port {params['port']['total']:,} ({params['port']['without_aux_semantic_head']:,} without)")

    profile = {}
    if args.profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        groups = {"convolution": ("convolution", "conv2d"), "batch_norm": ("batch_norm",)}
        for net in networks:
            networks[net]["train_step"]("float32")  # warm-up
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                networks[net]["train_step"]("float32")
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            profile[net] = {"step_self_cpu_s": total / 1e6, **{
                f"{g}_share": sum(e.self_cpu_time_total for e in events
                                  if e.key.startswith("aten::") and any(k in e.key for k in keys)) / total
                for g, keys in groups.items()}}
            print(f"profile {net:10s} float32 train step {profile[net]['step_self_cpu_s']:.2f} s self CPU: "
                  f"convolutions {100 * profile[net]['convolution_share']:.0f} %, "
                  f"batch norm {100 * profile[net]['batch_norm_share']:.0f} %", flush=True)

    result = {
        "torch": torch.__version__, "cpu": cpu_name(), "machine": platform.machine(),
        "threads": torch.get_num_threads(), "port_repo": "conradry/max-deeplab",
        "port_commit": port_commit(port, args.port_commit),
        "settings": {"size": args.size, "batch": args.batch, "slots": args.slots,
                     "classes": args.classes, "repeats": args.repeats, "warmup": args.warmup,
                     "lr": args.lr, "geomax_variant": "max_deeplab_s",
                     "geomax_default_precision": geomax_default_name,
                     "loss": "sum of the means of the float outputs"},
        "params": params, "output_shapes": shapes, "rows": rows, "profile": profile, "samples_s": samples,
        "load_1min_per_round": round_load,
        "total_s": time.perf_counter() - t_start,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
