"""Training one ``MaXDeepLab`` on several processes / GPUs with PyTorch DDP, through fastai.

fastai's :class:`fastai.distributed.DistributedTrainer` (on Hugging Face ``accelerate``)
wraps the network in ``DistributedDataParallel`` and the data loaders in
``DistributedDL`` (each process trains on its share of every epoch; gradients are
averaged across processes at every step, so the weights stay identical). Launch one
process per GPU with ``torchrun`` (see :mod:`geomax.train_ddp`).

Batch norm: the network normalises its attention logits with batch norm, which
wants statistics over the whole global batch, so on CUDA every ``BatchNorm`` is
converted to :class:`torch.nn.SyncBatchNorm` (statistics synchronised across
processes at every training step). PyTorch's ``SyncBatchNorm`` runs on GPUs only
(its forward refuses CPU tensors when a process group is active), so a CPU run with
the ``gloo`` backend -- meant for tests and for checking a set-up -- keeps per-process
batch norm; the running statistics are still broadcast from rank 0 at every step
(DDP ``broadcast_buffers``), so the saved model is the same on every process.

What differs from a one-process ``fit``: the learning rate must be given (no
``lr_find``), early stopping is refused (the processes could decide differently and
wait on each other forever), and the validation loss / PQ shown are those of the
rank-0 process's share of the validation chips.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import torch

from ..config import TrainConfig
from ..errors import ArgumentError

__all__ = ["rank", "world_size", "local_rank", "is_main_process", "distributed_ctx", "fit_distributed",
           "parameter_digest", "digests_of_all_processes", "sync_batchnorm_supported"]


def rank() -> int:
    """Global rank of this process (0 without a distributed launch)."""
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of training processes (1 without a distributed launch)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    """Rank of this process on its machine (its GPU index)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on the process that writes files (rank 0)."""
    return rank() == 0


def sync_batchnorm_supported() -> bool:
    """Whether ``SyncBatchNorm`` can run here: PyTorch supports it on CUDA (not on CPU / gloo)."""
    return torch.cuda.is_available()


def _trainer_class():
    """fastai's DistributedTrainer, with data loaders that also work on the CPU ``gloo`` backend."""
    import torch.distributed as dist
    from fastai.distributed import DistributedDL, DistributedTrainer

    class GlooSafeDistributedDL(DistributedDL):
        # fastai broadcasts rank 0's shuffled indices through a CUDA tensor (NCCL needs one);
        # gloo takes CPU tensors, so use the process group's own device.
        def _broadcast(self, t, rank):
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = torch.as_tensor(t, dtype=torch.long, device=device)
            dist.broadcast(t, rank)
            return t.cpu().tolist()

    class GeomaxDistributedTrainer(DistributedTrainer):
        def before_fit(self):
            super().before_fit()
            if not isinstance(self.learn.model, torch.nn.parallel.DistributedDataParallel):
                raise RuntimeError(f"accelerate did not wrap the network in DistributedDataParallel "
                                   f"(distributed type {self.accelerator.distributed_type}); check the torchrun "
                                   "environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR).")

        def _wrap_dl(self, dl):
            if isinstance(dl, DistributedDL):
                return dl
            return GlooSafeDistributedDL(dl, device=next(self.learn.model.parameters()).device)

    return GeomaxDistributedTrainer


@contextmanager
def distributed_ctx(model, sync_bn: bool | None = None):
    """Train ``model`` (a :class:`~geomax.models.learner.MaXDeepLab`) with DDP inside the block.

    Like fastai's ``Learner.distrib_ctx``: outside a distributed launch (one process)
    it does nothing.

    Parameters
    ----------
    model:
        The ``MaXDeepLab`` to train.
    sync_bn:
        Convert batch norm to ``SyncBatchNorm``. Default: on CUDA yes, on CPU no
        (PyTorch does not run ``SyncBatchNorm`` on CPU); ``True`` on CPU raises.

    Raises
    ------
    ArgumentError
        ``sync_bn=True`` without CUDA, or ``accelerate`` (fastai's DDP engine) missing.
    """
    if world_size() <= 1:
        yield model
        return
    if sync_bn is None:
        sync_bn = sync_batchnorm_supported()
    if sync_bn and not sync_batchnorm_supported():
        raise ArgumentError("sync_bn=True needs CUDA: PyTorch's SyncBatchNorm does not run on CPU. "
                            "Train on GPUs, or pass sync_bn=False (per-process batch norm) for a CPU run.")
    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise ArgumentError("Distributed training needs Hugging Face accelerate (fastai's DDP engine): "
                            "run pip install 'geomax[dist]'.") from exc
    from fastai.callback.progress import ProgressCallback

    learn = model.learn
    # accelerate picks the CPU (gloo) process group only when told to run on the CPU
    trainer = _trainer_class()(sync_bn=sync_bn, cpu=not torch.cuda.is_available())
    learn.add_cb(trainer)
    had_progress = any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    if rank() and had_progress:
        learn.remove_cb(ProgressCallback)
    try:
        yield model
    finally:
        learn.remove_cb(trainer)
        if rank() and had_progress and not any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
            learn.add_cb(ProgressCallback())


def fit_distributed(model, config: TrainConfig | None = None, sync_bn: bool | None = None,
                    **train_options) -> TrainConfig:
    """``model.fit(config=...)`` as one DDP job over all processes of the launch.

    Parameters
    ----------
    model:
        The ``MaXDeepLab`` (built the same way, with the same seed, on every process).
    config:
        The recipe (:class:`~geomax.config.TrainConfig`); ``train_options`` override its settings.
    sync_bn:
        See :func:`distributed_ctx`.

    Returns
    -------
    TrainConfig
        The recipe used.

    Raises
    ------
    ArgumentError
        ``lr_find`` or ``early_stopping`` in a multi-process run.
    """
    cfg = TrainConfig.build(config, **train_options)
    if world_size() > 1 and cfg.lr_find:
        raise ArgumentError("lr_find is not run under DDP: run model.lr_find() once in a single process and pass "
                            "its suggestion as lr.")
    if world_size() > 1 and cfg.early_stopping:
        raise ArgumentError("early_stopping is not supported in a multi-process run (processes could stop at "
                            "different epochs); train a fixed number of epochs with checkpoint=True instead.")
    with distributed_ctx(model, sync_bn=sync_bn):
        model.fit(config=cfg)
    return cfg


def parameter_digest(module_or_state_dict) -> str:
    """SHA-256 of every parameter and buffer of a module (or of a state dict), names included, in state-dict order."""
    state = module_or_state_dict.state_dict() if isinstance(module_or_state_dict, torch.nn.Module) \
        else module_or_state_dict
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def digests_of_all_processes(module: torch.nn.Module) -> list[str]:
    """:func:`parameter_digest` of ``module`` on every process (all equal when DDP kept them in step)."""
    import torch.distributed as dist

    mine = parameter_digest(module)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out
