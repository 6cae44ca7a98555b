"""Train: an export folder -> a saved model, with one recipe (:class:`~geomax.config.TrainConfig`) for every entry point."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import LossConfig, NetworkConfig, PostprocessConfig, TrainConfig
from ..errors import DataError, OutputExistsError

__all__ = ["resolve_train_config", "prepare", "build_model", "fit_model", "train", "TrainResult"]


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

    return MaXDeepLab(data, backbone=backbone, pretrained_path=pretrained, network=network, loss=loss,
                      postprocess=postprocess)


def fit_model(model, train: TrainConfig, *, valid_estimate: float = 0.0,
              log: Callable[[str], Any] = print) -> None:
    """Train ``model`` with the recipe and log the validation PQ."""
    model.fit(config=train, valid_estimate=valid_estimate)
    metrics = model.metrics
    if "all" in metrics:
        log(f"validation PQ {100 * metrics['all']['pq']:.1f} (things {100 * metrics['things']['pq']:.1f}, "
            f"stuff {100 * metrics['stuff']['pq']:.1f})")


@dataclass
class TrainResult:
    """What :func:`train` made: the model, its folder, validation metrics and the recipe."""

    model: Any
    folder: Path
    metrics: dict
    train: TrainConfig


def train(data_path: str | os.PathLike, out: str | os.PathLike, *, train: TrainConfig | None = None,
          backbone: str | None = None, pretrained: str | os.PathLike | None = None,
          network: NetworkConfig | dict | None = None, loss: LossConfig | None = None,
          postprocess: PostprocessConfig | None = None, overwrite: bool = False,
          log: Callable[[str], Any] = print) -> TrainResult:
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
        Replace the contents of a non-empty model folder.
    log:
        Where progress lines go.

    Raises
    ------
    DataError
        The export folder does not exist.
    OutputExistsError
        ``out`` is not empty and ``overwrite`` is False (checked before any work).
    """
    import torch

    from .outputs import check_output_folder

    cfg = resolve_train_config(train)
    data_path, out = Path(data_path), Path(out)
    if not data_path.exists():
        raise DataError(f"Training data folder '{data_path}' does not exist.")
    if out.exists() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"Model folder '{out}' exists and is not empty; pass overwrite (--overwrite) "
                                "or choose another.")
    if pretrained is not None and not Path(pretrained).exists():
        raise DataError(f"Pretrained model '{pretrained}' does not exist.")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    data = prepare(data_path, cfg)
    model = build_model(data, backbone=backbone, pretrained=pretrained, network=network, loss=loss,
                        postprocess=postprocess)
    log(f"{model!r}: {len(data.train_ds)} training chips, {len(data.valid_ds)} validation chips")
    fit_model(model, cfg, log=log)
    folder = model.save(check_output_folder(out, overwrite=overwrite).resolve())  # a path, never a bare name
    log(f"model saved to {folder}")
    return TrainResult(model, Path(folder), dict(model.metrics), cfg)
