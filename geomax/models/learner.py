"""The ``MaXDeepLab`` class users call: a facade over a fastai ``Learner`` and the model's parts.

The parts live in their own modules: the network (:mod:`geomax.models.maxdeeplab`),
the loss (:mod:`geomax.models.criterion`), post-processing
(:mod:`geomax.models.postprocess`), the fastai metric (:mod:`geomax.models.metric`)
and callbacks (:mod:`geomax.models.callbacks`), the inference object
(:mod:`geomax.models.predictor`), the model state written to and read from a
package (:mod:`geomax.models.state`, :mod:`geomax.models.package`,
:mod:`geomax.models.loading`) and result figures (:mod:`geomax.models.drawing`).
Settings come from the typed configs of :mod:`geomax.config`. This module wires
them into the arcgis.learn-style API: ``fit``, ``lr_find``, ``show_results``,
``compute_metrics``, ``save`` / ``from_model``, ``predict`` and ``predict_raster``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..config import LossConfig, NetworkConfig, PostprocessConfig, TilingConfig, TrainConfig, check_known, split_options
from ..data.classes import ClassTable
from ..errors import ArgumentError, DataError, InputMismatchError, ModelError
from ..log import get_logger
from ..panoptic import PanopticResult
from .callbacks import (
    Autocast,
    LastEpochCheckpoint,
    ResumableEarlyStopping,
    ResumableSaveModel,
    TimeBudget,
    history_rows,
    without_progress_table,
)
from .criterion import MaXDeepLabLoss
from .metric import PanopticQualityMetric, PanopticQualityPart, update_evaluator
from .postprocess import PanopticPostProcessor
from .predictor import PanopticPredictor
from .state import ModelState

log = get_logger(__name__)

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

__all__ = ["MaXDeepLab", "PanopticQualityMetric", "default_backbone"]

_DATASET_TYPE = "Panoptic_Segmentation"


def default_backbone() -> str:
    """The variant that is practical on the machine at hand."""
    return "max_deeplab_s" if torch.cuda.is_available() else "max_deeplab_cpu"


class MaXDeepLab:
    """Panoptic segmentation of imagery with MaX-DeepLab (mask transformer, PQ-style loss).

    Parameters
    ----------
    data:
        The ``DataLoaders`` returned by :func:`geomax.prepare_data` (dataset type
        ``Panoptic_Segmentation``). To load a saved model use :meth:`from_model`.
    backbone:
        Network variant, one of :attr:`supported_backbones`. Default: ``max_deeplab_s``
        on a CUDA machine, ``max_deeplab_cpu`` (small, trains on a CPU) otherwise.
    pretrained_path:
        A user checkpoint (state dict ``.pth`` or a geomax model folder / ``.emd``)
        whose weights initialise the network. Nothing is downloaded.
    network, loss, postprocess:
        A :class:`~geomax.config.NetworkConfig` or dict of network settings overriding
        the variant's, a :class:`~geomax.config.LossConfig`, a
        :class:`~geomax.config.PostprocessConfig` (``None``: defaults).
    **options:
        Single settings of those three configs by name (``num_slots=64``,
        ``pq_weight=2.0``, ``class_threshold=0.6``...). An unknown name is an error.

    Examples
    --------
    >>> data = prepare_data("exported_chips")          # doctest: +SKIP
    >>> model = MaXDeepLab(data)                        # doctest: +SKIP
    >>> model.fit(10)                                   # doctest: +SKIP
    >>> model.predict_raster("scene.tif", "out.tif", out_features="out.gpkg")  # doctest: +SKIP
    """

    def __init__(self, data=None, backbone: str | None = None, pretrained_path: str | None = None, *,
                 network: NetworkConfig | Mapping[str, Any] | None = None, loss: LossConfig | None = None,
                 postprocess: PostprocessConfig | None = None, **options):
        from .maxdeeplab import build_maxdeeplab, list_variants

        if data is None:
            raise ArgumentError("MaXDeepLab needs training data: MaXDeepLab(prepare_data(path)). "
                                "To load a saved model without data use MaXDeepLab.from_model(path).")
        self._check_data(data)
        backbone = backbone or default_backbone()
        if backbone not in list_variants():
            raise ArgumentError(f"Unknown backbone '{backbone}'. Choose one of {list_variants()}.")
        routed = split_options(options)
        base_net = network.to_dict() if isinstance(network, NetworkConfig) else dict(network or {})
        check_known(base_net, NetworkConfig.field_names(), "network")
        net_kw = _slots_for_data(backbone, data, {**base_net, **routed[NetworkConfig]})
        net = build_maxdeeplab(backbone, in_channels=len(data.band_names), num_classes=data.class_table.n_classes,
                               **net_kw)
        state = ModelState(
            network_config=dict(net.config), class_table=data.class_table, band_names=list(data.band_names),
            band_stats=data.band_stats, extract_bands=[int(b) for b in data.extract_bands],
            chip_size=int(data.chip_size), rgb_bands=data.rgb_bands,
            loss=LossConfig.build(loss, **routed[LossConfig]),
            postprocess=PostprocessConfig.build(postprocess, **routed[PostprocessConfig]))
        self._setup(net, state, data)
        if pretrained_path is not None:
            self._load_pretrained(pretrained_path)

    def _setup(self, network: torch.nn.Module, state: ModelState, data) -> None:
        self.state = state
        self._data = data
        self.loss_func = MaXDeepLabLoss(state.class_table.n_classes, config=state.loss)
        self.predictor = PanopticPredictor(network, state)
        self.last_budget: TimeBudget | None = None
        #: Checkpoint folder of :meth:`fit` (``None``: :attr:`checkpoint_folder`'s default).
        self.checkpoint_dir: Path | None = None
        self.learn = self._make_learner(network, data)

    # ------------------------------------------------------------------ set-up
    supported_backbones = property(lambda self: self._list_variants())

    @staticmethod
    def _list_variants() -> list[str]:
        from .maxdeeplab import list_variants

        return list(list_variants())

    @staticmethod
    def _check_data(data) -> None:
        dtype = getattr(data, "dataset_type", None)
        if dtype != _DATASET_TYPE:
            raise DataError(f"MaXDeepLab needs panoptic training data (dataset_type '{_DATASET_TYPE}'), "
                            f"got '{dtype}'. Export the chips with metadata format Panoptic_Segmentation "
                            "and load them with geomax.prepare_data.")

    def _make_learner(self, network, data):
        import fastai.callback.fp16  # noqa: F401  (patches Learner.to_fp16)
        import fastai.callback.schedule  # noqa: F401  (patches Learner.fit_one_cycle / lr_find)
        from fastai.data.core import DataLoaders
        from fastai.learner import Learner

        if data is None:  # a model without data still needs a Learner shell for save/load/plots
            from fastai.data.load import DataLoader
            from torch.utils.data import TensorDataset

            empty = DataLoader(TensorDataset(torch.zeros(0)), bs=1)
            dls = DataLoaders(empty, empty)
            path = Path(".")
        else:
            dls = data
            path = Path(getattr(data, "path", "."))
        pq = PanopticQualityMetric(self.postprocessor, self.class_table)
        metrics = [pq, PanopticQualityPart(pq, "things"), PanopticQualityPart(pq, "stuff")]
        learn = Learner(dls, network, loss_func=self.loss_func, opt_func=adamw, metrics=metrics,
                        splitter=_backbone_splitter, path=path, model_dir="models")
        if torch.cuda.is_available():
            learn.model.cuda()
        return learn

    def _load_pretrained(self, path) -> None:
        path = Path(path)
        if path.suffix in (".emd", ".dlpk") or path.is_dir():
            from .package import read_model_package

            _, state_dict = read_model_package(path)
        elif path.exists():
            self._pretrained_report = self.learn.model.load_pretrained(path)
            return
        else:
            raise ModelError(f"pretrained_path '{path}' does not exist. Give a .pth state dict or a geomax model folder.")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the network loads (and adapts) checkpoints from a file
            torch.save(state_dict, Path(tmp) / "weights.pth")
            self._pretrained_report = self.learn.model.load_pretrained(Path(tmp) / "weights.pth")

    # ------------------------------------------------------------ state views
    @property
    def model(self) -> torch.nn.Module:
        """The underlying PyTorch network."""
        return self.learn.model

    @property
    def data(self):
        """The training ``DataLoaders`` (``None`` for a model loaded without data)."""
        return self._data

    @property
    def class_table(self) -> ClassTable:
        return self.state.class_table

    @property
    def band_names(self) -> list[str]:
        return list(self.state.band_names)

    @property
    def band_stats(self):
        return self.state.band_stats

    @property
    def extract_bands(self) -> list[int]:
        return list(self.state.extract_bands)

    @property
    def chip_size(self) -> int:
        return int(self.state.chip_size)

    @property
    def rgb_bands(self):
        return self.state.rgb_bands

    @property
    def backbone(self) -> str:
        return self.state.backbone

    @property
    def train_config(self) -> TrainConfig | None:
        """The recipe of the last :meth:`fit` (``None`` before training)."""
        return self.state.train

    @property
    def metrics(self) -> dict:
        """The last computed validation metrics (empty before :meth:`compute_metrics`)."""
        return self.state.metrics

    @property
    def history(self) -> list[dict]:
        """Per-epoch training history of the last :meth:`fit`."""
        return self.state.history

    @property
    def postprocessor(self) -> PanopticPostProcessor:
        """The post-processor of the model's config."""
        return self.predictor.postprocessor()

    @property
    def n_bands(self) -> int:
        """Number of input bands the model takes."""
        return len(self.state.band_names)

    @property
    def tile_multiple(self) -> int:
        """Tile sides for :meth:`predict_raster` must be multiples of this."""
        return int(self.predictor.tile_multiple)

    @property
    def saved_tiling(self) -> TilingConfig:
        """Tiling settings saved with the model (the base of :meth:`predict_raster`'s tiling)."""
        return self.state.tiling

    @property
    def steps_trained(self) -> int:
        """Training batches the last :meth:`fit` ran (0 when a resumed run had nothing left to do)."""
        return len(getattr(self.learn.recorder, "losses", []))

    @property
    def checkpoint_folder(self) -> Path:
        """Where :meth:`fit` writes its checkpoints and ``fit(resume=True)`` reads them.

        :attr:`checkpoint_dir` when set (``geomax train`` sets it beside its output folder);
        otherwise ``<data>/models/checkpoints/<backbone>-<fingerprint>``: one place per model
        configuration, so trainings of other models on the same export never meet.
        """
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir).resolve()
        return (Path(self.learn.path) / "models" / "checkpoints" / f"{self.backbone}-{self.state.fingerprint}").resolve()

    @property
    def device(self) -> torch.device:
        return next(self.learn.model.parameters()).device

    @property
    def has_validation(self) -> bool:
        """Whether the model has validation chips to compute metrics on."""
        return self._data is not None and len(self._data.valid_ds) > 0

    def _require_data(self, what: str):
        if self._data is None:
            raise DataError(f"{what} needs training data: load the model with "
                            "MaXDeepLab.from_model(path, data=prepare_data(...)).")
        return self._data

    # ---------------------------------------------------------------- training
    def lr_find(self, allow_plot: bool = True, **kwargs) -> float:
        """Run fastai's learning-rate finder and return the suggested learning rate."""
        self._require_data("lr_find")
        with _quiet_plot(not allow_plot):
            suggestion = self.learn.lr_find(show_plot=allow_plot, **kwargs)
        return float(suggestion.valley)

    def fit(self, epochs: int | None = None, lr: float | slice | None = None, *, config: TrainConfig | None = None,
            resume: bool = False, cbs=None, valid_estimate: float = 0.0, warn_empty: bool = True,
            **train_options) -> None:
        """Train the model with a :class:`~geomax.config.TrainConfig` recipe.

        Parameters
        ----------
        epochs:
            Number of epochs (``None``: the config's, by default
            ``TrainConfig.DEFAULT_EPOCHS``; not with ``minutes``).
        lr:
            Peak learning rate (``None``: the config's), or a ``slice(backbone_lr,
            transformer_lr)``.
        config:
            The recipe; ``epochs``, ``lr`` and ``train_options`` override its settings.
        resume:
            Continue an interrupted run from its last saved epoch.
        cbs:
            More fastai callbacks for this run.
        valid_estimate:
            With ``minutes``: seconds one validation pass is expected to take, kept free at
            the end of the budget until the first validation has been timed.
        warn_empty:
            Warn, with the likely causes (:mod:`geomax.models.diagnose`), when the last
            epoch's validation PQ is 0, or when its PQ of the things is under
            ``diagnose.WEAK_PQ_THINGS`` (the model finds few of the objects).
        **train_options:
            Settings of :class:`~geomax.config.TrainConfig` by name: ``minutes``,
            ``lr_schedule``, ``early_stopping``, ``checkpoint``, ``monitor``, ``patience``...

        The recipe used is kept as :attr:`train_config` and saved with the model.
        """
        data = self._require_data("fit")
        lr_slice = lr if isinstance(lr, slice) else None
        cfg = TrainConfig.build(config, epochs=epochs, lr=None if lr_slice is not None else lr, **train_options)
        if cfg.monitor != "train_loss" and not len(data.valid_ds):
            raise DataError(f"monitor '{cfg.monitor}' needs validation chips; set val_split_pct > 0 in prepare_data.")
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        peak: float | slice = lr_slice if lr_slice is not None else cfg.lr
        if cfg.lr_find and lr_slice is None:
            peak = self.lr_find(allow_plot=False)
            log.info(f"learning rate from lr_find: {peak:.2e}")
            cfg = cfg.replace(lr=float(peak))
        cbs = list(cbs or [])
        self.learn.model_dir = self.checkpoint_folder  # absolute: fastai joins it to learn.path unchanged
        last = LastEpochCheckpoint(fingerprint=self.state.fingerprint, every=cfg.checkpoint_every)
        start_epoch, used = 0, 0.0
        if resume:
            start_epoch, used = last.restore(self.learn)
            if start_epoch >= cfg.n_epochs or (cfg.minutes is not None and used >= 60.0 * cfg.minutes):
                log.info(f"the interrupted run had finished ({start_epoch} epochs): nothing to resume")
                self.state.history = last.prior_history
                return
            log.info(f"resuming after epoch {start_epoch} from {self.checkpoint_folder}")
        budget = None
        if cfg.minutes is not None:
            budget = TimeBudget(60.0 * cfg.minutes, verbose=True, valid_estimate=valid_estimate, already_used=used,
                                validate_every=0.0 if cfg.early_stopping else cfg.validate_every)
            cbs.append(budget)
        if cfg.checkpoint:
            cbs.append(last)
        if cfg.keep_best:
            cbs.append(ResumableSaveModel(monitor=cfg.monitor, fname="geomax_best", with_opt=False,
                                          start_epoch=start_epoch))
        if cfg.early_stopping:
            cbs.append(ResumableEarlyStopping(monitor=cfg.monitor, patience=cfg.patience, start_epoch=start_epoch))
        self._set_precision(cfg.mixed_precision)
        self.state.train = cfg
        self.last_budget = budget
        fit = self.learn.fit_one_cycle if cfg.lr_schedule == "one_cycle" else self.learn.fit
        if budget is not None:  # the budget prints one line per epoch instead of fastai's table
            with without_progress_table(self.learn):
                fit(cfg.n_epochs, peak, cbs=cbs, start_epoch=start_epoch)
        else:
            fit(cfg.n_epochs, peak, cbs=cbs, start_epoch=start_epoch)
        self.state.history = last.prior_history + history_rows(self.learn.recorder)
        final = self.state.history[-1] if self.state.history else {}
        final_pq, final_things = final.get("panoptic_quality"), final.get("pq_things")
        if warn_empty and final_pq is not None and not final_pq > 0:
            from .diagnose import warn_if_empty

            warn_if_empty({"all": {"pq": 0.0}}, self.steps_trained, data.train.bs, data.train_ds,
                          self.state.postprocess.class_threshold, stacklevel=3)
        elif warn_empty and final_pq is not None and final_things is not None and not math.isnan(final_things):
            from .diagnose import warn_if_weak  # (NaN PQ of the things: no things to find in validation)

            warn_if_weak({"all": {"pq": final_pq}, "things": {"pq": final_things, "n": 1}}, self.steps_trained,
                         data.train.bs, data.train_ds, stacklevel=3)

    def _set_precision(self, mode: str) -> None:
        """Mixed precision of training under the rule of :mod:`geomax.models.precision`."""
        from fastai.callback.channelslast import ChannelsLast

        from .precision import autocast_dtype

        self.learn.remove_cbs([cb for cb in self.learn.cbs if isinstance(cb, (Autocast, ChannelsLast))])
        if self.device.type == "cuda" and mode != "bf16":
            self.learn.to_fp16() if mode == "auto" else self.learn.to_fp32()
            return
        if self.device.type == "cuda":
            self.learn.to_fp32()  # bfloat16 autocast needs no gradient scaler
        dtype = autocast_dtype(self.device, mode, training=True, chip_size=int(self.chip_size))
        # oneDNN's convolutions run faster on channels-last tensors, in bfloat16 and in
        # float32 alike (docs/design.md, "Training speed on a CPU")
        self.learn.add_cbs([ChannelsLast()] if dtype is None else [ChannelsLast(), Autocast(self.device.type, dtype)])

    def freeze(self) -> None:
        """Freeze the backbone (stem and convolutional stages); train the transformer and heads."""
        self.learn.freeze()

    def unfreeze(self) -> None:
        """Make every parameter trainable again."""
        self.learn.unfreeze()

    def plot_losses(self, show: bool = True):
        """Plot the training loss per batch, training and validation loss per epoch, and validation PQ.

        Epochs a time budget did not validate (``TrainConfig.validate_every``) have no
        validation point.
        """
        import matplotlib.pyplot as plt

        from ..report import plot_losses

        rec = self.learn.recorder
        batch_losses = [float(v) for v in getattr(rec, "losses", [])]
        ends = list(getattr(rec, "iters", []))
        fig = plot_losses(self.history, batch_losses, ends if len(ends) == len(self.history) else None)
        if show:
            plt.show()
        return fig

    # -------------------------------------------------------------- inference
    def predict_tiles(self, tiles, valid=None, windows=None, **thresholds) -> list[PanopticResult]:
        """Panoptic results for a batch of raw raster tiles (see :meth:`PanopticPredictor.predict_tiles`)."""
        return self.predictor.predict_tiles(tiles, valid, windows, **thresholds)

    def predict(self, image, visualize: bool = False, *, bands: Sequence[int] | None = None,
                **thresholds) -> PanopticResult:
        """Panoptic segmentation of one image.

        The image is checked against the training data first (see
        :func:`geomax.data.image_io.read_image`): a band count other than the model's, or
        band descriptions naming the model's bands in another order, raise; values whose
        range or data type differ from the training data's, or bands whose statistics
        match the training bands better in another order, warn. A pixel that is NaN or
        no data in any band is void.

        Parameters
        ----------
        image:
            A local path or any name GDAL opens (an ``https://`` or ``s3://`` URL, ``/vsizip/...``),
            or an array (bands, H, W) (or (H, W, bands)) of raw pixel values, any size.
        visualize:
            Also draw the image with the result.
        bands:
            1-based bands of a file to read, in the model's band order (default: all bands,
            or the model's ``extract_bands`` from a file with another band count).
        **thresholds:
            Settings of :class:`~geomax.config.PostprocessConfig` for this call
            (``class_threshold``, ``split_disconnected_things``...).

        Returns
        -------
        PanopticResult
            class map (class Values), instance map, segment map, confidence, segment table.
        """
        array, valid = self.predictor.read_image(image, bands)
        result = self.predictor.predict_tiles(array[None], valid[None], **thresholds)[0]
        if visualize:
            from ..viz import image_to_rgb

            result.show(image_to_rgb(array, self.band_stats, self.rgb_bands), class_table=self.class_table)
        return result

    def tiling(self, **overrides) -> TilingConfig:
        """The resolved :class:`~geomax.config.TilingConfig` :meth:`predict_raster` uses (overrides applied)."""
        return TilingConfig.build(self.state.tiling, **overrides).resolve(self.chip_size, self.tile_multiple)

    @property
    def default_tile_size(self) -> int:
        """Tile size :meth:`predict_raster` uses by default (see :class:`~geomax.config.TilingConfig`)."""
        return int(self.tiling().tile_size)  # type: ignore[arg-type]

    def default_overlap(self, tile_size: int) -> int:
        """Overlap :meth:`predict_raster` uses by default for tiles of ``tile_size``."""
        return int(self.tiling(tile_size=tile_size).overlap)  # type: ignore[arg-type]

    def predict_raster(self, in_raster, out_raster, out_features=None, tile_size: int | None = None,
                       overlap: int | None = None, batch_size: int | None = None, **kwargs):
        """Tile a large raster, predict each tile and write a seamless panoptic GeoTIFF (+ features).

        See :func:`geomax.workflows.predict.predict_raster` for every argument; tiling
        defaults come from the model's :class:`~geomax.config.TilingConfig` (tiles of the
        training chip size, overlap a quarter of the tile).
        """
        from ..workflows.predict import predict_raster

        return predict_raster(self.predictor, in_raster, out_raster, out_features=out_features,
                              tile_size=tile_size, overlap=overlap,
                              batch_size=batch_size, **kwargs)

    # --------------------------------------------------------------- metrics
    def compute_metrics(self, dl=None, **thresholds) -> dict:
        """Panoptic quality (PQ, SQ, RQ for all / things / stuff and per class) and thing mask AP.

        Runs the real evaluator (panopticapi's definition) on the validation chips
        (or on ``dl``), not a proxy.
        """
        from ..metrics import MaskAPEvaluator, PanopticEvaluator

        data = self._require_data("compute_metrics")
        dl = dl if dl is not None else data.valid
        if not len(dl.dataset):
            raise DataError("No validation chips to compute metrics on; set val_split_pct > 0 in prepare_data.")
        post = self.predictor.postprocessor(**thresholds)
        pq = PanopticEvaluator(self.class_table)
        ap = MaskAPEvaluator(self.class_table)
        for xb, yb in dl:
            update_evaluator(pq, post, self.predictor.forward(xb), yb, self.class_table, ap_evaluator=ap)
        metrics = pq.compute()
        metrics["mask_ap"] = ap.compute()
        self.state.metrics = metrics
        return metrics

    def panoptic_quality(self, **thresholds) -> float:
        """Overall panoptic quality (PQ, all classes) on the validation chips."""
        return float(self.compute_metrics(**thresholds)["all"]["pq"])

    # ---------------------------------------------------------- visualisation
    def show_results(self, rows: int = 5, thresh: float | None = None, save_path=None, **thresholds):
        """Validation chips side by side: image, ground truth and prediction.

        Stuff is tinted by class colour, each thing instance outlined in its own
        colour, with a class legend. ``thresh`` is the class-confidence threshold.
        """
        from ..common import GT_VALID
        from ..data.prepare import panoptic_from_target
        from ..viz import denormalize, image_to_rgb
        from .drawing import results_figure

        data = self._require_data("show_results")
        dl = data.valid if len(data.valid_ds) else data.train
        if thresh is not None:
            thresholds["class_threshold"] = thresh
        post = self.predictor.postprocessor(**thresholds)
        images: list[Any] = []
        gts: list[Any] = []
        preds: list[Any] = []
        for xb, yb in dl:
            valid = yb[GT_VALID]
            results = post(self.predictor.forward(xb), out_size=tuple(valid.shape[-2:]), valid=valid.to(self.device))
            for i, result in enumerate(results[: rows - len(images)]):
                images.append(image_to_rgb(denormalize(xb[i].cpu().numpy(), self.band_stats),
                                           self.band_stats, self.rgb_bands))
                gts.append(panoptic_from_target(yb, i, self.class_table))
                preds.append(result)
            if len(images) >= rows:
                break
        fig = results_figure(images, gts, preds, self.class_table)
        if save_path is not None:
            fig.savefig(save_path, dpi=80, bbox_inches="tight")
        return fig

    # ------------------------------------------------------------ save / load
    def save(self, name_or_path: str | Path, overwrite: bool = False, compute_metrics: bool = True) -> Path:
        """Save a model folder: ``<name>.pth``, ``<name>.emd``, ``model_metrics.html`` and ``<name>.dlpk``.

        A bare name goes to ``<data path>/models/<name>/``; a path is used as the folder.
        ``overwrite=True`` replaces an earlier geomax model folder there, never anything
        else (see :mod:`geomax.publish`). Returns the folder.
        """
        from ..publish import check_replaceable
        from .package import write_model_package

        name_or_path = Path(name_or_path)
        if name_or_path.name in ("", ".", ".."):
            raise ArgumentError(f"save('{name_or_path}'): give the model a name or a folder path of its own, e.g. "
                                "save('buildings_model').")
        if name_or_path.is_absolute() or len(name_or_path.parts) > 1:
            folder = name_or_path
        else:
            folder = Path(self.learn.path) / "models" / name_or_path
        check_replaceable(folder, overwrite, "model", "model folder")  # before the metrics: fail fast
        if compute_metrics and self.has_validation and not self.state.metrics:
            try:
                self.compute_metrics()
            except Exception as exc:  # metrics are a bonus in the package; never lose the weights for them
                warnings.warn(f"metrics not computed for the model package: {exc}")
        return write_model_package(self, folder, overwrite=overwrite)

    def load(self, name_or_path: str | Path) -> "MaXDeepLab":
        """Load weights saved by :meth:`save` (folder, ``.emd``, ``.dlpk`` or bare name) into this model."""
        from .loading import load_model_state

        path = Path(name_or_path)
        if not path.exists():
            path = Path(self.learn.path) / "models" / name_or_path
        state, state_dict = load_model_state(path)
        if state.network_config != dict(self.learn.model.config):
            raise ModelError(f"'{path}' holds a different network ({state.network_config}); "
                             "use MaXDeepLab.from_model for it.")
        self.learn.model.load_state_dict(state_dict)
        return self

    @classmethod
    def from_model(cls, emd_path: str | Path, data=None, **options) -> "MaXDeepLab":
        """Rebuild a saved model, ready to predict, from its ``.emd``, ``.dlpk`` or folder.

        Parameters
        ----------
        emd_path:
            The model definition (``.emd``), the deep learning package (``.dlpk``) or the folder.
        data:
            Optional ``DataLoaders`` from :func:`geomax.prepare_data` to keep training or
            to compute metrics; its classes and bands must match the model's.
        **options:
            Post-processing or loss settings overriding the saved ones
            (``class_threshold=0.6``...). Network settings are fixed by the saved weights
            and are refused; an unknown name is an error.
        """
        from .loading import build_network, load_model_state

        fixed = sorted(set(options) & set(NetworkConfig.field_names()))
        if fixed:
            raise ArgumentError(f"{fixed} are network settings fixed when the model was trained; a saved model "
                                "cannot change them. Train a new model with them instead.")
        routed = split_options(options, (PostprocessConfig, LossConfig))
        state, state_dict = load_model_state(emd_path)
        state = state.with_options(postprocess=state.postprocess.replace(**routed[PostprocessConfig]),
                                   loss=state.loss.replace(**routed[LossConfig]))
        if data is not None:
            cls._check_data(data)
            if data.n_bands != state.n_bands:
                raise InputMismatchError(f"The model takes {state.n_bands} bands {state.band_names}, "
                                         f"the data has {data.n_bands} {list(data.band_names)}. Prepare the data "
                                         "with the model's bands: pass prepare_data(..., bands=...).")
            if data.class_table.values != state.class_table.values:
                raise DataError(f"The data's classes {data.class_table.names} differ from the model's "
                                f"{state.class_table.names}. Export the training data with the model's classes "
                                "and Values, or train a new model on this data.")
        network = build_network(state, state_dict)
        model = cls.__new__(cls)
        model._setup(network, state, data)
        return model

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.learn.model.parameters())
        return (f"MaXDeepLab(backbone={self.backbone!r}, classes={self.class_table.names}, "
                f"bands={self.band_names}, parameters={n / 1e6:.1f}M)")


