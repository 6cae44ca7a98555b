"""Train: an export folder -> a saved model, with one recipe (:class:`~geomax.config.TrainConfig`) for every entry point."""
from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import LossConfig, NetworkConfig, PostprocessConfig, TrainConfig
from ..errors import ArgumentError, DataError, ModelError
from ..log import get_logger

_log = get_logger("geomax.workflows")

__all__ = ["resolve_train_config", "prepare", "build_model", "fit_model", "train", "TrainResult", "checkpoint_folder_of"]


def resolve_train_config(train: TrainConfig | dict | None = None, **values: Any) -> TrainConfig:
    """The training recipe from an entry point's values (``None`` = not given: the config's default).

    The command line, the toolbox, the DDP launcher and the demo all call this, so the
    same values give the same recipe.
    """
    return TrainConfig.build(train, **values)


def prepare(data_path: str | os.PathLike, train: TrainConfig, device=None):
    """``prepare_data`` of an export with the recipe's chip size, batch size, split and seed."""
    from ..data.prepare import prepare_data

    kwargs: dict[str, Any] = {} if device is None else {"device": device}
    return prepare_data(data_path, chip_size=train.chip_size, batch_size=train.batch_size,
                        val_split_pct=train.val_split, seed=train.seed, **kwargs)


def build_model(data, *, backbone: str | None = None, pretrained: str | os.PathLike | None = None,
                network: NetworkConfig | dict | None = None, loss: LossConfig | None = None,
                postprocess: PostprocessConfig | None = None):
    """A new :class:`~geomax.models.learner.MaXDeepLab` for ``data``."""
    from ..models.learner import MaXDeepLab

    pretrained_path = None if pretrained is None else os.fspath(pretrained)
    return MaXDeepLab(data, backbone=backbone, pretrained_path=pretrained_path, network=network, loss=loss,
                      postprocess=postprocess)


def fit_model(model, train: TrainConfig, *, valid_estimate: float = 0.0, log: Callable[[str], Any] | None = None,
              verbose: bool = True, resume: bool = False) -> dict:
    """Train ``model`` with the recipe (``model.fit(config=train)``), then compute its validation metrics.

    An empty result (validation PQ 0, nothing predicted) or a weak one (PQ of the things under
    ``diagnose.WEAK_PQ_THINGS``) is said once, with its likely causes and what to try
    (:mod:`geomax.models.diagnose`): on ``log`` when ``verbose``, else as a warning.

    Parameters
    ----------
    model:
        A :class:`~geomax.models.learner.MaXDeepLab` with training data.
    train:
        The recipe (:func:`resolve_train_config`).
    valid_estimate:
        With ``train.minutes``: seconds one validation pass is expected to take (see
        :meth:`MaXDeepLab.fit <geomax.models.learner.MaXDeepLab.fit>`).
    log:
        Where the validation PQ summary goes (default: the ``geomax.workflows`` logger).
    verbose:
        Log the summary.
    resume:
        Continue an interrupted run from the model's checkpoint folder.

    Returns
    -------
    dict
        The validation metrics (empty without validation chips), also kept on the model
        and written into its package by ``save``.
    """
    log = log or _log.info
    model.fit(config=train, valid_estimate=valid_estimate, resume=resume, warn_empty=False)
    metrics: dict = {}
    if model.has_validation:
        try:
            metrics = model.compute_metrics()
        except Exception as exc:  # the trained weights matter more than their metrics; never lose them here
            warnings.warn(f"validation metrics not computed: {exc}")
    if verbose and "all" in metrics:
        log(f"validation PQ {100 * metrics['all']['pq']:.1f} (things {100 * metrics['things']['pq']:.1f}, "
            f"stuff {100 * metrics['stuff']['pq']:.1f})")
    from ..models.diagnose import is_empty, is_weak, warn_if_empty, warn_if_weak

    message = None
    # said once: on the log of the command or tool, else as a warning
    if is_empty(metrics):
        message = warn_if_empty(metrics, model.steps_trained, model.data.train.bs, model.data.train_ds,
                                model.state.postprocess.class_threshold, stacklevel=2, emit=not verbose)
    elif is_weak(metrics):
        message = warn_if_weak(metrics, model.steps_trained, model.data.train.bs, model.data.train_ds, stacklevel=2,
                               emit=not verbose)
    if message and verbose:
        log(f"WARNING: {message}")
    return metrics


