"""``prepare_data``: an exported training-data folder -> fastai ``DataLoaders`` of panoptic batches.

A batch is ``(image, target)`` (DESIGN section 9): image float32
(B, bands, H, W) normalised with the export's band statistics (0 on no-data
pixels); target a dict with ``semantic`` (B, H, W) int64, ``masks``
(B, K, H, W) bool padded to ``K = data.n_masks``, ``classes`` (B, K) int64
(0 = padding), ``is_thing`` (B, K) bool and ``valid`` (B, H, W) bool.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..common import GT_VALID
from ..config import TrainConfig
from ..errors import ArgumentError, DataError
from .classes import ClassInfo, ClassTable
from .dataset import (
    ChipDataset,
    count_segments,
    crop_starts,
    panoptic_from_target,
    read_chip_image,
    read_chip_labels,
    target_from_panoptic,
)
from .esri_layout import ExportLayout, read_export
from .normalize import BandStats, RunningBandStats
from .transforms import default_transforms

__all__ = ["prepare_data", "source_bands", "PanopticDataLoaders", "target_from_panoptic", "panoptic_from_target"]

DATASET_TYPE = "Panoptic_Segmentation"

try:  # fastai is a hard dependency; the import is kept here so the error names the fix
    from fastai.data.core import DataLoaders as _DataLoaders
    from fastai.data.load import DataLoader as _DataLoader
except ImportError as exc:  # pragma: no cover
    raise ImportError("geomax.data.prepare needs fastai: pip install fastai") from exc


class PanopticDataLoaders(_DataLoaders):
    """fastai ``DataLoaders`` of panoptic batches, carrying what the model needs to know about the data.

    Attributes
    ----------
    class_table:
        Classes (Value, Name, Color, is_thing); model index 0 is void.
    classes, thing_classes, stuff_classes:
        Class names.
    band_names, band_stats:
        Names and statistics of the bands fed to the model.
    n_bands, chip_size, n_masks:
        Input band count, chip height/width, mask slots per target.
    rgb_bands:
        0-based indices (into the model bands) drawn as red, green, blue.
    dataset_type:
        ``"Panoptic_Segmentation"``.
    paths:
        The export folders.
    """

    dataset_type = DATASET_TYPE

    @property
    def c(self) -> int:
        """Number of classes including void (C + 1)."""
        return self.class_table.n_classes + 1

    def show_batch(self, rows: int = 2, cols: int | None = None, alpha: float = 0.45, ds: str = "train",
                   file: str | os.PathLike | None = None, figsize=None):
        """Draw chips with their panoptic labels: stuff tinted by class colour, thing instances outlined.

        Parameters
        ----------
        rows, cols:
            Grid size (``cols`` defaults to ``rows``); at most the dataset size is drawn.
        alpha:
            Opacity of the overlay.
        ds:
            ``"train"`` (augmented) or ``"valid"``.
        file:
            Save the figure to this image file as well.
        figsize:
            Matplotlib figure size (default from the grid).

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        from ..viz import add_legend, denormalize, image_to_rgb, show_panoptic

        dataset = self.train.dataset if ds == "train" else self.valid.dataset
        if len(dataset) == 0:
            dataset = self.train.dataset
        cols = rows if cols is None else cols
        n = min(rows * cols, len(dataset))
        cols = min(cols, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=figsize or (4 * cols, 4 * rows + 0.6), squeeze=False)
        present: set[int] = set()
        for k in range(rows * cols):
            ax = axes[k // cols][k % cols]
            if k >= n:
                ax.axis("off")
                continue
            image, target = dataset[k]
            class_map, instance_map = panoptic_from_target(target, self.class_table)
            present.update(np.unique(class_map[class_map > 0]).tolist())
            rgb = image_to_rgb(denormalize(image, self.band_stats), self.band_stats, self.rgb_bands,
                               valid=target[GT_VALID].numpy())
            show_panoptic(rgb, class_map, instance_map, self.class_table, ax=ax, alpha=alpha,
                          title=f"{dataset.chips[k].id}: {int((instance_map.max()))} instances", legend=False)
        add_legend(fig, self.class_table, present)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        if file is not None:
            fig.savefig(file, dpi=100)
        return fig

    def __repr__(self) -> str:
        return (f"PanopticDataLoaders({self.train.dataset.n_chips} train / {self.valid.dataset.n_chips} valid chips "
                f"({len(self.train.dataset)} / {len(self.valid.dataset)} items of {self.chip_size} px), "
                f"{self.n_bands} bands {self.band_names}, chip_size={self.chip_size}, n_masks={self.n_masks}, "
                f"things={self.thing_classes}, stuff={self.stuff_classes})")


def _band_selection(bands, band_names: list[str]) -> list[int] | None:
    if bands is None:
        return None
    out = []
    for b in bands:
        if isinstance(b, str):
            if b not in band_names:
                raise ArgumentError(f"Band '{b}' is not in the export (bands: {band_names}).")
            out.append(band_names.index(b))
        else:
            b = int(b)
            if not 0 <= b < len(band_names):
                raise ArgumentError(f"Band index {b} is outside 0..{len(band_names) - 1} (0-based, bands: "
                                    f"{band_names}). Give 0-based band indices or band names.")
            out.append(b)
    if not out:
        raise ArgumentError("bands= selects no band. Give at least one band index or name, or bands=None for all.")
    return out


def _default_rgb(names: list[str]) -> list[int]:
    low = [n.lower() for n in names]
    wanted = []
    for key in ("red", "green", "blue"):
        hit = [i for i, n in enumerate(low) if n == key or n.startswith(key)]
        if hit:
            wanted.append(hit[0])
    if len(wanted) == 3:
        return wanted
    if len(names) >= 3:
        return [0, 1, 2]
    return [0, 0, 0]


def source_bands(layouts: Sequence[ExportLayout], n_chip_bands: int, band_indices: Sequence[int] | None) -> list[int]:
    """0-based bands of the source raster that the selected chip bands were cut from.

    The export's ``ExtractBands`` (0-based into the source, as ArcGIS writes it) composed
    with the chip-relative selection ``band_indices``: ``bands=[2, 3]`` of a 4-band raster
    exports ``ExtractBands [1, 2]``, and chip band 0 of that export is source band 1. An
    export without ``ExtractBands`` (or with a list that does not match its chips) was cut
    from all the source's bands. This is the one definition every reader of a model uses
    (:meth:`MaXDeepLab.predict <geomax.models.learner.MaXDeepLab.predict>`, ``predict_raster``,
    the Dask path).
    """
    def of(layout: ExportLayout) -> list[int]:
        extract = layout.extract_bands
        return [int(b) for b in extract] if extract and len(extract) == n_chip_bands else list(range(n_chip_bands))

    per_export = [of(lay) for lay in layouts]
    if any(e != per_export[0] for e in per_export[1:]):
        import warnings

        listed = "; ".join(f"{lay.root}: {e}" for lay, e in zip(layouts, per_export))
        warnings.warn(f"The exports were cut from different source bands ({listed}); the model reads source bands "
                      f"{per_export[0]} (0-based) of a raster with more bands than it takes. Pass bands= to predict "
                      "when a raster's bands differ.", UserWarning, stacklevel=3)
    chip = list(band_indices) if band_indices is not None else list(range(n_chip_bands))
    return [per_export[0][b] for b in chip]


def max_window_segments(class_index: np.ndarray, instance: np.ndarray, thing_lut: np.ndarray, size: int) -> int:
    """Most segments in a ``size`` window of a chip, windows at a stride of half ``size`` (the whole chip when smaller)."""
    return max(count_segments(class_index[r:r + size, c:c + size], instance[r:r + size, c:c + size], thing_lut)
               for r, c in crop_starts(class_index.shape, size, stride=size // 2))


def _on_gpu(device) -> bool:
    """Whether batches go to a CUDA device (``device=None``: fastai's default, CUDA when available)."""
    import torch

    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def prepare_data(
    path,
    chip_size: int | None = None,
    batch_size: int = 8,
    val_split_pct: float = 0.1,
    transforms=None,
    seed: int = 42,
    bands: Sequence[int | str] | None = None,
    class_mapping: dict | None = None,
    n_masks: int | None = None,
    rgb_bands: Sequence[int] | None = None,
    num_workers: int = 0,
    device=None,
    background: str = "auto",
    **kwargs,
) -> PanopticDataLoaders:
    """Read a ``Panoptic_Segmentation`` training-data export into fastai ``DataLoaders``.

    Parameters
    ----------
    path:
        Export folder, or a list of export folders with the same classes and bands.
    chip_size:
        Height and width of the training chips. Default
        (:meth:`geomax.config.TrainConfig.training_chip_size`): on a GPU the exported
        size, on a CPU 128 px (the exported size when smaller). Must not exceed the
        exported chips. A smaller size trains on random crops, as many per epoch as
        tile a chip, and validates on the crops that tile each validation chip.
    batch_size:
        Chips per batch.
    val_split_pct:
        Share of chips kept for validation (0..1).
    transforms:
        ``None``: default augmentations (random crop, 8 dihedral flips / turns,
        zoom 0.9-1.1, brightness +-10 %); ``False``: none; or a list of joint
        transforms ``t(sample, rng) -> sample`` (:mod:`geomax.data.transforms`).
        Validation chips are never augmented.
    seed:
        Seed of the train/validation split and the augmentations.
    bands:
        Bands to use, 0-based indices into the exported chips or band names
        (alias ``extract_bands``). Default: all.
    class_mapping:
        ``{Value: new name}`` to rename classes.
    n_masks:
        Mask slots per target. Default: the largest number of segments (stuff
        classes + thing instances) in any ``chip_size`` window of a chip, plus a margin,
        rounded up to a multiple of 8 (the network's slots grow to it).
    rgb_bands:
        0-based indices (into the selected bands) drawn as red, green, blue by ``show_batch``.
    num_workers:
        Worker processes of the loaders.
    device:
        Device batches are moved to (default: fastai's default device).
    background:
        What valid pixels with label 0 become (:func:`geomax.data.export.resolve_background`):
        ``"auto"`` adds the stuff class ``background`` when every class of the export is a
        thing (a footprint layer exported by ArcGIS Pro, say) and keeps them void otherwise;
        ``"class"`` or ``"void"`` force either. The rule used is in ``data.background``.
    **kwargs:
        ``extract_bands`` (alias of ``bands``); ``dataset_type`` (must be ``"Panoptic_Segmentation"``).

    Returns
    -------
    PanopticDataLoaders

    Raises
    ------
    DataError
        The folder is missing or not a ``Panoptic_Segmentation`` export, chips are
        unreadable or inconsistent, label values are not in the class table.
    ArgumentError
        A bad argument (chip size larger than the chips, unknown keyword, ...).
    """

    if "extract_bands" in kwargs:
        if bands is not None:
            raise ArgumentError("Pass either bands= or extract_bands=, not both.")
        bands = kwargs.pop("extract_bands")
    dtype_arg = kwargs.pop("dataset_type", DATASET_TYPE)
    if dtype_arg != DATASET_TYPE:
        raise ArgumentError(f"dataset_type='{dtype_arg}' is not supported: geomax reads '{DATASET_TYPE}' exports. "
                            f"Leave dataset_type out (or pass '{DATASET_TYPE}').")
    if kwargs:
        raise ArgumentError(f"Unknown arguments {sorted(kwargs)}. See help(geomax.prepare_data).")
    if not 0.0 <= float(val_split_pct) < 1.0:
        raise ArgumentError(f"val_split_pct={val_split_pct} must be in [0, 1).")
    if int(batch_size) < 1:
        raise ArgumentError(f"batch_size={batch_size} must be at least 1.")

    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if not paths:
        raise ArgumentError("path= is an empty list: give at least one export folder.")
    layouts: list[ExportLayout] = [read_export(p) for p in paths]
    class_table = layouts[0].class_table
    for lay in layouts[1:]:
        if lay.class_table.to_dict() != class_table.to_dict():
            raise DataError(f"{lay.root} has classes {lay.class_table.names} (things {lay.class_table.thing_names}) but "
                            f"{layouts[0].root} has {class_table.names} (things {class_table.thing_names}). "
                            "Export all folders with the same class table.")
    if class_mapping:
        known = set(class_table.values)
        unknown = [k for k in class_mapping if int(k) not in known]
        if unknown:
            raise ArgumentError(f"class_mapping names Values {unknown} that are not in the export {class_table.values}.")
        mapping = {int(k): str(v) for k, v in class_mapping.items()}
        class_table = ClassTable([ClassInfo(c.value, mapping.get(c.value, c.name), c.color, c.is_thing)
                                  for c in class_table])
    chips = [c for lay in layouts for c in lay.chips]
    from .export import resolve_background

    class_table, background_value, background_note = resolve_background(background, class_table)
    background_index = class_table.index_of_value(background_value) if background_value is not None else None

    # Image size and band count from the first chip's header; every chip is checked in the scan below.

    from .dataset import _open

    with _open(chips[0].image) as ds:
        n_chip_bands = ds.count
        chip_hw = (ds.height, ds.width)
        descriptions = [d or f"band_{i + 1}" for i, d in enumerate(ds.descriptions)]
    export_names = layouts[0].band_names or (layouts[0].band_stats.names if layouts[0].band_stats else descriptions)
    if len(export_names) != n_chip_bands:
        export_names = descriptions
    band_indices = _band_selection(bands, export_names)
    names = [export_names[i] for i in band_indices] if band_indices is not None else list(export_names)

    # Headers first (sizes agree, the chip size), then the labels (values known, segment counts for n_masks).
    thing_lut = class_table.is_thing_index()
    index_lut = class_table.index_lut()
    min_hw = chip_hw
    shapes = []
    for chip in chips:
        with _open(chip.image) as ds:
            hw, count = (ds.height, ds.width), ds.count
        if count != n_chip_bands:
            raise DataError(f"{chip.image} has {count} bands but {chips[0].image} has {n_chip_bands}. "
                            "All chips of an export need the same bands.")
        with _open(chip.label) as ds:
            lhw = (ds.height, ds.width)
        if lhw != hw:
            raise DataError(f"Image {chip.image} is {hw[1]} x {hw[0]} px but its label {chip.label} is "
                            f"{lhw[1]} x {lhw[0]}. Re-export the training data.")
        min_hw = (min(min_hw[0], hw[0]), min(min_hw[1], hw[1]))
        shapes.append(hw)

    if chip_size is None:
        chip_size = TrainConfig().training_chip_size(min(min_hw), gpu=_on_gpu(device))
    chip_size = int(chip_size)
    if chip_size > min(min_hw):
        raise ArgumentError(f"chip_size={chip_size} is larger than the exported chips ({min_hw[1]} x {min_hw[0]} px). "
                            f"Use chip_size <= {min(min_hw)} or re-export with a larger tile size.")
    if chip_size < 8:
        raise ArgumentError(f"chip_size={chip_size} is too small: use at least 8 pixels.")
    # Most segments in one training item: over the chip_size windows of each chip at half a
    # window's stride (random crops land anywhere), so crops of large chips do not size the
    # targets and the network's slots to a whole chip's segments.
    max_segments = 0
    for chip in chips:
        class_index, instance = read_chip_labels(chip, class_table, index_lut)
        max_segments = max(max_segments, max_window_segments(class_index, instance, thing_lut, chip_size)
                           + (background_index is not None))
    if n_masks is None:
        n_masks = int(math.ceil((max_segments + max(2, math.ceil(0.1 * max_segments))) / 8.0) * 8)
    elif int(n_masks) < 1:
        raise ArgumentError(f"n_masks={n_masks} must be at least 1.")
    n_masks = int(n_masks)

    # Band statistics: from the exports (pooled), else computed from the chips.
    if all(lay.band_stats is not None and lay.band_stats.n_bands == n_chip_bands for lay in layouts):
        stats_all = BandStats.combine([lay.band_stats for lay in layouts if lay.band_stats is not None],
                                      [len(lay.chips) for lay in layouts])
        stats_all = BandStats(export_names, stats_all.min, stats_all.max, stats_all.mean, stats_all.std)
    else:
        running = RunningBandStats(export_names)
        rng = np.random.default_rng(seed)
        for i in rng.permutation(len(chips))[:200]:
            img, valid = read_chip_image(chips[int(i)], None)
            running.update(img, valid)
        stats_all = running.result()
    band_stats = stats_all.select(band_indices) if band_indices is not None else stats_all

    # Train / validation split.
    order = np.random.default_rng(seed).permutation(len(chips))
    n_val = int(round(len(chips) * float(val_split_pct))) if len(chips) > 1 else 0
    if val_split_pct > 0 and len(chips) > 1:
        n_val = min(max(n_val, 1), len(chips) - 1)
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if transforms is None:
        train_tfms = default_transforms(chip_size)
    elif transforms is False:
        train_tfms = []
    else:
        train_tfms = list(transforms)
        if not all(callable(t) for t in train_tfms):
            raise ArgumentError("transforms= must be None, False or a list of callables t(sample, rng) -> sample.")
    common: dict[str, Any] = dict(class_table=class_table, band_stats=band_stats, n_masks=n_masks, chip_size=chip_size,
                  band_indices=band_indices, seed=seed, background_index=background_index)
    train_ds = ChipDataset([chips[i] for i in train_idx], transforms=train_tfms,
                           chip_shapes=[shapes[i] for i in train_idx], **common)
    valid_ds = ChipDataset([chips[i] for i in val_idx], transforms=None, chip_shapes=[shapes[i] for i in val_idx],
                           **common)
    bs = int(batch_size)
    train_dl = _DataLoader(train_ds, bs=bs, shuffle=True, drop_last=len(train_ds) > bs, num_workers=num_workers,
                           device=device)
    valid_dl = _DataLoader(valid_ds, bs=bs, shuffle=False, drop_last=False, num_workers=num_workers, device=device)
    data = PanopticDataLoaders(train_dl, valid_dl, path=paths[0], device=device)
    data.class_table = class_table
    data.classes = class_table.names
    data.thing_classes = class_table.thing_names
    data.stuff_classes = class_table.stuff_names
    data.band_names = names
    data.band_stats = band_stats
    data.n_bands = len(names)
    data.chip_size = chip_size
    data.n_masks = n_masks
    data.rgb_bands = list(rgb_bands) if rgb_bands is not None else _default_rgb(names)
    if any(not 0 <= int(b) < len(names) for b in data.rgb_bands) or len(data.rgb_bands) != 3:
        raise ArgumentError(f"rgb_bands={list(data.rgb_bands)} must be three 0-based indices into the bands {names}.")
    data.paths = paths
    data.band_indices = band_indices
    #: 0-based bands of the *source raster* the model reads (ArcGIS's ``ExtractBands``)
    data.extract_bands = source_bands(layouts, n_chip_bands, band_indices)
    data.max_segments = max_segments
    data.background = background_note
    return data