# ----------------------------------------------------------------- helpers
def _slots_for_data(backbone: str, data, net_kw: dict) -> dict:
    """Give the network at least as many memory slots as the data has segments in a chip.

    A slot predicts one segment; with fewer slots than segments the matcher must drop
    ground truth. Unless ``num_slots`` is given, it grows to ``data.n_masks``
    (rounded up to a multiple of 8).
    """
    from .maxdeeplab import VARIANTS

    n_masks = int(getattr(data, "n_masks", 0) or 0)
    if "num_slots" in net_kw:
        if net_kw["num_slots"] < n_masks:
            warnings.warn(f"num_slots={net_kw['num_slots']} is below the {n_masks} segments a chip can hold; "
                          "the smallest segments of crowded chips will not be learned.")
        return net_kw
    if n_masks > VARIANTS[backbone].num_slots:
        net_kw = {**net_kw, "num_slots": -(-n_masks // 8) * 8}
    return net_kw


def adamw(params, lr: float, **kwargs):
    """The optimiser: PyTorch's ``AdamW`` with its fused update, behind fastai's wrapper.

    The same hyper-parameters as fastai's default ``Adam`` (betas 0.9 / 0.99, eps 1e-5,
    decoupled weight decay 0.01). fastai's ``Adam`` loops over the parameters in Python;
    ``AdamW``'s multi-tensor (``foreach``) update does them in a few kernels, and its fused
    update (one kernel per tensor, CPU and CUDA) is cheaper again: on the CPU network
    (3.4 M parameters in 453 tensors) 23, 21 and 6 ms a step in one run of
    ``bench_train_speed.py --parts ab`` (``docs/design.md``). A build of torch or a device
    without the fused update falls back to ``foreach``.
    """
    from fastai.optimizer import OptimWrapper

    options = dict(betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    options.update(kwargs)
    if "fused" not in options and "foreach" not in options:
        params = list(params)
        try:
            return OptimWrapper(params, opt=torch.optim.AdamW, lr=lr, fused=True, **options)
        except (RuntimeError, ValueError, TypeError):  # no fused kernel for these tensors on this build
            options["foreach"] = True
    return OptimWrapper(params, opt=torch.optim.AdamW, lr=lr, **options)


def _backbone_splitter(model) -> list:
    """Two parameter groups: backbone (stem + convolutional stages) and the rest (transformer, decoder, heads)."""
    return [list(g) for g in model.param_groups()]


class _quiet_plot:
    """Context manager that keeps matplotlib from drawing (lr_find without a plot)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.quiet:
            import matplotlib.pyplot as plt

            plt.close("all")
        return False
