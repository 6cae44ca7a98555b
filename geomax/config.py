"""Typed configurations: every setting of geomax with its one default.

Five dataclasses hold every choice a run makes, each default written once, here:

=====================  ===================================================================
:class:`NetworkConfig`  architecture of the MaX-DeepLab network (the variants registry,
                        :mod:`geomax.models.maxdeeplab.variants`, returns one per variant)
:class:`LossConfig`     weights and options of the PQ-style loss and its auxiliary terms
:class:`PostprocessConfig`  thresholds that turn raw outputs into a panoptic result
:class:`TrainConfig`    the training recipe: epochs or minutes, learning-rate policy, batch
                        and chip size, validation split, monitor, early stopping, checkpoints
:class:`TilingConfig`   how a large raster is tiled for inference
=====================  ===================================================================

Every entry point (Python API, ``geomax`` command, ArcGIS toolbox, DDP launcher, demo,
benchmarks) builds these objects through :meth:`Config.build` and hands them to the
workflow functions of :mod:`geomax.workflows`; a model package stores them in its
``.emd`` and :meth:`Config.from_dict` reads them back. Unknown keys are an error on
every path (with the closest valid name suggested), never dropped.

This module imports nothing heavy (no torch, no rasterio).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

from .errors import ArgumentError

__all__ = ["MIXED_PRECISION_MODES", "Config", "NetworkConfig", "LossConfig", "PostprocessConfig", "TrainConfig", "TilingConfig",
           "split_options", "check_known", "default_of"]

C = TypeVar("C", bound="Config")

#: Values of the ``mixed_precision`` settings (the rule: :mod:`geomax.models.precision`).
MIXED_PRECISION_MODES = ("auto", "bf16", "off")


def check_known(keys, valid, what: str) -> None:
    """Raise :class:`ArgumentError` naming every key of ``keys`` that is not in ``valid``.

    The message suggests the closest valid name (``class_treshold`` -> ``class_threshold``).
    """
    valid = sorted(valid)
    unknown = [k for k in keys if k not in valid]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise ArgumentError(f"Unknown {what} setting(s): {', '.join(hints)}. Valid settings: {', '.join(valid)}.")


@dataclass(frozen=True)
class Config:
    """Base of the configuration dataclasses: build with checks, convert to and from plain dicts."""

    #: What the settings are called in error messages.
    kind: ClassVar[str] = "configuration"

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the settings."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls: type[C], config: "C | Mapping[str, Any] | None" = None, **overrides: Any) -> C:
        """A config from an optional base (a config or a dict) and keyword overrides.

        ``None`` overrides are ignored (an entry point's "not given"). Unknown keys raise
        :class:`ArgumentError`.
        """
        if config is None:
            base: dict[str, Any] = {}
        elif isinstance(config, cls):
            base = config.to_dict()
        elif isinstance(config, Mapping):
            base = dict(config)
        else:
            raise ArgumentError(f"Expected a {cls.__name__} or a dict of {cls.kind} settings, "
                                f"got {type(config).__name__}.")
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(base)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], source: str | None = None) -> C:
        """A config from a dict (for example read back from an ``.emd``); unknown keys are an error."""
        try:
            check_known(values, cls.field_names(), cls.kind)
        except ArgumentError as exc:
            raise ArgumentError(f"{exc} (in {source}: check the settings there)" if source else str(exc)) from None
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some settings changed (checked like :meth:`build`)."""
        return type(self).build(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _in_range(name: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and (value < low or (low_open and value == low)):
        raise ArgumentError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}.")
    if high is not None and (value > high or (high_open and value == high)):
        raise ArgumentError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}.")


def _int_at_least(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArgumentError(f"{name} must be a whole number >= {low}, got {value!r}.")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        shown = [repr(c) for c in choices]
        listed = ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else shown[0]
        raise ArgumentError(f"{name} must be {listed}, got {value!r}.")


# --------------------------------------------------------------------------- network
@dataclass(frozen=True)
class NetworkConfig(Config):
    """Architecture of :class:`~geomax.models.maxdeeplab.network.MaXDeepLabNetwork`.

    The defaults are the paper's MaX-DeepLab-S; the other variants
    (:data:`geomax.models.maxdeeplab.variants.VARIANTS`) change some of them. Band and
    class counts come from the data and are not part of the config.

    Attributes
    ----------
    stem_channels:
        Widths of the three stem convolutions.
    stage_filters:
        Base widths of stages 2-5 (block outputs are 4x).
    stage_blocks:
        Blocks in stages 2-5.
    num_heads:
        Heads of axial and dual-path attention.
    max_span:
        Span of the relative positional table.
    attention_bottleneck_expansion, key_expansion, value_expansion:
        Channel ratios of the axial blocks.
    num_slots:
        N, memory slots (mask proposals).
    memory_channels:
        Dm, memory width.
    transformer_filters:
        Base width of the dual-path layers.
    transformer_ffn_channels:
        Hidden width of the memory feed-forward network.
    extra_blocks:
        Axial + dual-path blocks after the backbone at stride 16.
    decoder_num_stacks:
        L, stacked decoder repeats.
    decoder_blocks:
        Residual blocks after each decoder fusion.
    head_channels:
        Width of the head convolutions.
    feature_dim:
        D, dimension of pixel features and mask kernels.
    drop_path_rate:
        Drop-path rate at stride 16.
    void_prior:
        Initial p(void) of every slot.
    mask_logit_scale_init:
        Initial shared scale of the mask logits.
    output_stride:
        Resolution of masks and pixel features: 4 (the paper), 2 or 1.
    semantic_feature:
        Input of the auxiliary semantic head: ``"decoder"`` or ``"backbone"``.
    full_res_channels:
        Width of the full-resolution feature (``output_stride=1`` only).
    """

    kind: ClassVar[str] = "network"

    stem_channels: tuple[int, ...] = (64, 64, 128)
    stage_filters: tuple[int, ...] = (64, 128, 256, 512)
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)
    num_heads: int = 8
    max_span: int = 255
    attention_bottleneck_expansion: float = 2.0
    key_expansion: float = 1.0
    value_expansion: float = 2.0
    num_slots: int = 128
    memory_channels: int = 256
    transformer_filters: int = 128
    transformer_ffn_channels: int = 2048
    extra_blocks: int = 1
    decoder_num_stacks: int = 0
    decoder_blocks: int = 1
    head_channels: int = 256
    feature_dim: int = 128
    drop_path_rate: float = 0.2
    void_prior: float = 0.9
    mask_logit_scale_init: float = 0.1
    output_stride: int = 4
    semantic_feature: str = "decoder"
    full_res_channels: int = 16

    def __post_init__(self) -> None:
        for name in ("stem_channels", "stage_filters", "stage_blocks"):
            value = getattr(self, name)
            expected = 3 if name == "stem_channels" else 4
            if not isinstance(value, tuple) or len(value) != expected or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ArgumentError(f"{name} must be {expected} whole numbers >= 1, got {value!r}.")
        for name in ("num_heads", "max_span", "num_slots", "memory_channels", "transformer_filters",
                     "transformer_ffn_channels", "decoder_blocks", "head_channels", "feature_dim",
                     "full_res_channels"):
            _int_at_least(name, getattr(self, name), 1)
        _int_at_least("extra_blocks", self.extra_blocks, 0)
        _int_at_least("decoder_num_stacks", self.decoder_num_stacks, 0)
        for name in ("attention_bottleneck_expansion", "key_expansion", "value_expansion",
                     "mask_logit_scale_init"):
            _in_range(name, getattr(self, name), 0.0, low_open=True)
        _in_range("drop_path_rate", self.drop_path_rate, 0.0, 1.0, high_open=True)
        _in_range("void_prior", self.void_prior, 0.0, 1.0, low_open=True, high_open=True)
        _choice("output_stride", self.output_stride, (4, 2, 1))
        _choice("semantic_feature", self.semantic_feature, ("decoder", "backbone"))


# --------------------------------------------------------------------------- loss
@dataclass(frozen=True)
class LossConfig(Config):
    """Settings of :class:`~geomax.models.criterion.MaXDeepLabLoss`.

    Weights and options follow deeplab2's MaX-DeepLab loss except where remote sensing
    needs otherwise (``loss_resolution`` and ``mask_id_balance``; measurements in
    ``docs/design.md``).

    Attributes
    ----------
    pq_weight:
        Weight of the PQ-style term (normalised by the slot count).
    instance_weight:
        Weight of the instance-discrimination term.
    mask_id_weight:
        Weight of the mask-ID cross-entropy.
    detail_instance_weight:
        Weight of instance discrimination on the full-resolution detail embedding (0 = off).
    semantic_weight:
        Weight of the auxiliary semantic cross-entropy.
    alpha:
        Share of the positive slots in the PQ-style term (negatives get ``1 - alpha``).
    temperature:
        Temperature of instance discrimination.
    void_overlap_weighting:
        ``"none"`` (every unmatched slot weighs 1) or ``"official"`` (deeplab2's
        void-share weighting).
    loss_resolution:
        ``"input"``: mask and semantic logits resized to the chip before the PQ-style,
        mask-ID and semantic terms (small objects are learned as inference draws them);
        ``"output"``: deeplab2's ground truth sampled down to the output stride;
        ``"sampled"``: as ``"input"``, on ``loss_points`` pixels per chip drawn at random
        (one per cell of a grid) with the logits interpolated there, as Mask2Former's point
        loss: the cost no longer grows with the chip's area.
    loss_points:
        Pixels per chip of the ``"sampled"`` loss (a chip with fewer uses all of them).
    mask_id_balance:
        ``"segment"``: every object weighs the same in the mask-ID term; ``"pixel"``:
        deeplab2's per-pixel mean.
    """

    kind: ClassVar[str] = "loss"

    pq_weight: float = 3.0
    instance_weight: float = 1.0
    mask_id_weight: float = 0.3
    detail_instance_weight: float = 0.0
    semantic_weight: float = 1.0
    alpha: float = 0.75
    temperature: float = 0.3
    void_overlap_weighting: str = "none"
    loss_resolution: str = "sampled"
    loss_points: int = 4096
    mask_id_balance: str = "segment"

    def __post_init__(self) -> None:
        for name in ("pq_weight", "instance_weight", "mask_id_weight", "detail_instance_weight",
                     "semantic_weight"):
            _in_range(name, getattr(self, name), 0.0)
        _in_range("alpha", self.alpha, 0.0, 1.0)
        _in_range("temperature", self.temperature, 0.0, low_open=True)
        _choice("void_overlap_weighting", self.void_overlap_weighting, ("none", "official"))
        _choice("loss_resolution", self.loss_resolution, ("output", "input", "sampled"))
        _int_at_least("loss_points", self.loss_points, 1)
        _choice("mask_id_balance", self.mask_id_balance, ("pixel", "segment"))


# --------------------------------------------------------------------------- post-processing
@dataclass(frozen=True)
class PostprocessConfig(Config):
    """Settings of :class:`~geomax.models.postprocess.PanopticPostProcessor`.

    Attributes
    ----------
    class_threshold:
        Keep slots whose best non-void class probability is at least this.
    mask_threshold:
        A pixel whose best kept-slot probability is below this becomes void.
    min_thing_area, min_stuff_area:
        Drop thing / stuff segments smaller than this many pixels.
    split_disconnected_things:
        One instance per separate 4-connected region of a thing slot (geomax's addition);
        ``False``: one instance per slot.
    split_min_fraction:
        A region splits off only with at least this share of the slot's largest region.
    """

    kind: ClassVar[str] = "post-processing"

    class_threshold: float = 0.7
    mask_threshold: float = 0.4
    min_thing_area: int = 16
    min_stuff_area: int = 64
    split_disconnected_things: bool = True
    split_min_fraction: float = 0.35

    def __post_init__(self) -> None:
        for name in ("class_threshold", "mask_threshold", "split_min_fraction"):
            _in_range(name, getattr(self, name), 0.0, 1.0)
        _int_at_least("min_thing_area", self.min_thing_area, 0)
        _int_at_least("min_stuff_area", self.min_stuff_area, 0)
        if not isinstance(self.split_disconnected_things, bool):
            raise ArgumentError(f"split_disconnected_things must be True or False, got "
                                f"{self.split_disconnected_things!r}.")


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig(Config):
    """The training recipe, the same for the API, the command line, the toolbox, DDP and the demo.

    Attributes
    ----------
    epochs:
        Epochs to train. ``None``: :attr:`DEFAULT_EPOCHS`, or as many as ``minutes`` allows.
    minutes:
        Wall-clock budget: the one-cycle schedule is stretched over it and training stops
        when it is used up (:class:`~geomax.models.callbacks.TimeBudget`). Give either
        ``epochs`` or ``minutes``.
    lr:
        Peak learning rate of the schedule. 3e-3: measured on CPU budgets (the demo's
        scenes, 5 minutes: PQ 0.59 against 0.51 with 1e-3; ``docs/design.md``).
    lr_find:
        Run fastai's learning-rate finder first and use its suggestion instead of ``lr``.
    lr_schedule:
        ``"one_cycle"`` (fastai's ``fit_one_cycle``) or ``"constant"``.
    batch_size:
        Chips per batch.
    chip_size:
        Training chip side in pixels; ``None``: :meth:`training_chip_size` of the export
        (on a CPU random crops of :attr:`CPU_CHIP_SIZE` px, on a GPU the exported size).
        The model predicts at tiles of this size (:meth:`TilingConfig.resolve`).
    val_split:
        Share of the chips held out for validation.
    seed:
        Seed of the validation split and of the network's initialisation.
    monitor:
        What the best checkpoint and early stopping watch: ``"valid_loss"`` or
        ``"panoptic_quality"``.
    early_stopping:
        Stop when ``monitor`` has not improved for ``patience`` epochs.
    patience:
        Epochs without improvement before early stopping.
    checkpoint:
        Save the last epoch (weights + optimiser) after every epoch so an interrupted run
        can resume; when training by epochs also keep the best epoch by ``monitor`` and
        reload it at the end (a time-budgeted run ends on the annealed last epoch of its
        one-cycle schedule, which is kept).
    num_threads:
        Torch CPU threads (``None``: torch's own choice).
    mixed_precision:
        ``"auto"``: float16 on CUDA; on a CPU with native bfloat16, bfloat16 autocast for
        training chips of :attr:`CPU_BF16_MIN_CHIP` px and more (1.5x the images per second
        at 256 px) and float32 below (as fast at 128 px, and a little better PQ at equal
        steps; :mod:`geomax.models.precision`, ``docs/design.md``); float32 elsewhere.
        ``"bf16"``: bfloat16 autocast whatever the chip size and device; ``"off"``: float32.
    checkpoint_every:
        Seconds between two last-epoch checkpoints (the first and the last epoch are always
        saved): on small exports an epoch takes a second or two, and writing weights plus
        optimiser after each one cost up to a tenth of the training time.
    validate_every:
        With ``minutes``: seconds between two validations (the first and the last epoch are
        always validated; a skipped epoch is recorded with its training loss only); 0: every
        epoch. Training by ``epochs`` or with ``early_stopping`` validates every epoch.
    """

    kind: ClassVar[str] = "training"
    #: Epochs when neither ``epochs`` nor ``minutes`` is given.
    DEFAULT_EPOCHS: ClassVar[int] = 10
    #: Training crop side on a CPU when ``chip_size`` is not given: a 128 px step takes about
    #: a fifth of a 256 px one (0.53 s against 2.9 s, batch 8, 2 cores), so a CPU budget gives
    #: about five times the optimiser steps, and the CPU network's 32 slots cover the segments of
    #: a 128 px crop of dense scenes (``docs/design.md``, "Training chip size chosen from the data and the device").
    CPU_CHIP_SIZE: ClassVar[int] = 128
    #: Smallest training chip that ``mixed_precision="auto"`` trains in bfloat16 on a CPU (measured
    #: by ``benchmarks/bench_train_speed.py``: at 128 px channels-last float32 runs as fast as bfloat16).
    CPU_BF16_MIN_CHIP: ClassVar[int] = 256

    epochs: int | None = None
    minutes: float | None = None
    lr: float = 3e-3
    lr_find: bool = False
    lr_schedule: str = "one_cycle"
    batch_size: int = 8
    chip_size: int | None = None
    val_split: float = 0.1
    seed: int = 42
    monitor: str = "valid_loss"
    early_stopping: bool = False
    patience: int = 3
    checkpoint: bool = True
    num_threads: int | None = None
    mixed_precision: str = "auto"
    checkpoint_every: float = 60.0
    validate_every: float = 30.0

    def __post_init__(self) -> None:
        if self.epochs is not None and self.minutes is not None:
            raise ArgumentError(f"Give either --epochs or --minutes (epochs= or minutes=), not both; got "
                                f"epochs={self.epochs}, minutes={self.minutes}.")
        if self.epochs is not None:
            _int_at_least("epochs", self.epochs, 1)
        if self.minutes is not None:
            _in_range("minutes", self.minutes, 0.0, low_open=True)
        _in_range("lr", self.lr, 0.0, 1.0, low_open=True)
        for name in ("lr_find", "early_stopping", "checkpoint"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        _choice("lr_schedule", self.lr_schedule, ("one_cycle", "constant"))
        _int_at_least("batch_size", self.batch_size, 1)
        if self.chip_size is not None:
            _int_at_least("chip_size", self.chip_size, 16)
        _in_range("val_split", self.val_split, 0.0, 1.0, high_open=True)
        _int_at_least("seed", self.seed, 0)
        _choice("monitor", self.monitor, ("valid_loss", "train_loss", "panoptic_quality"))
        _int_at_least("patience", self.patience, 1)
        if self.num_threads is not None:
            _int_at_least("num_threads", self.num_threads, 1)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION_MODES)
        _in_range("checkpoint_every", self.checkpoint_every, 0.0)
        _in_range("validate_every", self.validate_every, 0.0)

    def training_chip_size(self, exported: int, gpu: bool) -> int:
        """Side of the training chips for chips exported at ``exported`` px.

        ``chip_size`` when given; otherwise on a GPU the exported size, on a CPU
        random crops of :attr:`CPU_CHIP_SIZE` px (the exported size when smaller).
        """
        if self.chip_size is not None:
            return int(self.chip_size)
        return int(exported) if gpu else min(int(exported), self.CPU_CHIP_SIZE)

    @property
    def n_epochs(self) -> int:
        """Epochs handed to fastai: ``epochs``, or a bound the time budget never reaches."""
        if self.minutes is not None:
            return 100_000
        return self.epochs if self.epochs is not None else self.DEFAULT_EPOCHS

    @property
    def keep_best(self) -> bool:
        """Keep and reload the best epoch by ``monitor`` (training by epochs with ``checkpoint``)."""
        return self.checkpoint and self.minutes is None


# --------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class TilingConfig(Config):
    """How :func:`geomax.workflows.predict` tiles a large raster.

    Attributes
    ----------
    tile_size:
        Tile side in pixels. ``None``: the model's training chip size rounded to its
        ``tile_multiple`` (its memory slots were sized to the segments of a chip; tiles of
        twice the chip size lost most buildings, ``docs/design.md``), or
        :attr:`FALLBACK_TILE_SIZE` for a predictor without a chip size.
    overlap:
        Pixels shared by neighbouring tiles. ``None``: a quarter of the tile (even).
    batch_size:
        Tiles per ``predict_tiles`` call.
    merge_iou:
        IoU inside the overlap above which two same-class thing segments of neighbouring
        tiles are one instance.
    block_size:
        Distributed inference: side of a block's core in pixels (one Dask task each).
    """

    kind: ClassVar[str] = "tiling"
    #: Tile side for a predictor that does not say its training chip size.
    FALLBACK_TILE_SIZE: ClassVar[int] = 256

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    merge_iou: float = 0.5
    block_size: int = 2048

    def __post_init__(self) -> None:
        if self.tile_size is not None:
            _int_at_least("tile_size", self.tile_size, 1)
        if self.overlap is not None:
            _int_at_least("overlap", self.overlap, 0)
        if self.tile_size is not None and self.overlap is not None and self.tile_size < 2 * self.overlap:
            raise ArgumentError(f"tile_size={self.tile_size} is smaller than 2 * overlap ({2 * self.overlap}); "
                                f"only neighbouring tiles may overlap. Use tile_size >= {2 * self.overlap} "
                                "or a smaller overlap.")
        _int_at_least("batch_size", self.batch_size, 1)
        _in_range("merge_iou", self.merge_iou, 0.0, 1.0, low_open=True)
        _int_at_least("block_size", self.block_size, 1)

    def resolve(self, chip_size: int | None = None, tile_multiple: int = 1) -> "TilingConfig":
        """A copy with ``tile_size`` and ``overlap`` filled in for a model.

        Parameters
        ----------
        chip_size:
            The model's training chip size (``None`` when unknown).
        tile_multiple:
            Tile sides must be a multiple of this (the network pads to it).
        """
        tile = self.tile_size
        if tile is None:
            base = chip_size if chip_size else self.FALLBACK_TILE_SIZE
            tile = max(tile_multiple, int(round(base / tile_multiple)) * tile_multiple)
        overlap = self.overlap if self.overlap is not None else max(2, (tile // 4) // 2 * 2)
        return self.replace(tile_size=tile, overlap=overlap)


_MODEL_CONFIGS: tuple[type[Config], ...] = (NetworkConfig, LossConfig, PostprocessConfig)


def split_options(options: Mapping[str, Any],
                  configs: tuple[type[Config], ...] = _MODEL_CONFIGS) -> dict[type[Config], dict[str, Any]]:
    """Route keyword options to the config class that defines each; unknown keys raise.

    Each setting name belongs to exactly one of ``configs``.
    """
    owner: dict[str, type[Config]] = {}
    for cls in configs:
        for name in cls.field_names():
            owner.setdefault(name, cls)
    check_known(options, owner, " / ".join(c.kind for c in configs))
    routed: dict[type[Config], dict[str, Any]] = {cls: {} for cls in configs}
    for key, value in options.items():
        routed[owner[key]][key] = value
    return routed


def default_of(cls: type[Config], name: str) -> Any:
    """The default of setting ``name`` of config class ``cls`` (for help texts)."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


# keep names unique across the model configs: split_options relies on it
assert not (set(NetworkConfig.field_names()) & set(LossConfig.field_names())
            | set(NetworkConfig.field_names()) & set(PostprocessConfig.field_names())
            | set(LossConfig.field_names()) & set(PostprocessConfig.field_names()))
