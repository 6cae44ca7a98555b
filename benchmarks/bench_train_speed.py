"""Training speed of the MaXDeepLab learner: the step inside ``fit`` against the bare network, mixed precision.

Every figure comes from the real ``MaXDeepLab`` learner (fastai loop, loss, Hungarian
matching, data loading, validation, checkpoints) on synthetic exports made by the
script, with the default variant of the machine (``max_deeplab_cpu`` on a CPU). Four
parts, each a ratio measured in this run:

``overhead``
    A time-budgeted ``fit`` (``--budget-minutes``, the path ``geomax train --minutes``
    takes) on three exports: 128 px chips; 256 px chips with the default recipe (on a CPU
    random 128 px crops); 256 px chips with ``chip_size=256``. The step inside ``fit`` is
    the fit's wall time over its training batches (validation, checkpoints and loading
    included); the bare step is forward + backward + SGD with a trivial loss (the mean of
    every output) on one batch of the same size and precision. Their ratio is what the
    training loop adds to the network. The bare step is timed inside the fit, on the batch
    just trained, after every ``--bare-every``-th batch (the network left as it was: SGD at
    learning rate 0, batch-norm statistics restored; that time is left out of the fit's), and
    its median is the bare step: timed once after the fit (``bare_step_after_fit_s``, kept
    for comparison) it varied by +-20 % from run to run on a shared machine, which moved the
    ratio by as much (1.16-1.57 for the same code). Each fit also records the wall-clock
    time of its stages (a callback: loading + callbacks, forward, loss, backward with the
    loss's backward, optimiser, validation, epoch ends; ms per step) and the fit step over
    its own forward + backward, timed in the same steps. The 256 px default-recipe export also runs with
    ``mixed_precision="off"``: the steps per minute bfloat16 gains inside ``fit``, and the
    steps a 15-minute budget gives (extrapolated from the budget run: steps per second x 900).
``sizes``
    Images per second of the training step (loader, network, loss, optimiser; no
    validation) at ``--sizes`` px (``chip_size`` forced; above 256 px a quarter of the
    batch), float32 and mixed precision.
``ab``
    Two in-process A/B comparisons, interleaved rounds, medians, on a batch of the 256 px
    export's default recipe (128 px crops): the optimiser step of fastai's ``Adam``, of
    PyTorch's multi-tensor ``AdamW`` and of the learner's optimiser (``AdamW``, fused) on the
    network's parameters,
    and forward + loss + backward in float32 with contiguous against channels-last weights. With
    ``--loss-baseline REV``, also the loss alone (forward + backward, the network's outputs of that batch
    held fixed) of this checkout against ``geomax/models/criterion.py`` as it was at the git revision
    ``REV``, and how many segment entries the batch's targets carry against how many are present.
``quality``
    Validation PQ after the same number of optimiser steps (``--quality-epochs`` epochs
    of a 128 px export) in float32 and in mixed precision, seed 0, plus float32 with
    seed 1: the seed-to-seed difference is the noise the precision difference is read against.

On a CPU without native bfloat16 (and with ``mixed_precision="auto"``) both precisions
run float32 and the ratio is 1. Prints tables and writes
``benchmarks/results/bench_train_speed.json``. Run it alone on the machine.

    python benchmarks/bench_train_speed.py                                  # all parts (about 20 minutes on 2 cores)
    python benchmarks/bench_train_speed.py --parts overhead --budget-minutes 1
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_chips(folder: Path, chip: int, n_chips: int, seed: int = 11) -> Path:
    """A synthetic export of about ``n_chips`` chips of ``chip`` px (no overlap)."""
    from geomax import export_training_data
    from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene

    side = chip * max(2, int(n_chips ** 0.5 + 0.999))
    folder.mkdir(parents=True, exist_ok=True)
    make_scene(folder / "scene.tif", folder / "scene.gpkg", size=side, seed=seed)
    export_training_data(folder / "scene.tif", folder / "scene.gpkg", folder / "chips", class_table=SYNTHETIC_CLASSES,
                         tile_size=chip, progress=False)
    return folder / "chips"


def _has_mixed_precision() -> bool:
    from geomax.config import TrainConfig

    return "mixed_precision" in TrainConfig.field_names()


def _model(chips: Path, chip_size: int | None, batch_size: int, seed: int = 0):
    from geomax import MaXDeepLab, prepare_data
    from geomax.config import TrainConfig

    gpu = torch.cuda.is_available()
    probe = prepare_data(chips, batch_size=batch_size, val_split_pct=0.1)
    size = TrainConfig(chip_size=chip_size).training_chip_size(int(probe.chip_size), gpu) \
        if hasattr(TrainConfig, "training_chip_size") else (chip_size or probe.chip_size)
    data = prepare_data(chips, chip_size=size, batch_size=batch_size, val_split_pct=0.1)
    torch.manual_seed(seed)
    return MaXDeepLab(data), data


def _mixed_on(device) -> bool:
    """Whether ``mixed_precision="auto"`` autocasts on ``device`` (bfloat16 on a CPU with native support)."""
    try:
        from geomax.models.precision import autocast_dtype
    except ImportError:
        return False
    return autocast_dtype(device, "auto") is not None


def _mixed_mode() -> str:
    """The ``mixed_precision`` of the mixed cells: ``"bf16"`` where the device computes bfloat16 natively
    (``"auto"`` trains 128 px chips in float32 on a CPU since 2026-12-07), else ``"auto"`` (float32 on a CPU
    without native bfloat16, as the docstring says; also a checkout from before the ``"bf16"`` mode)."""
    from geomax.config import MIXED_PRECISION_MODES

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16" if "bf16" in MIXED_PRECISION_MODES and _mixed_on(device) else "auto"


def _trivial_step(net, xb, mixed: bool, opt) -> float:
    """Seconds of forward + backward + ``opt`` step with a trivial loss (the mean of every output) on ``xb``;
    the gradients are cleared after the clock stops."""
    t0 = time.perf_counter()
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=mixed):
        out = net(xb)
    loss = sum(v.float().mean() for v in out.values() if v.is_floating_point())
    loss.backward()
    opt.step()
    seconds = time.perf_counter() - t0
    opt.zero_grad()
    return seconds


def bare_step(model, data, mixed: bool, repeats: int = 9) -> float:
    """Median seconds of forward + backward + SGD step with a trivial loss on one training batch."""
    net = model.learn.model
    net.train()
    xb, _ = next(iter(data.train))
    opt = torch.optim.SGD(net.parameters(), lr=1e-6)
    times = [_trivial_step(net, xb, mixed, opt) for _ in range(repeats + 2)][2:]  # two warm-up steps
    return sorted(times)[len(times) // 2]


def _bare_on(net, xb, mixed: bool, opt) -> float:
    """Seconds of one bare step (:func:`_trivial_step`) on ``xb``, leaving the network as it was: ``opt`` is SGD
    at learning rate 0 and the batch-norm running statistics are restored."""
    buffers = [b.clone() for b in net.buffers()]
    seconds = _trivial_step(net, xb, mixed, opt)
    with torch.no_grad():
        for b, saved in zip(net.buffers(), buffers):
            b.copy_(saved)
    return seconds


def _stage_clock(bare_every: int = 0, mixed: bool = False):
    """A fastai callback adding up the wall-clock time of each stage of a ``fit`` (seconds by stage).

    With ``bare_every`` it also times a bare step (:func:`_bare_on`) on every ``bare_every``-th training
    batch, between that batch's end and the next one (``bare`` seconds; the time taken is left out of every
    stage and kept in ``excluded``): bare and fit steps are then sampled at the same moments, so a load
    change on a shared machine moves both.
    """
    from fastai.callback.core import Callback

    class StageClock(Callback):
        order = -100  # before every other callback: a stage ends when the first callback of the next one runs

        def before_fit(self):
            self.seconds: dict = {}
            self.bare: list = []
            self.excluded = 0.0
            self.batches = 0
            self._opt = torch.optim.SGD(self.learn.model.parameters(), lr=0.0)
            self.last = time.perf_counter()

        def _end(self, stage: str) -> None:
            now = time.perf_counter()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
            self.last = now

        def before_batch(self):
            self._end("loading + callbacks" if self.training else "validation")

        def after_pred(self):
            self._end("forward" if self.training else "validation")

        def after_loss(self):
            self._end("loss" if self.training else "validation")

        def after_backward(self):
            self._end("backward")

        def after_step(self):
            self._end("optimiser")

        def after_batch(self):
            self._end("loading + callbacks" if self.training else "validation")
            if self.training and bare_every:
                self.batches += 1
                if self.batches % bare_every == 0:
                    t0 = time.perf_counter()
                    self.bare.append(_bare_on(self.learn.model, self.learn.xb[0], mixed, self._opt))
                    self.last = time.perf_counter()
                    self.excluded += self.last - t0

        def before_validate(self):
            self._end("epoch ends")

        def after_validate(self):
            self._end("validation")

        def after_epoch(self):
            self._end("epoch ends")

    return StageClock()


def budget_fit(chips: Path, chip_size: int | None, args, mixed: bool) -> dict:
    """A ``fit(minutes=...)`` with the defaults; its step time, its stages, and the bare step of the same model."""
    model, data = _model(chips, chip_size, args.batch_size)
    options = {"mixed_precision": _mixed_mode() if mixed else "off"} if _has_mixed_precision() else {}
    autocast = mixed and _mixed_on(model.device)
    clock = _stage_clock(args.bare_every, autocast)
    t0 = time.perf_counter()
    model.fit(minutes=args.budget_minutes, warn_empty=False, cbs=[clock], **options)
    wall = time.perf_counter() - t0 - clock.excluded  # the interleaved bare steps left out
    steps = model.steps_trained
    after = bare_step(model, data, autocast)
    interleaved = sorted(clock.bare)[len(clock.bare) // 2] if clock.bare else None
    bare = interleaved or after
    fit_step = wall / max(steps, 1)
    stages = {k: v / max(steps, 1) for k, v in clock.seconds.items()}
    network = stages.get("forward", 0.0) + stages.get("backward", 0.0)
    return {"train_chip_size": int(data.chip_size), "mixed_precision": mixed, "budget_s": 60.0 * args.budget_minutes,
            "wall_s": wall, "steps": steps, "epochs": len(model.history), "fit_step_s": fit_step, "bare_step_s": bare,
            "bare_steps_interleaved": len(clock.bare), "bare_step_after_fit_s": after,
            "fit_over_bare": fit_step / bare, "fit_over_bare_after_fit": fit_step / after,
            "steps_per_15_min": steps / wall * 900.0,
            "stages_s_per_step": stages, "fit_over_network_in_fit": fit_step / network if network else None,
            "final_valid_pq": (model.history[-1].get("panoptic_quality") if model.history else None)}


def size_batch(size: int, batch_size: int) -> int:
    """The batch of the images-per-second cell at ``size`` px: a quarter of ``batch_size`` above 256 px
    (a 512 px batch of 8 holds a segment-by-slot loss of several GB per tensor on a CPU)."""
    return batch_size if size <= 256 else max(1, batch_size // 4)


def images_per_second(chips: Path, size: int, args, mixed: bool) -> dict:
    """Training images per second over ``args.batches`` batches after ``args.warmup`` (no validation)."""
    from fastai.callback.core import Callback, CancelFitException, CancelValidException

    batch = size_batch(size, args.batch_size)
    model, data = _model(chips, size, batch)
    cuda = model.device.type == "cuda"

    class Clock(Callback):
        order = 99

        def before_fit(self):
            self.n, self.t0, self.seconds = 0, None, None

        def before_batch(self):
            if self.training and self.n == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def before_validate(self):
            raise CancelValidException()

        def after_batch(self):
            if not self.training:
                return
            self.n += 1
            if self.n == args.warmup + args.batches:
                if cuda:
                    torch.cuda.synchronize()
                self.seconds = time.perf_counter() - self.t0
                raise CancelFitException()

    clock = Clock()
    options = {"mixed_precision": _mixed_mode() if mixed else "off"} if _has_mixed_precision() else {}
    epochs = 1 + (args.warmup + args.batches) // max(len(data.train), 1)
    model.fit(epochs, checkpoint=False, warn_empty=False, cbs=[clock], **options)
    if clock.seconds is None:
        raise RuntimeError(f"Only {clock.n} batches ran; make more chips or fewer batches.")
    return {"size": size, "batch_size": batch, "mixed_precision": mixed,
            "images_per_s": args.batches * batch / clock.seconds,
            "step_s": clock.seconds / args.batches,
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}


def quality_at_equal_steps(chips: Path, args, mixed: bool, seed: int) -> dict:
    model, data = _model(chips, None, args.batch_size, seed=seed)
    options = {"mixed_precision": _mixed_mode() if mixed else "off"} if _has_mixed_precision() else {}
    t0 = time.perf_counter()
    model.fit(args.quality_epochs, checkpoint=False, warn_empty=False, **options)
    wall = time.perf_counter() - t0
    metrics = model.compute_metrics()
    return {"mixed_precision": mixed, "seed": seed, "steps": model.steps_trained, "wall_s": wall,
            "pq": metrics["all"]["pq"], "pq_things": metrics["things"]["pq"], "pq_stuff": metrics["stuff"]["pq"]}


def _loss_at_revision(rev: str):
    """The ``MaXDeepLabLoss`` class of ``geomax/models/criterion.py`` at git revision ``rev`` (its imports from this checkout)."""
    import importlib.util
    import subprocess

    src = subprocess.run(["git", "show", f"{rev}:geomax/models/criterion.py"], cwd=HERE.parent, capture_output=True,
                         text=True, check=True).stdout
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("geomax.models._criterion_baseline", None))
    module.__package__ = "geomax.models"
    exec(compile(src, f"criterion.py@{rev}", "exec"), module.__dict__)
    return module.MaXDeepLabLoss


def loss_ab(net, loss_func, xb, yb, rev: str, rounds: int) -> dict:
    """Loss forward + backward (ms, medians of interleaved rounds): this checkout's against revision ``rev``'s."""
    from geomax.common import GT_CLASSES, GT_SEGMENT_INDEX, PRED_MASK_LOGITS

    baseline = _loss_at_revision(rev)(loss_func.num_classes, config=loss_func.config)
    with torch.no_grad():
        out = {k: v.detach().float() for k, v in net(xb).items()}
    losses = {"this checkout": loss_func, f"at {rev}": baseline}
    times: dict = {k: [] for k in losses}
    values = {}
    for _ in range(rounds):
        for name, fn in losses.items():
            pred = {k: v.clone().requires_grad_() for k, v in out.items()}
            torch.manual_seed(0)  # the same sampled points for both
            t0 = time.perf_counter()
            total = fn(pred, yb)
            total.backward()
            times[name].append(time.perf_counter() - t0)
            values[name] = float(total.detach())
    seg = yb[GT_SEGMENT_INDEX].reshape(len(xb), -1)
    present = [len(set(s[s >= 0].tolist())) for s in seg]
    med = lambda v: 1000 * sorted(v)[len(v) // 2]  # noqa: E731
    return {"loss_fwd_bwd_ms": {k: med(v) for k, v in times.items()}, "loss_values": values,
            "segment_entries": int(yb[GT_CLASSES].shape[1]), "present_per_image": present,
            "slots": int(out[PRED_MASK_LOGITS].shape[1])}


def ab_comparisons(chips: Path, args, rounds: int = 12) -> dict:
    """Optimiser step: fastai ``Adam``, multi-tensor ``AdamW`` and the learner's (fused); float32 step: contiguous vs channels-last (ms, medians)."""
    from fastai.optimizer import Adam

    from geomax.models.learner import adamw

    model, data = _model(chips, None, args.batch_size)
    net, loss_func = model.learn.model, model.learn.loss_func
    net.train()
    xb, yb = next(iter(data.train))
    groups = model.learn.splitter(net)
    optimisers = {"fastai_adam": Adam(groups, lr=1e-3), "foreach_adamw": adamw(groups, lr=1e-3, foreach=True),
                  "learner_adamw": adamw(groups, lr=1e-3)}
    times: dict = {k: [] for k in optimisers}
    for _ in range(rounds):
        for name, opt in optimisers.items():
            for p in net.parameters():
                p.grad = torch.randn_like(p) * 1e-3
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    step_times: dict = {k: [] for k in formats}
    for _ in range(max(3, rounds // 2)):
        for name, fmt in formats.items():
            net.to(memory_format=fmt)
            for timed in (False, True):  # one untimed step after each switch
                t0 = time.perf_counter()
                loss_func(net(xb), yb).backward()
                net.zero_grad()
                if timed:
                    step_times[name].append(time.perf_counter() - t0)
    med = lambda v: 1000 * sorted(v)[len(v) // 2]  # noqa: E731
    result = {"optimiser_step_ms": {k: med(v) for k, v in times.items()},
              "float32_fwd_loss_bwd_ms": {k: med(v) for k, v in step_times.items()},
              "params": sum(p.numel() for p in net.parameters()), "tensors": len(list(net.parameters()))}
    if args.loss_baseline:
        net.to(memory_format=torch.contiguous_format)
        result["loss"] = loss_ab(net, loss_func, xb, yb, args.loss_baseline, rounds)
    return result


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def print_pq_rows(rows: list[dict], title: str, name, indent: str = "") -> None:
    """A table of training runs: ``name(row)`` under ``title``, then seed, steps, wall time and PQ (all, things, stuff)."""
    print(f"\n{indent}{title:9s} {'seed':>4s} {'steps':>6s} {'wall s':>7s} {'PQ':>6s} {'PQ th':>6s} {'PQ st':>6s}")
    for r in rows:
        print(f"{indent}{name(r):9s} {r['seed']:4d} {r['steps']:6d} {r['wall_s']:7.0f} "
              f"{100 * r['pq']:6.1f} {100 * r['pq_things']:6.1f} {100 * r['pq_stuff']:6.1f}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["overhead", "sizes", "quality"],
                    choices=["overhead", "ab", "sizes", "quality"])
    ap.add_argument("--budget-minutes", type=float, default=1.5, help="budget of each overhead fit")
    ap.add_argument("--bare-every", type=int, default=10,
                    help="overhead: time a bare step after every N-th training batch of the fit (0: only after the fit)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=6, help="timed training batches per size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    ap.add_argument("--quality-epochs", type=int, default=6, help="epochs of the 128 px export for the PQ check")
    ap.add_argument("--loss-baseline", default=None, metavar="REV",
                    help="ab part: also time the loss against geomax/models/criterion.py at this git revision")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. the commit)")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_train_speed.json"))
    args = ap.parse_args(argv)
    from geomax.models.learner import default_backbone

    try:
        from geomax.models.precision import cpu_has_native_bf16
        native_bf16 = cpu_has_native_bf16()
    except ImportError:  # a checkout from before mixed precision on CPU
        native_bf16 = None
    precisions = [False, True] if _has_mixed_precision() or torch.cuda.is_available() else [False]
    result: dict = {"benchmark": "train_speed", "label": args.label, "args": {k: v for k, v in vars(args).items()
                                                                              if k != "out"},
                    "device": _device_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "backbone": default_backbone(), "cpu_native_bf16": native_bf16}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(result, indent=2))

    with tempfile.TemporaryDirectory(prefix="bench_train_speed_") as tmp:
        folder = Path(tmp)
        exports = {128: make_chips(folder / "e128", 128, 120), 256: make_chips(folder / "e256", 256, 30)}
        if "overhead" in args.parts:
            cells = [("128 px export", 128, None, True), ("256 px export, default recipe", 256, None, True),
                     ("256 px export, default recipe", 256, None, False), ("256 px export, chip_size 256", 256, 256, True)]
            rows = []
            for name, export, chip_size, mixed in cells:
                if mixed and not _has_mixed_precision():
                    mixed = False
                    if any(r["cell"] == name and not r["mixed_precision"] for r in rows):
                        continue
                row = {"cell": name, **budget_fit(exports[export], chip_size, args, mixed)}
                rows.append(row)
                print(f"{name:32s} mixed={mixed!s:5s} train {row['train_chip_size']} px: {row['steps']} steps "
                      f"in {row['wall_s']:.0f} s, fit step {row['fit_step_s']:.3f} s, bare {row['bare_step_s']:.3f} s, "
                      f"ratio {row['fit_over_bare']:.2f}", flush=True)
                print("    per step: " + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in
                                                   sorted(row["stages_s_per_step"].items(), key=lambda kv: -kv[1]))
                      + f"; fit step / its own forward + backward {row['fit_over_network_in_fit']:.2f}", flush=True)
                result["overhead"] = rows
                save()
            default = [r for r in rows if r["cell"] == "256 px export, default recipe"]
            if len(default) == 2:
                result["bf16_over_fp32_steps_in_fit"] = default[0]["fit_step_s"] and \
                    default[1]["fit_step_s"] / default[0]["fit_step_s"]
        if "ab" in args.parts:
            ab = ab_comparisons(exports[256], args)
            result["ab"] = ab
            save()
            o, f = ab["optimiser_step_ms"], ab["float32_fwd_loss_bwd_ms"]
            print(f"optimiser step: fastai Adam {o['fastai_adam']:.1f} ms, AdamW multi-tensor {o['foreach_adamw']:.1f} ms, "
                  f"learner's AdamW (fused) {o['learner_adamw']:.1f} ms "
                  f"({ab['params']} parameters in {ab['tensors']} tensors); float32 forward + loss + backward: "
                  f"contiguous {f['contiguous']:.0f} ms, channels-last {f['channels_last']:.0f} ms", flush=True)
            if "loss" in ab:
                lo = ab["loss"]
                print(f"loss forward + backward ({lo['slots']} slots, {lo['segment_entries']} segment entries, present "
                      f"per image {lo['present_per_image']}): " + ", ".join(
                          f"{k} {v:.1f} ms (loss {lo['loss_values'][k]:.4f})" for k, v in lo["loss_fwd_bwd_ms"].items()),
                      flush=True)
        if "sizes" in args.parts:
            rows = []
            for size in args.sizes:
                chips = exports.get(size) or make_chips(folder / f"e{size}", size, 12)
                for mixed in precisions:
                    row = images_per_second(chips, size, args, mixed)
                    rows.append(row)
                    print(f"{size} px mixed={mixed!s:5s}: {row['images_per_s']:.2f} images/s "
                          f"({row['step_s']:.2f} s a step)", flush=True)
                    result["sizes"] = rows
                    save()
        if "quality" in args.parts:
            rows = []
            for mixed, seed in [(False, 0), (True, 0), (False, 1)]:
                if mixed and len(precisions) < 2:
                    continue
                row = quality_at_equal_steps(exports[128], args, mixed, seed)
                rows.append(row)
                print(f"quality mixed={mixed!s:5s} seed {seed}: {row['steps']} steps in {row['wall_s']:.0f} s, "
                      f"PQ {100 * row['pq']:.1f} (things {100 * row['pq_things']:.1f}, "
                      f"stuff {100 * row['pq_stuff']:.1f})", flush=True)
                result["quality"] = rows
                save()

    print(f"\n{result['backbone']}, batch {args.batch_size}, on {result['device']} ({result['threads']} threads), "
          f"native bf16: {native_bf16}")
    if "overhead" in result:
        print(f"\n{'cell':32s} {'precision':9s} {'train px':>8s} {'steps':>6s} {'fit step s':>10s} {'bare step s':>11s} "
              f"{'fit/bare':>8s} {'steps/15 min':>12s}")
        for r in result["overhead"]:
            print(f"{r['cell']:32s} {'bf16' if r['mixed_precision'] else 'float32':9s} {r['train_chip_size']:8d} "
                  f"{r['steps']:6d} {r['fit_step_s']:10.3f} {r['bare_step_s']:11.3f} {r['fit_over_bare']:8.2f} "
                  f"{r['steps_per_15_min']:12.0f}")
        if "bf16_over_fp32_steps_in_fit" in result:
            print(f"steps per minute in fit, bf16 / float32 (256 px export, default recipe): "
                  f"{result['bf16_over_fp32_steps_in_fit']:.2f}x")
    if "sizes" in result:
        print(f"\n{'size':>5s} {'batch':>5s} {'precision':9s} {'images/s':>9s} {'step s':>7s}")
        for r in result["sizes"]:
            print(f"{r['size']:5d} {r['batch_size']:5d} {'bf16' if r['mixed_precision'] else 'float32':9s} "
                  f"{r['images_per_s']:9.2f} {r['step_s']:7.2f}")
    if "quality" in result:
        print_pq_rows(result["quality"], "precision", lambda r: "bf16" if r["mixed_precision"] else "float32")
    save()
    print(f"\nwritten {out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out.name}")
    return result


if __name__ == "__main__":
    main()
