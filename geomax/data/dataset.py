"""The chip dataset: reads an export's chips and builds panoptic training targets.

One item is ``(image, target)``: image float32 (bands, H, W) normalised with the
export's band statistics (0 on no-data pixels); target a dict with the
:mod:`geomax.common` ``GT_*`` keys (DESIGN section 9), padded to ``n_masks``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..common import GT_CLASSES, GT_IS_THING, GT_MASKS, GT_SEGMENT_INDEX, GT_SEMANTIC, GT_VALID
from ..errors import ArgumentError, DataError
from .classes import ClassTable
from .esri_layout import ChipRecord
from .image_io import read_valid_pixels
from .normalize import BandStats, normalize
from .transforms import Sample, crop_or_pad

__all__ = ["ChipDataset", "crop_starts", "read_chip_labels", "read_chip_image", "target_from_panoptic", "panoptic_from_target",
           "count_segments"]


def _open(path: Path):
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except (RasterioIOError, OSError) as exc:
        raise DataError(f"{path} cannot be read ({exc}). The file may be corrupt: re-export the training data "
                        "or remove this chip from map.txt.") from exc


def _read(path: Path, indexes=None) -> np.ndarray:
    from rasterio.errors import RasterioIOError

    with _open(path) as ds:
        try:
            return ds.read(indexes) if indexes is not None else ds.read()
        except (RasterioIOError, OSError, ValueError) as exc:
            raise DataError(f"{path} cannot be read ({exc}). The file may be corrupt: re-export the training data.") from exc


def read_chip_image(chip: ChipRecord, band_indices: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Raw image (bands, H, W) float32 and validity (H, W) of a chip; ``band_indices`` are 0-based.

    A pixel is valid only if it is valid in every band read
    (:func:`geomax.data.image_io.valid_pixels`); NaN and infinite values are set to 0.
    """
    from rasterio.errors import RasterioIOError

    with _open(chip.image) as ds:
        if band_indices is not None and max(band_indices) >= ds.count:
            raise DataError(f"{chip.image} has {ds.count} bands but band {max(band_indices)} (0-based) was requested. "
                            "Check bands= / extract_bands=.")
        idx = [b + 1 for b in band_indices] if band_indices is not None else list(range(1, ds.count + 1))
        try:
            raw = ds.read(idx)
            valid = read_valid_pixels(ds, idx, raw)
        except (RasterioIOError, OSError, ValueError) as exc:
            raise DataError(f"{chip.image} cannot be read ({exc}). The file may be corrupt: re-export the data.") from exc
    image = raw.astype(np.float32)
    image[:, ~np.isfinite(image).all(0)] = 0
    return image, valid