def checkpoint_folder_of(out: str | os.PathLike) -> Path:
    """The checkpoint folder of the training that writes the model folder ``out``: ``.<name>.geomax-train`` beside it."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}.geomax-train"


@dataclass
class TrainResult:
    """What :func:`train` made.

    Attributes
    ----------
    model:
        The trained :class:`~geomax.models.learner.MaXDeepLab`.
    folder:
        The saved model folder.
    metrics:
        Validation metrics (empty without validation chips).
    train:
        The recipe used (with ``lr_find``, its learning rate).
    network:
        The network's settings as saved (variant, every :class:`~geomax.config.NetworkConfig`
        field, band and class counts).
    loss, postprocess:
        The loss and post-processing configs saved with the model.
    """

    model: Any
    folder: Path
    metrics: dict
    train: TrainConfig
    network: dict = field(default_factory=dict)
    loss: LossConfig | None = None
    postprocess: PostprocessConfig | None = None


def train(data_path: str | os.PathLike, out: str | os.PathLike, *, train: TrainConfig | None = None,
          backbone: str | None = None, pretrained: str | os.PathLike | None = None,
          network: NetworkConfig | dict | None = None, loss: LossConfig | None = None,
          postprocess: PostprocessConfig | None = None, overwrite: bool = False, resume: bool = False,
          log: Callable[[str], Any] | None = None) -> TrainResult:
    """Train a model on an export and save the model folder.

    Parameters
    ----------
    data_path:
        The training-data export folder.
    out:
        Model folder to write (new or empty unless ``overwrite``).
    train:
        The recipe (default: :class:`~geomax.config.TrainConfig`'s defaults).
    backbone, pretrained, network, loss, postprocess:
        As :class:`~geomax.models.learner.MaXDeepLab`.
    overwrite:
        Replace an earlier geomax model folder at ``out`` (never anything else).
    resume:
        Continue the interrupted training of ``out`` from its last epoch (same data and
        settings). Checkpoints live beside the output, in :func:`checkpoint_folder_of`
        ``(out)``, and are removed once the model is saved.
    log:
        Where progress lines go (default: the ``geomax.workflows`` logger).

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        The export folder or the pretrained model does not exist.
    ArgumentError
        An unknown backbone, ``out`` is a file, or ``out`` is, holds or sits inside an input.
    OutputExistsError
        ``out`` holds something and ``overwrite`` is False, or it is not a geomax model folder.
    ModelError
        ``resume`` without an interrupted training of ``out``.

    All are checked before any work; an earlier model at ``out`` is replaced only when the
    new one is complete.
    """
    log = log or _log.info
    import torch

    from ..models.callbacks import LastEpochCheckpoint
    from ..models.maxdeeplab import list_variants
    from ..publish import check_outputs_apart, check_replaceable

    cfg = resolve_train_config(train)
    data_path, out = Path(data_path), Path(out)
    if not data_path.exists():
        raise DataError(f"Training data folder '{data_path}' does not exist. Give the folder an export wrote.")
    if not data_path.is_dir():
        raise DataError(f"Training data '{data_path}' is a file; give the export folder (the one holding images/ and "
                        "esri_model_definition.emd).")
    if pretrained is not None and not Path(pretrained).exists():
        raise DataError(f"Pretrained model '{pretrained}' does not exist. Check the path of the model folder, .emd "
                        "or .dlpk (relative paths start from the current folder).")
    check_outputs_apart({"training data": data_path, "pretrained model": pretrained}, {"model folder (--out)": out})
    check_replaceable(out, overwrite, "model", "model folder (--out)")
    checkpoints = checkpoint_folder_of(out)
    if resume and not LastEpochCheckpoint.has_record(checkpoints):
        raise ModelError(f"There is no interrupted training of '{out}' to resume (nothing in '{checkpoints}'). "
                         "Run the same command without --resume.")
    if backbone is not None and backbone not in list_variants():
        raise ArgumentError(f"Unknown backbone '{backbone}'. Choose one of {list_variants()}.")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    data = prepare(data_path, cfg)
    log(data.background)
    model = build_model(data, backbone=backbone, pretrained=pretrained, network=network, loss=loss,
                        postprocess=postprocess)
    model.checkpoint_dir = checkpoints
    log(f"{model!r}: {data.train_ds.n_chips} training chips, {data.valid_ds.n_chips} validation chips"
        + (f"; training on {len(data.train_ds)} random {data.chip_size} px crops per epoch, predicting at "
           f"{data.chip_size} px tiles" if len(data.train_ds) > data.train_ds.n_chips else ""))
    fit_model(model, cfg, log=log, resume=resume)
    folder = Path(model.save(out.resolve(), overwrite=overwrite))  # a path, never a bare name
    shutil.rmtree(checkpoints, ignore_errors=True)  # geomax's own, of a run now complete
    log(f"Model saved to {folder}")
    state = model.state
    return TrainResult(model, folder, dict(model.metrics), model.train_config or cfg,
                       network=dict(state.network_config), loss=state.loss, postprocess=state.postprocess)
