"""Train one MaXDeepLab model on several GPUs (or CPU processes) with PyTorch DDP.

Launch one process per GPU with ``torchrun``; every process reads the same
training-data export, trains on its share of each epoch, and rank 0 writes the
model package::

    # one machine, 4 GPUs
    torchrun --nproc_per_node 4 -m geomax.train_ddp exports/kent models/kent \\
        --backbone max_deeplab_s --epochs 30 --batch-size 8

    # two machines with 8 GPUs each (run on both; node_rank 0 and 1)
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr 10.0.0.1 \\
        --master_port 29500 -m geomax.train_ddp exports/kent models/kent --epochs 30

    # check a set-up on a CPU machine: 2 processes, gloo backend
    torchrun --nproc_per_node 2 -m geomax.train_ddp exports/kent models/kent_cpu \\
        --backbone max_deeplab_tiny --epochs 1

``--batch-size`` is per process (the global batch is ``batch size x processes``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .config import TrainConfig, default_of
from .log import get_logger

__all__ = ["train_ddp", "main"]

log = get_logger(__name__)


def train_ddp(data_path: str | Path, out_model: str | Path, backbone: str | None = None,
              train: TrainConfig | None = None, sync_bn: bool | None = None, compute_metrics: bool = True,
              **train_options) -> Path | None:
    """Train a model on every process of a ``torchrun`` launch; rank 0 saves it.

    Also works in a plain single process (then it is an ordinary ``fit``).

    Parameters
    ----------
    data_path:
        The training-data export (``Panoptic_Segmentation`` layout), readable by every process.
    out_model:
        The model folder rank 0 writes (``.pth``, ``.emd``, ``.dlpk``, ``model_metrics.html``).
    backbone:
        Network variant (default: the machine's, as :class:`geomax.MaXDeepLab`).
    train:
        The recipe (:class:`~geomax.config.TrainConfig`, resolved with
        :func:`geomax.workflows.train.resolve_train_config` like every entry point);
        ``train_options`` override its settings. ``batch_size`` is per process.
    sync_bn:
        Synchronised batch norm; default: on CUDA yes, on CPU no (see
        :mod:`geomax.models.distributed`).
    compute_metrics:
        Rank 0 computes PQ on the validation chips for the model package.

    Returns
    -------
    Path or None
        The model folder on rank 0, ``None`` on the other processes.
    """
    import torch
    import torch.distributed as dist

    from .models.distributed import digests_of_all_processes, fit_distributed, is_main_process, local_rank, world_size
    from .workflows.train import build_model, prepare, resolve_train_config

    cfg = resolve_train_config(train, **train_options)
    device = None
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        device = torch.device("cuda", local_rank())
    torch.manual_seed(cfg.seed)
    data = prepare(data_path, cfg, device=device)
    model = build_model(data, backbone=backbone)
    fit_distributed(model, cfg, sync_bn=sync_bn)
    digests = digests_of_all_processes(model.model)
    if is_main_process():
        state = "identical" if len(set(digests)) == 1 else "DIFFERENT"
        log.info(f"weights on {len(digests)} process(es): {state}")
    me = dist.get_rank() if dist.is_initialized() else 0
    log.info(f"rank {me} weights sha256 {digests[me]} after {model.learn.train_iter} training steps")
    folder = None
    if is_main_process():
        folder = model.save(Path(out_model).resolve(), compute_metrics=compute_metrics)
        log.info(f"model saved to {folder}")
    if world_size() > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return folder


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m geomax.train_ddp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="training-data export folder (Panoptic_Segmentation layout)")
    p.add_argument("out_model", help="model folder to write (rank 0)")
    p.add_argument("--backbone", default=None, help="network variant (default: max_deeplab_s on CUDA, "
                                                    "max_deeplab_cpu otherwise)")
    p.add_argument("--epochs", type=int, help=f"epochs (default {TrainConfig.DEFAULT_EPOCHS})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {default_of(TrainConfig, 'lr')}; "
                                            "lr_find is not run under DDP)")
    p.add_argument("--batch-size", type=int, help="chips per process and step "
                                                  f"(default {default_of(TrainConfig, 'batch_size')})")
    p.add_argument("--chip-size", type=int, default=None, help="training chip size (default: the exported size on a GPU, random 128 px crops on a CPU)")
    p.add_argument("--val-split", type=float, help="share of chips held out for validation "
                                                   f"(default {default_of(TrainConfig, 'val_split')})")
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None,
                   help="synchronised batch norm (default on CUDA; not available on CPU)")
    p.add_argument("--no-sync-bn", dest="sync_bn", action="store_false")
    p.add_argument("--constant-lr", action="store_true", help="constant learning rate instead of one-cycle")
    p.add_argument("--no-checkpoint", action="store_true", help="no per-epoch checkpoint, do not keep the best epoch")
    p.add_argument("--no-metrics", action="store_true", help="skip PQ of the validation chips in the package")
    p.add_argument("--seed", type=int, help=f"seed of weights and split (default {default_of(TrainConfig, 'seed')})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geomax.train_ddp`` (one call per process)."""
    from .errors import GeomaxError

    args = _parser().parse_args(argv)
    try:
        train_ddp(args.data, args.out_model, backbone=args.backbone, sync_bn=args.sync_bn,
                  compute_metrics=not args.no_metrics, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                  chip_size=args.chip_size, val_split=args.val_split, seed=args.seed,
                  lr_schedule="constant" if args.constant_lr else None,
                  checkpoint=False if args.no_checkpoint else None)
    except GeomaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