def read_chip_labels(chip: ChipRecord, class_table: ClassTable, index_lut: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Class-index map (H, W) int64 and instance map (H, W) int32 (unique over thing classes) of a chip.

    Thing pixels of a class whose ``labels2`` raster is missing are split into
    connected components (8-connectivity); thing pixels that carry no instance
    id while others of the same class do become void.

    Raises
    ------
    DataError
        Label values not in the class table, or label / instance sizes that disagree.
    """
    values = _read(chip.label, 1).astype(np.int64)
    lut = class_table.index_lut() if index_lut is None else index_lut
    bad = (values < 0) | (values >= lut.size)
    if not bad.any():
        index = lut[values]
        bad = index < 0
    if bad.any():
        unknown = sorted(set(np.unique(values[bad]).tolist()))
        raise DataError(f"{chip.label} holds class Values {unknown[:10]} that are not in the class table "
                        f"(Values: {class_table.values}). Fix the export or add the classes to the .emd.")
    instance = np.zeros(values.shape, np.int32)
    offset = 0
    for c in class_table:
        if not c.is_thing:
            continue
        sel = values == c.value
        if not sel.any():
            continue
        path = chip.instances.get(c.value)
        if path is None:
            from scipy import ndimage

            comp, n = ndimage.label(sel, structure=np.ones((3, 3), bool))
            instance[sel] = comp[sel] + offset
            offset += n
            continue
        ids = _read(path, 1).astype(np.int64)
        if ids.shape != values.shape:
            raise DataError(f"Instance raster {path} is {ids.shape[1]} x {ids.shape[0]} px but label {chip.label} is "
                            f"{values.shape[1]} x {values.shape[0]}. Re-export the training data.")
        have = sel & (ids > 0)
        index[sel & (ids <= 0)] = 0  # thing pixel without an instance: void
        if have.any():
            instance[have] = (ids[have] + offset).astype(np.int32)
            offset += int(ids[have].max())
    return index, instance


def count_segments(class_index: np.ndarray, instance: np.ndarray, is_thing: np.ndarray) -> int:
    """Number of segments: stuff classes present plus thing instances present."""
    stuff_classes = np.unique(class_index[(class_index > 0) & ~is_thing[class_index]])
    things = np.unique(instance[(instance > 0) & is_thing[class_index]])
    return int(stuff_classes.size + things.size)


def target_from_panoptic(class_index_map, instance_map, valid, class_table: ClassTable, n_masks: int) -> dict:
    """Build the training target of one chip from its panoptic maps.

    Parameters
    ----------
    class_index_map:
        (H, W) model class indices (0 = void).
    instance_map:
        (H, W) instance ids, unique within the chip across thing classes (0 = none).
    valid:
        (H, W) bool, False on no-data pixels (or ``None``: all valid).
    class_table:
        The classes.
    n_masks:
        Number of mask slots K to pad to.

    Returns
    -------
    dict
        torch tensors: ``GT_SEMANTIC`` (H, W) int64, ``GT_MASKS`` (K, H, W) bool,
        ``GT_CLASSES`` (K,) int64 (0 = padding), ``GT_IS_THING`` (K,) bool,
        ``GT_VALID`` (H, W) bool, ``GT_SEGMENT_INDEX`` (H, W) int64 (the mask holding
        each pixel, -1 for none). Segments: one mask per stuff class present
        (in class order) then one per thing instance (in id order), over valid
        pixels. When there are more than ``n_masks`` segments the smallest are
        dropped and their pixels become void (a warning says so).
    """
    import torch

    cls = np.asarray(class_index_map).astype(np.int64)
    inst = np.asarray(instance_map).astype(np.int64)
    h, w = cls.shape
    valid = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    thing_lut = class_table.is_thing_index()
    sem = np.where(valid, cls, 0)
    thing_px = thing_lut[sem]
    sem = np.where(thing_px & (inst <= 0), 0, sem)  # thing pixel without instance: void
    thing_px = thing_lut[sem]

    seg = np.zeros((h, w), np.int64)
    seg_classes, seg_thing = [], []
    stuff_present = np.unique(sem[(sem > 0) & ~thing_px])
    for k, c in enumerate(stuff_present, start=1):
        seg[sem == c] = k
        seg_classes.append(int(c))
        seg_thing.append(False)
    n_stuff = len(seg_classes)
    if thing_px.any():
        ids, first = np.unique(inst[thing_px], return_index=True)
        inst_classes = sem[thing_px][first]
        # map instance id -> segment number
        lut = np.zeros(int(ids.max()) + 1, np.int64)
        lut[ids] = np.arange(n_stuff + 1, n_stuff + 1 + ids.size)
        seg[thing_px] = lut[inst[thing_px]]
        seg_classes += [int(c) for c in inst_classes]
        seg_thing += [True] * ids.size
    n_seg = len(seg_classes)
    seg_ids = np.arange(1, n_seg + 1)
    if n_seg > n_masks:
        areas = np.bincount(seg.ravel(), minlength=n_seg + 1)[1:]
        keep = np.sort(np.argsort(-areas, kind="stable")[:n_masks])
        # Python's default warning filter shows this once per call site, not once per chip.
        warnings.warn(f"A chip has {n_seg} segments but n_masks={n_masks}: the smallest are treated as void. "
                      "Pass a larger n_masks to prepare_data.")
        dropped = np.setdiff1d(seg_ids, keep + 1)
        drop_px = np.isin(seg, dropped)
        sem = np.where(drop_px, 0, sem)
        seg_ids = keep + 1
        seg_classes = [seg_classes[i] for i in keep]
        seg_thing = [seg_thing[i] for i in keep]
    masks = np.zeros((n_masks, h, w), bool)
    index_of = np.full(n_seg + 1, -1, np.int64)  # segment number -> mask index (-1: none or dropped)
    index_of[seg_ids] = np.arange(len(seg_ids))
    segment_index = index_of[seg]
    if len(seg_ids):
        masks[:len(seg_ids)] = seg[None] == seg_ids[:, None, None]
    classes = np.zeros(n_masks, np.int64)
    classes[:len(seg_classes)] = seg_classes
    is_thing = np.zeros(n_masks, bool)
    is_thing[:len(seg_thing)] = seg_thing
    return {
        GT_SEMANTIC: torch.from_numpy(sem),
        GT_MASKS: torch.from_numpy(masks),
        GT_CLASSES: torch.from_numpy(classes),
        GT_IS_THING: torch.from_numpy(is_thing),
        GT_VALID: torch.from_numpy(valid.copy()),
        GT_SEGMENT_INDEX: torch.from_numpy(segment_index),
    }


def panoptic_from_target(target: dict, index=None, class_table: ClassTable | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`target_from_panoptic`: class **Values** and instance maps of one sample.

    Call it as ``panoptic_from_target(batch_target, i, class_table)`` for sample ``i``
    of a batch, or ``panoptic_from_target(sample_target, class_table)`` for one sample.

    Parameters
    ----------
    target:
        A batch target (``GT_MASKS`` (B, K, H, W), ``GT_CLASSES`` (B, K), optional
        ``GT_VALID`` (B, H, W)) or one sample's target (no batch axis); torch
        tensors or numpy arrays.
    index:
        Sample index in the batch (omit for a single-sample target).
    class_table:
        The classes.

    Returns
    -------
    class_map : numpy.ndarray
        (H, W) int32 class Values, 0 = void / no data.
    instance_map : numpy.ndarray
        (H, W) int32, thing instances numbered 1..k in mask order, 0 elsewhere.
    """
    if isinstance(index, ClassTable):
        index, class_table = None, index
    if class_table is None:
        raise ArgumentError("panoptic_from_target needs the class table: panoptic_from_target(target, i, class_table). "
                            "Pass the data's class table (data.class_table).")
    if index is not None:
        target = {k: target[k][int(index)] for k in (GT_MASKS, GT_CLASSES, GT_VALID) if k in target}

    def np_(x):
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    masks = np_(target[GT_MASKS]).astype(bool)
    if masks.ndim != 3:
        raise ArgumentError(f"panoptic_from_target: masks of shape {masks.shape}; pass the sample index for a batch: "
                            "panoptic_from_target(target, i, class_table).")
    classes = np_(target[GT_CLASSES]).astype(np.int64)
    values = class_table.value_lut()
    thing = class_table.is_thing_index()
    h, w = masks.shape[1:]
    class_map = np.zeros((h, w), np.int32)
    instance_map = np.zeros((h, w), np.int32)
    n = 0
    for k in np.flatnonzero(classes > 0):
        m = masks[k]
        class_map[m] = values[classes[k]]
        if thing[classes[k]] and m.any():
            n += 1
            instance_map[m] = n
    if GT_VALID in target:
        v = np_(target[GT_VALID]).astype(bool)
        class_map[~v] = 0
        instance_map[~v] = 0
    return class_map, instance_map


def _index_dtype(n_classes: int):
    """The smallest integer type that holds class indices 0..n_classes (cached chips)."""
    return np.uint8 if n_classes < 256 else np.int32


def crop_starts(shape: tuple[int, int], size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` crops of a chip of ``shape``, ``stride`` apart (default ``size``: they
    tile it), the last row and column aligned to its edges."""
    step = size if stride is None else max(1, int(stride))

    def axis(n: int) -> list[int]:
        if n <= size:
            return [0]
        starts = list(range(0, n - size + 1, step))
        return starts if starts[-1] == n - size else starts + [n - size]

    return [(r, c) for r in axis(int(shape[0])) for c in axis(int(shape[1]))]


class ChipDataset:
    """Training chips of one or more exports as ``(image, target)`` items (a torch map-style dataset).

    Parameters
    ----------
    chips:
        Chip records (from :func:`geomax.data.esri_layout.read_export`).
    class_table:
        The classes.
    band_stats:
        Statistics of the selected bands (normalisation).
    n_masks:
        Mask slots per target.
    chip_size:
        Output height and width.
    chip_shapes:
        (height, width) of each chip. With chips larger than ``chip_size`` a chip gives as
        many items as ``chip_size`` crops tile it: random crops with transforms (an epoch
        covers about the chips' area), the tiling crops without (validation sees every
        pixel once, the last row and column of crops aligned to the chip's edge).
        ``None``: one item per chip.
    band_indices:
        0-based bands of the chips to use (default: all).
    transforms:
        List of joint transforms (:mod:`geomax.data.transforms`); none when empty.
        The output is always cropped (random with transforms, centred without) or padded to ``chip_size``.
    seed:
        Seed of the augmentations (each item draws from it and the item index and an epoch counter).
    background_index:
        Model class index that valid unlabelled pixels (label 0) become (``prepare_data``'s
        background rule); ``None``: they stay void.
    cache_bytes:
        Decoded chips are kept in memory up to this many bytes (per process), so an epoch
        after the first reads no file: opening and decoding a chip's image and label
        rasters took about 80 % of the time of an item (``docs/design.md``). 0: no cache.
    """

    #: Default of ``cache_bytes``: 2 GiB (a 256 px, 3-band chip takes about 1.1 MB).
    CACHE_BYTES = 2 * 2 ** 30

    def __init__(self, chips: list[ChipRecord], class_table: ClassTable, band_stats: BandStats, n_masks: int,
                 chip_size: int, band_indices: Sequence[int] | None = None, transforms: Sequence | None = None,
                 seed: int = 42, background_index: int | None = None,
                 chip_shapes: Sequence[tuple[int, int]] | None = None, cache_bytes: int | None = None):
        self.chips = list(chips)
        self.class_table = class_table
        self.band_stats = band_stats
        self.n_masks = int(n_masks)
        self.chip_size = int(chip_size)
        self.band_indices = list(band_indices) if band_indices is not None else None
        self.transforms = list(transforms or [])
        self.seed = int(seed)
        self.background_index = background_index
        self._index_lut = class_table.index_lut()
        self._draws = 0
        self.cache_bytes = self.CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        self._cache: dict[int, Sample] = {}
        self._cached_bytes = 0
        #: (chip index, crop window (row, col) or None for a random crop / the whole chip) of each item
        self.items: list[tuple[int, tuple[int, int] | None]] = []
        if chip_shapes is not None and len(chip_shapes) != len(self.chips):
            raise ArgumentError(f"chip_shapes has {len(chip_shapes)} entries for {len(self.chips)} chips.")
        for i in range(len(self.chips)):
            starts = crop_starts(chip_shapes[i], self.chip_size) if chip_shapes is not None else [(0, 0)]
            if len(starts) == 1 or self.transforms:
                self.items += [(i, None)] * len(starts)
            else:
                self.items += [(i, rc) for rc in starts]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)  # worker processes started by spawning fill their own cache
        state["_cache"], state["_cached_bytes"] = {}, 0
        return state

    @property
    def n_chips(self) -> int:
        """Number of chips (items are crops of them)."""
        return len(self.chips)

    def __len__(self) -> int:
        return len(self.items)

    def load_sample(self, i: int) -> Sample:
        """The raw :class:`Sample` of chip ``i`` (no transforms): a copy of the cached one, or read from disk."""
        cached = self._cache.get(i)
        if cached is not None:
            return Sample(cached.image.copy(), cached.class_index.astype(np.int64), cached.instance.copy(),
                          cached.valid.copy())
        sample = self._read_sample(i)
        index_dtype = _index_dtype(self.class_table.n_classes)
        size = (sample.image.nbytes + sample.class_index.size * np.dtype(index_dtype).itemsize
                + sample.instance.nbytes + sample.valid.nbytes)
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[i] = Sample(sample.image.copy(), sample.class_index.astype(index_dtype),
                                    sample.instance.copy(), sample.valid.copy())
            self._cached_bytes += size
        return sample

    def _read_sample(self, i: int) -> Sample:
        chip = self.chips[i]
        image, valid = read_chip_image(chip, self.band_indices)
        class_index, instance = read_chip_labels(chip, self.class_table, self._index_lut)
        if image.shape[1:] != class_index.shape:
            raise DataError(f"Image {chip.image} is {image.shape[2]} x {image.shape[1]} px but its label {chip.label} "
                            f"is {class_index.shape[1]} x {class_index.shape[0]}. Re-export the training data.")
        class_index[~valid] = 0
        instance[~valid] = 0
        if self.background_index is not None:
            class_index[(class_index == 0) & valid] = self.background_index
        return Sample(image, class_index, instance, valid)

    def __getitem__(self, i: int):
        import torch

        chip, window = self.items[int(i)]
        sample = self.load_sample(chip)
        if window is not None:
            sample = sample.window(window[0], window[1], self.chip_size, self.chip_size)
        if self.transforms:
            # A fresh generator per draw: different augmentations every epoch, reproducible from the seed
            # (worker processes add their torch seed so they do not repeat each other).
            worker = torch.utils.data.get_worker_info()
            wseed = worker.seed % (2 ** 32) if worker is not None else 0
            self._draws += 1
            rng = np.random.default_rng([self.seed, int(i), self._draws, wseed])
            for t in self.transforms:
                sample = t(sample, rng)
            sample = crop_or_pad(sample, self.chip_size, rng)
        else:
            sample = crop_or_pad(sample, self.chip_size, None)
        image = normalize(sample.image, self.band_stats, sample.valid)
        target = target_from_panoptic(sample.class_index, sample.instance, sample.valid, self.class_table,
                                      self.n_masks)
        return torch.from_numpy(np.ascontiguousarray(image)), target
