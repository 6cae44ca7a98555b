"""The ``MaXDeepLab`` class users call: a fastai ``Learner`` around the mask transformer.

The network (:mod:`geomax.models.maxdeeplab`), the matcher and loss
(:mod:`geomax.models.matcher`, :mod:`geomax.models.criterion`), the panoptic
post-processor (:mod:`geomax.models.postprocess`) and the evaluator
(:mod:`geomax.metrics`) are separate objects; this module wires them into a
fastai ``Learner`` and adds the arcgis.learn-style conveniences: ``fit``,
``lr_find``, ``show_results``, ``compute_metrics``, ``save`` / ``from_model``,
``predict`` and ``predict_raster``.
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..common import GT_VALID
from ..data.classes import ClassTable
from ..errors import ArgumentError, DataError, InputMismatchError, ModelError
from ..panoptic import PanopticResult
from .postprocess import PanopticPostProcessor

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

__all__ = ["MaXDeepLab", "PanopticQualityMetric"]

_DATASET_TYPE = "Panoptic_Segmentation"


def _default_backbone() -> str:
    """The variant that is practical on the machine at hand."""
    return "max_deeplab_s" if torch.cuda.is_available() else "max_deeplab_cpu"


def _split_kwargs(kwargs: dict, *targets) -> list[dict]:
    """Route keyword arguments to the callables whose signatures name them; the rest go last."""
    routed = [dict() for _ in targets] + [dict()]
    for key, value in kwargs.items():
        for i, target in enumerate(targets):
            if key in inspect.signature(target).parameters:
                routed[i][key] = value
                break
        else:
            routed[-1][key] = value
    return routed


class PanopticQualityMetric:
    """fastai metric: panoptic quality of the validation set, from the real evaluator.

    Built as a fastai ``Metric`` (accumulated over every validation batch,
    read once at the end). Its ``evaluator`` keeps the full result (all /
    things / stuff / per class) after a validation pass.
    """

    def __new__(cls, *args, **kwargs):
        # Subclass fastai's Metric lazily, so importing this module stays light.
        from fastai.learner import Metric

        class _PQ(Metric):
            def __init__(self, postprocessor: PanopticPostProcessor, class_table: ClassTable, key: str = "all"):
                self.postprocessor, self.class_table, self.key = postprocessor, class_table, key
                self.reset()

            def reset(self):
                from ..metrics import PanopticEvaluator

                self.evaluator = PanopticEvaluator(self.class_table)

            def accumulate(self, learn):
                pred = {k: v.detach().float() for k, v in learn.pred.items()}
                update_evaluator(self.evaluator, self.postprocessor, pred, learn.yb[0], self.class_table)

            @property
            def value(self):
                return float(self.evaluator.compute()[self.key]["pq"])

            @property
            def name(self):
                return "panoptic_quality" if self.key == "all" else f"pq_{self.key}"

        return _PQ(*args, **kwargs)


def update_evaluator(evaluator, postprocessor, pred: dict, target: dict, class_table: ClassTable,
                     ap_evaluator=None) -> list:
    """Post-process one batch of raw outputs and add it, with its ground truth, to ``evaluator``
    (and to ``ap_evaluator``, a :class:`~geomax.metrics.MaskAPEvaluator`, when given)."""
    from ..data.prepare import panoptic_from_target

    valid = target[GT_VALID]
    results = postprocessor(pred, out_size=tuple(valid.shape[-2:]), valid=valid)
    for i, result in enumerate(results):
        gt_class, gt_instance = panoptic_from_target(target, i, class_table)
        evaluator.update(result.class_map, result.instance_map, gt_class, gt_instance)
        if ap_evaluator is not None:
            ap_evaluator.update(result, gt_class, gt_instance)
    return results


#: Loss options of models built by :class:`MaXDeepLab` where they differ from the loss
#: class's own (deeplab2's) defaults; both serve objects a few pixels across.
#:
#: ``loss_resolution="input"``: mask logits are resized to the chip before the
#: PQ-style and mask-ID terms, so small masks are learned as inference draws them.
#: ``benchmarks/bench_overfit.py`` (4 chips of 64 px, ``max_deeplab_tiny``, 500
#: epochs, PQ on the chips): stride 4 + "output" 0.75, stride 4 + "input" 0.86,
#: stride 2 + "input" 0.91.
#:
#: ``mask_id_balance="segment"``: the mask-ID cross-entropy weighs every object
#: alike instead of every pixel; with pixel weighting a 4x8 px vehicle is 0.2% of a
#: 128 px chip's term and vehicles were never learned within a CPU budget
#: (``max_deeplab_cpu``, 5 minutes, lr 3e-3, held-out scene of bench_quality:
#: vehicle TP 0 of 248 with "pixel", 20 with "segment"; matched vehicle slots'
#: median class probability 0.02 vs 0.63).
DEFAULT_LOSS_OPTIONS = {"loss_resolution": "input", "mask_id_balance": "segment"}


class MaXDeepLab:
    """Panoptic segmentation of imagery with MaX-DeepLab (mask transformer, PQ-style loss).

    Parameters
    ----------
    data:
        The ``DataLoaders`` returned by :func:`geomax.prepare_data` (dataset type
        ``Panoptic_Segmentation``). ``None`` only through :meth:`from_model`.
    backbone:
        Network variant, one of :attr:`supported_backbones`. Default: ``max_deeplab_s``
        on a CUDA machine, ``max_deeplab_cpu`` (small, trains on a CPU) otherwise.
    pretrained_path:
        A user checkpoint (state dict ``.pth`` or a geomax model folder / ``.emd``)
        whose weights initialise the network. Nothing is downloaded.
    **kwargs:
        Routed by name: to the loss (e.g. ``pq_weight``, ``alpha``,
        ``loss_resolution``, ``mask_id_balance``: defaults here in
        :data:`DEFAULT_LOSS_OPTIONS`), to the
        post-processor (``class_threshold``, ``mask_threshold``, ``min_thing_area``,
        ``min_stuff_area``, ``split_disconnected_things``) and the rest to the
        network (e.g. ``num_slots``, ``output_stride`` or other overrides of the
        variant's settings).

    Examples
    --------
    >>> data = prepare_data("exported_chips")          # doctest: +SKIP
    >>> model = MaXDeepLab(data)                        # doctest: +SKIP
    >>> model.fit(10)                                   # doctest: +SKIP
    >>> model.predict_raster("scene.tif", "out.tif", out_features="out.gpkg")  # doctest: +SKIP
    """

    def __init__(self, data=None, backbone: str | None = None, pretrained_path: str | None = None, **kwargs):
        from .maxdeeplab import build_maxdeeplab, list_variants

        if data is None and not kwargs.get("_from_model"):
            raise ArgumentError("MaXDeepLab needs training data: MaXDeepLab(prepare_data(path)). "
                                "To load a saved model without data use MaXDeepLab.from_model(path).")
        state = kwargs.pop("_from_model", None)
        if data is not None:
            self._check_data(data)
        backbone = backbone or (state["network_config"].get("variant") if state else None) or _default_backbone()
        if backbone not in list_variants():
            raise ArgumentError(f"Unknown backbone '{backbone}'. Choose one of {list_variants()}.")
        from .criterion import MaXDeepLabLoss

        loss_kw, post_kw, net_kw = _split_kwargs(kwargs, MaXDeepLabLoss.__init__, PanopticPostProcessor.__init__)
        loss_kw = {**DEFAULT_LOSS_OPTIONS, **loss_kw}
        self._data = data
        if state is not None:
            from .maxdeeplab import build_from_config

            self.class_table: ClassTable = state["class_table"]
            self.band_stats = state["band_stats"]
            self.band_names = list(state["band_names"])
            self.extract_bands = list(state["extract_bands"])
            self.chip_size = int(state["chip_size"])
            self.rgb_bands = state.get("rgb_bands")
            network = build_from_config(state["network_config"])
            loss_kw = {**state.get("loss_config", {}), **loss_kw}
            post_kw = {**state.get("postprocess_config", {}), **post_kw}
        else:
            self.class_table = data.class_table
            self.band_stats = data.band_stats
            self.band_names = list(data.band_names)
            self.extract_bands = [int(b) for b in getattr(data, "extract_bands", range(data.n_bands))]
            self.chip_size = int(data.chip_size)
            self.rgb_bands = getattr(data, "rgb_bands", None)
            net_kw = _slots_for_data(backbone, data, net_kw)
            network = build_maxdeeplab(backbone, in_channels=len(self.band_names),
                                       num_classes=self.class_table.n_classes, **net_kw)
        self.backbone = backbone
        self._loss_config = loss_kw
        self._postprocess_config = post_kw
        self.loss_func = MaXDeepLabLoss(self.class_table.n_classes, **loss_kw)
        self.postprocessor = PanopticPostProcessor(self.class_table, **post_kw)
        self._metrics: dict = {}
        self._history: list[dict] = []
        self.learn = self._make_learner(network, data)
        if pretrained_path is not None:
            self._load_pretrained(pretrained_path)

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

        if data is None:  # a model without data still needs a Learner shell for save/load/predict
            from torch.utils.data import TensorDataset

            from fastai.data.load import DataLoader

            empty = DataLoader(TensorDataset(torch.zeros(0)), bs=1)
            dls = DataLoaders(empty, empty)
            path = Path(".")
        else:
            dls = data
            path = Path(getattr(data, "path", "."))
        metrics = [PanopticQualityMetric(self.postprocessor, self.class_table)]
        learn = Learner(dls, network, loss_func=self.loss_func, metrics=metrics, splitter=_backbone_splitter,
                        path=path, model_dir="models")
        if torch.cuda.is_available():
            learn.model.cuda()
        return learn

    def _load_pretrained(self, path) -> None:
        path = Path(path)
        if path.suffix in (".emd", ".dlpk") or path.is_dir():
            _, state_dict = _read_model_package(path)
        elif path.exists():
            self._pretrained_report = self.learn.model.load_pretrained(path)
            return
        else:
            raise ModelError(f"pretrained_path '{path}' does not exist. Give a .pth state dict or a geomax model folder.")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the network loads (and adapts) checkpoints from a file
            torch.save(state_dict, Path(tmp) / "weights.pth")
            self._pretrained_report = self.learn.model.load_pretrained(Path(tmp) / "weights.pth")

    @property
    def model(self) -> torch.nn.Module:
        """The underlying PyTorch network."""
        return self.learn.model

    @property
    def n_bands(self) -> int:
        """Number of input bands the model takes."""
        return len(self.band_names)

    @property
    def tile_multiple(self) -> int:
        """Tile sides for :meth:`predict_raster` must be multiples of this."""
        from .maxdeeplab import INPUT_MULTIPLE

        return int(INPUT_MULTIPLE)

    @property
    def device(self) -> torch.device:
        return next(self.learn.model.parameters()).device

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

    def fit(self, epochs: int = 10, lr: float | slice | None = None, one_cycle: bool = True,
            early_stopping: bool = False, checkpoint: bool = True, monitor: str = "valid_loss",
            resume: bool = False, patience: int = 3, **kwargs) -> None:
        """Train the model.

        Parameters
        ----------
        epochs:
            Number of epochs.
        lr:
            Learning rate (a float, or a ``slice(backbone_lr, transformer_lr)``).
            ``None`` runs :meth:`lr_find` first and uses its suggestion.
        one_cycle:
            Use the one-cycle schedule (``fit_one_cycle``); otherwise a constant rate.
        early_stopping:
            Stop when ``monitor`` has not improved for ``patience`` epochs.
        checkpoint:
            Keep the best model by ``monitor`` and reload it when training ends; also
            save the last epoch so an interrupted run can be resumed (``resume=True``).
        monitor:
            ``"valid_loss"`` or ``"panoptic_quality"``.
        resume:
            Continue an interrupted run from its last saved epoch.
        **kwargs:
            Passed to fastai's ``fit_one_cycle`` / ``fit``.
        """
        from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback

        self._require_data("fit")
        if epochs < 1:
            raise ArgumentError(f"epochs must be >= 1, got {epochs}.")
        if monitor not in ("valid_loss", "train_loss", "panoptic_quality"):
            raise ArgumentError(f"monitor must be 'valid_loss' or 'panoptic_quality', got '{monitor}'.")
        if monitor != "train_loss" and not len(self._data.valid_ds):
            raise DataError(f"monitor '{monitor}' needs validation chips; set val_split_pct > 0 in prepare_data.")
        if lr is None:
            lr = self.lr_find(allow_plot=False)
            print(f"learning rate from lr_find: {lr:.2e}")
        cbs = list(kwargs.pop("cbs", []))
        start_epoch = 0
        resume_cb = _LastEpochCheckpoint("geomax_last")
        if resume:
            start_epoch = resume_cb.restore(self.learn)
            if start_epoch >= epochs:
                print(f"already trained {start_epoch} of {epochs} epochs: nothing to resume")
                return
        if checkpoint:
            cbs += [_skipping(SaveModelCallback, start_epoch)(monitor=monitor, fname="geomax_best", with_opt=False),
                    resume_cb]
        if early_stopping:
            cbs.append(_skipping(EarlyStoppingCallback, start_epoch)(monitor=monitor, patience=patience))
        if torch.cuda.is_available():
            self.learn.to_fp16()
        if one_cycle:
            self.learn.fit_one_cycle(epochs, lr, cbs=cbs, start_epoch=start_epoch, **kwargs)
        else:
            self.learn.fit(epochs, lr, cbs=cbs, start_epoch=start_epoch, **kwargs)
        self._record_history()

    def _record_history(self) -> None:
        rec = self.learn.recorder
        names = list(rec.metric_names[1:-1])
        self._history = [dict(zip(names, [float(v) if v is not None else None for v in vals]))
                         for vals in rec.values]

    def freeze(self) -> None:
        """Freeze the backbone (stem and convolutional stages); train the transformer and heads."""
        self.learn.freeze()

    def unfreeze(self) -> None:
        """Make every parameter trainable again."""
        self.learn.unfreeze()

    def plot_losses(self, show: bool = True):
        """Plot training and validation loss (fastai's recorder)."""
        self.learn.recorder.plot_loss(show_epochs=True)
        import matplotlib.pyplot as plt

        fig = plt.gcf()
        if show:
            plt.show()
        return fig

    # -------------------------------------------------------------- inference
    def _normalize_batch(self, tiles: np.ndarray, valid: np.ndarray | None) -> torch.Tensor:
        from ..data.normalize import normalize

        return torch.from_numpy(normalize(tiles, self.band_stats, valid))

    @torch.no_grad()
    def _forward(self, image: torch.Tensor) -> dict:
        """Network forward on normalised images of any size (padded to the required multiple)."""
        from .maxdeeplab import pad_to_multiple

        net = self.learn.model
        was_training = net.training
        net.eval()
        try:
            padded, _ = pad_to_multiple(image.to(self.device), self.tile_multiple)
            use_amp = self.device.type == "cuda"
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = net(padded)
            return {k: v.float() for k, v in out.items()}
        finally:
            net.train(was_training)

    def predict_tiles(self, tiles: np.ndarray, valid: np.ndarray | None = None, **thresholds) -> list[PanopticResult]:
        """Panoptic results for a batch of raw raster tiles (the per-tile predictor interface).

        Parameters
        ----------
        tiles:
            (B, bands, h, w) raw pixel values, bands in the model's band order.
        valid:
            (B, h, w) bool, False on no-data pixels (they come out as void, class 0).
        **thresholds:
            Overrides of the post-processor settings for this call.
        """
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[1] != self.n_bands:
            raise InputMismatchError(f"Expected tiles of shape (B, {self.n_bands}, h, w), got {tiles.shape}.")
        h, w = tiles.shape[-2:]
        image = self._normalize_batch(tiles, valid)
        pred = self._forward(image)
        post = self._postprocessor(**thresholds)
        # Results at the padded size, cropped back to the input.
        valid_t = None if valid is None else torch.from_numpy(np.asarray(valid, dtype=bool))
        ph, pw = (n + (-n) % self.tile_multiple for n in (h, w))
        results = post(pred, out_size=(ph, pw), valid=_pad_valid(valid_t, ph, pw, len(tiles), h, w))
        return [_crop_result(r, h, w) for r in results]

    def _postprocessor(self, **thresholds) -> PanopticPostProcessor:
        if not thresholds:
            return self.postprocessor
        unknown = set(thresholds) - set(inspect.signature(PanopticPostProcessor.__init__).parameters)
        if unknown:
            raise ArgumentError(f"Unknown post-processing arguments {sorted(unknown)}; use class_threshold, "
                                "mask_threshold, min_thing_area, min_stuff_area, split_disconnected_things.")
        return PanopticPostProcessor(self.class_table, **{**self._postprocess_config, **thresholds})

    def predict(self, image, visualize: bool = False, **thresholds) -> PanopticResult:
        """Panoptic segmentation of one image.

        Parameters
        ----------
        image:
            A path to a (georeferenced) image readable by rasterio, or an array
            (bands, H, W) (or (H, W, bands)) of raw pixel values, any size.
        visualize:
            Also draw the image with the result.
        **thresholds:
            ``class_threshold``, ``mask_threshold``, ``min_thing_area``, ``min_stuff_area``,
            ``split_disconnected_things`` (False: one instance per mask slot).

        Returns
        -------
        PanopticResult
            class map (class Values), instance map, segment map, confidence, segment table.
        """
        array, valid = self._read_image(image)
        result = self.predict_tiles(array[None], valid[None], **thresholds)[0]
        if visualize:
            from ..viz import image_to_rgb

            result.show(image_to_rgb(array, self.band_stats, self.rgb_bands), class_table=self.class_table)
        return result

    def _read_image(self, image) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(image, (str, Path)):
            import rasterio

            path = Path(image)
            if not path.exists():
                raise DataError(f"Image '{path}' does not exist.")
            try:
                with rasterio.open(path) as src:
                    array = src.read()
                    valid = src.dataset_mask() > 0
            except rasterio.errors.RasterioIOError as exc:
                raise DataError(f"Cannot read image '{path}' ({exc}). Is it a valid raster?") from exc
            if array.shape[0] != self.n_bands and array.shape[0] > max(self.extract_bands):
                array = array[self.extract_bands]  # a full-band image: take the bands the model was trained on
        else:
            array = np.asarray(image)
            if array.ndim == 2 and self.n_bands == 1:
                array = array[None]
            if array.ndim == 3 and array.shape[0] != self.n_bands and array.shape[-1] == self.n_bands:
                array = np.moveaxis(array, -1, 0)
            valid = np.ones(array.shape[-2:], dtype=bool)
        if array.ndim != 3 or array.shape[0] != self.n_bands:
            raise InputMismatchError(f"The model takes {self.n_bands} bands {self.band_names}; the image has shape "
                                     f"{array.shape}. Give an image with the same bands as the training data.")
        return array, valid

    @property
    def default_tile_size(self) -> int:
        """Tile size :meth:`predict_raster` uses by default: the training chip size (multiple of 16).

        The network runs at any size, but its ``num_slots`` memory slots bound the number
        of segments it can return per tile; the slots were sized to the segments of a
        training chip, so a tile of the same area keeps every object representable.
        """
        m = self.tile_multiple
        return max(m, int(round(self.chip_size / m)) * m)

    def default_overlap(self, tile_size: int) -> int:
        """Overlap :meth:`predict_raster` uses by default: a quarter of the tile, an even number of pixels."""
        return max(2, (tile_size // 4) // 2 * 2)

    def predict_raster(self, in_raster, out_raster, out_features=None, tile_size: int | None = None,
                       overlap: int | None = None, batch_size: int = 4, **kwargs):
        """Tile a large raster, predict each tile and write a seamless panoptic GeoTIFF (+ features).

        See :func:`geomax.inference.predict_raster.predict_raster` for every argument.
        ``tile_size`` defaults to :attr:`default_tile_size` (the training chip size),
        ``overlap`` to a quarter of the tile.
        """
        from ..inference.predict_raster import predict_raster

        tile_size = tile_size or self.default_tile_size
        overlap = self.default_overlap(tile_size) if overlap is None else overlap
        return predict_raster(self, in_raster, out_raster, out_features=out_features, tile_size=tile_size,
                              overlap=overlap, batch_size=batch_size, **kwargs)

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
        post = self._postprocessor(**thresholds)
        pq = PanopticEvaluator(self.class_table)
        ap = MaskAPEvaluator(self.class_table)
        for xb, yb in dl:
            update_evaluator(pq, post, self._forward(xb), yb, self.class_table, ap_evaluator=ap)
        metrics = pq.compute()
        metrics["mask_ap"] = ap.compute()
        self._metrics = metrics
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
        import matplotlib.pyplot as plt

        from ..data.prepare import panoptic_from_target
        from ..viz import add_legend, denormalize, image_to_rgb, show_panoptic

        data = self._require_data("show_results")
        dl = data.valid if len(data.valid_ds) else data.train
        if thresh is not None:
            thresholds["class_threshold"] = thresh
        post = self._postprocessor(**thresholds)
        images, gts, preds = [], [], []
        for xb, yb in dl:
            pred = self._forward(xb)
            valid = yb[GT_VALID]
            results = post(pred, out_size=tuple(valid.shape[-2:]), valid=valid.to(self.device))
            for i, result in enumerate(results):
                images.append(image_to_rgb(denormalize(xb[i].cpu().numpy(), self.band_stats),
                                           self.band_stats, self.rgb_bands))
                gts.append(panoptic_from_target(yb, i, self.class_table))
                preds.append(result)
                if len(images) >= rows:
                    break
            if len(images) >= rows:
                break
        n = len(images)
        fig, axes = plt.subplots(n, 3, figsize=(12, 4 * n), squeeze=False)
        for r in range(n):
            axes[r, 0].imshow(images[r])
            axes[r, 0].set_title("image")
            axes[r, 0].axis("off")
            show_panoptic(images[r], gts[r][0], gts[r][1], class_table=self.class_table, ax=axes[r, 1],
                          title="ground truth")
            show_panoptic(images[r], preds[r].class_map, preds[r].instance_map, class_table=self.class_table,
                          ax=axes[r, 2], title=f"prediction ({preds[r].n_things} objects)")
        add_legend(fig, self.class_table)
        fig.tight_layout()
        if save_path is not None:
            fig.savefig(save_path, dpi=80, bbox_inches="tight")
        return fig

    # ------------------------------------------------------------ save / load
    def _state(self) -> dict:
        from ..data.normalize import BandStats

        stats = self.band_stats.to_dict() if isinstance(self.band_stats, BandStats) else self.band_stats
        return {
            "network_config": dict(self.learn.model.config),
            "loss_config": self._loss_config,
            "postprocess_config": self._postprocess_config,
            "class_table": self.class_table,
            "band_stats": stats,
            "band_names": self.band_names,
            "extract_bands": self.extract_bands,
            "chip_size": self.chip_size,
            "rgb_bands": self.rgb_bands,
        }

    def save(self, name_or_path: str | Path, overwrite: bool = True, compute_metrics: bool = True) -> Path:
        """Save a model folder: ``<name>.pth``, ``<name>.emd``, ``model_metrics.html`` and ``<name>.dlpk``.

        A bare name goes to ``<data path>/models/<name>/``; a path is used as the folder.
        Returns the folder.
        """
        from .package import write_model_package

        name_or_path = Path(name_or_path)
        if name_or_path.is_absolute() or len(name_or_path.parts) > 1:
            folder = name_or_path
        else:
            folder = Path(self.learn.path) / "models" / name_or_path
        if compute_metrics and self._data is not None and len(self._data.valid_ds) and not self._metrics:
            try:
                self.compute_metrics()
            except Exception as exc:  # metrics are a bonus in the package; never lose the weights for them
                warnings.warn(f"metrics not computed for the model package: {exc}")
        return write_model_package(self, folder, overwrite=overwrite)

    def load(self, name_or_path: str | Path) -> "MaXDeepLab":
        """Load weights saved by :meth:`save` (folder, ``.emd``, ``.dlpk`` or bare name) into this model."""
        path = Path(name_or_path)
        if not path.exists():
            path = Path(self.learn.path) / "models" / name_or_path
        emd, state_dict = _read_model_package(path)
        if emd["ModelParameters"]["network_config"] != dict(self.learn.model.config):
            raise ModelError(f"'{path}' holds a different network ({emd['ModelParameters']['network_config']}); "
                             "use MaXDeepLab.from_model for it.")
        self.learn.model.load_state_dict(state_dict)
        return self

    @classmethod
    def from_model(cls, emd_path: str | Path, data=None, **kwargs) -> "MaXDeepLab":
        """Rebuild a saved model, ready to predict, from its ``.emd``, ``.dlpk`` or folder.

        Parameters
        ----------
        emd_path:
            The model definition (``.emd``), the deep learning package (``.dlpk``) or the folder.
        data:
            Optional ``DataLoaders`` from :func:`geomax.prepare_data` to keep training or
            to compute metrics; its classes and bands must match the model's.
        """
        from ..data.normalize import BandStats

        emd, state_dict = _read_model_package(Path(emd_path))
        params = emd["ModelParameters"]
        class_table = ClassTable.from_emd(emd, source=str(emd_path))
        state = {
            "network_config": params["network_config"],
            "loss_config": params.get("loss_config", {}),
            "postprocess_config": params.get("postprocess_config", {}),
            "class_table": class_table,
            "band_stats": BandStats.from_dict(params["band_stats"]),
            "band_names": params["band_names"],
            "extract_bands": emd.get("ExtractBands", list(range(len(params["band_names"])))),
            "chip_size": emd.get("ImageHeight", 256),
            "rgb_bands": params.get("rgb_bands"),
        }
        if data is not None:
            cls._check_data(data)
            if data.n_bands != len(state["band_names"]):
                raise InputMismatchError(f"The model takes {len(state['band_names'])} bands {state['band_names']}, "
                                         f"the data has {data.n_bands} {list(data.band_names)}. Prepare the data "
                                         "with the model's bands (prepare_data(..., bands=...)).")
            if data.class_table.values != class_table.values:
                raise DataError(f"The data's classes {data.class_table.names} differ from the model's "
                                f"{class_table.names}.")
        model = cls(data, _from_model=state, **kwargs)
        model.learn.model.load_state_dict(state_dict)
        model._metrics = emd.get("Metrics", {}) or {}
        if torch.cuda.is_available():
            model.learn.model.cuda()
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
    if n_masks > VARIANTS[backbone]["num_slots"]:
        net_kw = {**net_kw, "num_slots": -(-n_masks // 8) * 8}
    return net_kw


def _pad_valid(valid: torch.Tensor | None, ph: int, pw: int, b: int, h: int, w: int) -> torch.Tensor:
    """Validity mask at the padded size: padding is invalid."""
    out = torch.zeros((b, ph, pw), dtype=torch.bool)
    out[:, :h, :w] = True if valid is None else valid
    return out


def _crop_result(result: PanopticResult, h: int, w: int) -> PanopticResult:
    if result.class_map.shape == (h, w):
        return result
    seg = result.segment_map[:h, :w]
    segments = result.segments
    if len(segments):
        areas = np.bincount(seg.ravel(), minlength=int(segments["id"].max()) + 1)
        segments = segments.assign(area=areas[segments["id"].to_numpy()])
        segments = segments[segments["area"] > 0].reset_index(drop=True)
    return PanopticResult(result.class_map[:h, :w], result.instance_map[:h, :w], seg,
                          result.confidence[:h, :w], segments)


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


def _skipping(tracker_cls, start_epoch: int):
    """A fastai tracker callback that ignores the epochs a resumed run skips (they log no values)."""
    if not start_epoch:
        return tracker_cls

    class _Skipping(tracker_cls):
        def after_epoch(self):
            if self.epoch >= start_epoch:
                super().after_epoch()

    return _Skipping


class _LastEpochCheckpoint:
    """fastai callback: save weights + optimiser after every epoch so ``fit(resume=True)`` can continue."""

    def __new__(cls, fname: str):
        from fastai.callback.core import Callback

        class _Last(Callback):
            order = 60

            def __init__(self, fname):
                self.fname = fname

            def after_epoch(self):
                if not self.learn.recorder.values:  # an epoch skipped by a resumed run: nothing new to save
                    return
                self.learn.save(self.fname, with_opt=True)  # fastai's save writes on rank 0 only
                from .distributed import is_main_process

                if not is_main_process():
                    return
                meta = Path(self.learn.path) / self.learn.model_dir / f"{self.fname}.json"
                meta.write_text(json.dumps({"epochs_done": self.epoch + 1, "n_epoch": self.n_epoch}))

            def restore(self, learn) -> int:
                meta = Path(learn.path) / learn.model_dir / f"{self.fname}.json"
                if not meta.exists():
                    raise ModelError(f"No checkpoint to resume from in {meta.parent}; train with checkpoint=True.")
                learn.load(self.fname, with_opt=True, weights_only=False)
                return int(json.loads(meta.read_text())["epochs_done"])

        return _Last(fname)


def _read_model_package(path: Path) -> tuple[dict, dict]:
    from .package import read_model_package

    return read_model_package(path)
