"""The per-tile predictor interface that large-raster inference drives, and an oracle.

:class:`TilePredictor` is the one interface :func:`~geomax.inference.predict_raster.predict_raster`
and :func:`~geomax.inference.distributed.predict_raster_distributed` use. A predictor
subclasses it explicitly and gives ``n_bands``, ``class_table`` and
``predict_tiles(tiles, valid, windows=None, **options)``; the optional members
(``band_names``, ``tile_multiple``, ``chip_size``) have their defaults on the base
class, so inference reads them directly. :func:`check_predictor` is the single check
that an object can be driven (raising :class:`~geomax.errors.ModelError` otherwise).

:class:`OracleTilePredictor` returns the ground truth of a label source instead
of a network prediction. It exists for tests and benchmarks of tiling,
stitching, writing and vectorising, and can imitate a model that only sees its
tile (``view="tile"``).
"""
from __future__ import annotations

import os
import time
from abc import abstractmethod
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import shapely
from rasterio.windows import Window
from scipy import ndimage

from ..config import TilingConfig
from ..data.classes import ClassTable
from ..data.normalize import BandStats
from ..errors import ArgumentError, ModelError
from ..panoptic import SEGMENT_COLUMNS, PanopticResult

__all__ = ["TilePredictor", "check_predictor", "OracleTilePredictor", "panoptic_from_maps"]


@runtime_checkable
class TilePredictor(Protocol):
    """What large-raster inference needs from a model; subclass it explicitly.

    Required members: ``n_bands``, ``class_table`` and :meth:`predict_tiles`. The other
    attributes are optional and default to the values below.

    Attributes
    ----------
    n_bands:
        Number of raster bands the predictor takes (required).
    class_table:
        Classes it predicts: class Values, names, colours, thing flags (required).
    band_names:
        Band names in the expected order; ``None`` when unknown (then band order is not checked).
    tile_multiple:
        Tile sides must be a multiple of this (a network's input multiple).
    chip_size:
        Side of the training chips; the default tile size is resolved from it
        (:meth:`geomax.config.TilingConfig.resolve`). ``None``: unknown.
    saved_tiling:
        Tiling settings the model carries with it (a saved model's
        :class:`~geomax.config.TilingConfig`): the base when the caller gives none.
        ``None``: the config's defaults.
    band_stats:
        Statistics of the training data per band (min, max, mean, std); when given,
        ``predict_raster`` compares a sample of the input with them and warns when the
        values or the band order do not look like the training data. ``None``: no check.
    extract_bands:
        0-based bands of the source raster the model reads (ArcGIS's ``ExtractBands``:
        the bands the training chips were cut from, in order). A raster with another band
        count than the model is read at these bands (``bands`` overrides); ``None``: such
        a raster is refused.
    """

    n_bands: int
    class_table: ClassTable
    band_names: Sequence[str] | None = None
    tile_multiple: int = 1
    chip_size: int | None = None
    saved_tiling: TilingConfig | None = None
    band_stats: BandStats | None = None
    extract_bands: Sequence[int] | None = None

    @abstractmethod
    def predict_tiles(self, tiles: np.ndarray, valid: np.ndarray, windows: Sequence[Window] | None = None,
                      **options) -> list[PanopticResult]:
        """Panoptic results for a batch of tiles, one per tile, each of the tile's size.

        Parameters
        ----------
        tiles:
            (B, bands, h, w) raw raster values (the raster's dtype; no-data pixels hold the fill value).
        valid:
            (B, h, w) bool, False on no-data pixels and outside the raster.
        windows:
            The tiles' raster windows (inference always passes them; a predictor that does
            not need them ignores them).
        **options:
            Per-call settings (for a network: post-processing thresholds); unknown keys
            should raise :class:`~geomax.errors.ArgumentError`.
        """


_REQUIRED = ("n_bands", "class_table", "predict_tiles")
_OPTIONAL = ("band_names", "tile_multiple", "chip_size", "saved_tiling", "band_stats")


def check_predictor(obj, what: str = "the predictor") -> TilePredictor:
    """Return ``obj`` if inference can drive it, else raise :class:`ModelError` saying why.

    Parameters
    ----------
    obj:
        The object to check: an instance of a :class:`TilePredictor` subclass, or an
        object with all of its members.
    what:
        How the error message names the object (e.g. ``"the predictor factory's result"``).

    Raises
    ------
    ModelError
        ``obj`` is a model path (load it first), lacks a required member, or lacks an
        optional member without subclassing :class:`TilePredictor` (which gives the defaults).
    """
    if isinstance(obj, (str, os.PathLike)):
        state = "" if os.path.exists(obj) else " (it does not exist)"
        raise ModelError(f"{what} is the model path '{os.fspath(obj)}'{state}; geomax.inference takes a loaded "
                         "TilePredictor. Load the model first: geomax.workflows.predict_raster accepts model "
                         "paths, or use MaXDeepLab.from_model(path).")
    missing = [name for name in _REQUIRED if not hasattr(obj, name)]
    if "predict_tiles" not in missing and not callable(getattr(obj, "predict_tiles", None)):
        missing.append("predict_tiles (a method)")
    if missing:
        raise ModelError(f"{what} ({type(obj).__name__}) is not a per-tile predictor: it lacks {missing}. Pass an "
                         "instance of a geomax.inference.predictor.TilePredictor subclass (n_bands, class_table, "
                         "predict_tiles(tiles, valid, windows=None, **options)), such as a loaded model.")
    if not isinstance(obj, TilePredictor):
        absent = [name for name in _OPTIONAL if not hasattr(obj, name)]
        raise ModelError(f"{what} ({type(obj).__name__}) lacks the optional predictor members {absent}. Subclass "
                         "geomax.inference.predictor.TilePredictor, which gives them their defaults, or define them.")
    return obj


def panoptic_from_maps(class_map: np.ndarray, instance_map: np.ndarray, confidence: np.ndarray,
                       class_table: ClassTable) -> PanopticResult:
    """Build a :class:`PanopticResult` (segment map and table) from a class map and an instance map.

    A segment is a (class, instance) pair for things and a class for stuff;
    class Value 0 is void.
    """
    class_map = np.asarray(class_map, dtype=np.int32)
    instance_map = np.asarray(instance_map, dtype=np.int32)
    key = class_map.astype(np.int64) * (int(instance_map.max(initial=0)) + 1) + instance_map
    keys, first, inv, counts = np.unique(key.ravel(), return_index=True, return_inverse=True, return_counts=True)
    inv = inv.reshape(class_map.shape)
    flat_cls = class_map.ravel()[first]
    flat_inst = instance_map.ravel()[first]
    seg_ids = np.zeros(len(keys), dtype=np.int32)
    labelled = flat_cls > 0
    seg_ids[labelled] = np.arange(1, labelled.sum() + 1, dtype=np.int32)
    segment_map = seg_ids[inv]
    scores = np.bincount(inv.ravel(), weights=np.asarray(confidence, dtype=np.float64).ravel(),
                         minlength=len(keys)) / np.maximum(counts, 1)
    thing_vals = set(class_table.thing_values)
    names = {c.value: c.name for c in class_table}
    rows = [(int(seg_ids[k]), int(flat_cls[k]), names.get(int(flat_cls[k]), f"class_{int(flat_cls[k])}"),
             bool(int(flat_cls[k]) in thing_vals and flat_inst[k] > 0), float(scores[k]), int(counts[k]))
            for k in np.flatnonzero(labelled)]
    segments = pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
    conf = np.where(class_map > 0, confidence, 0).astype(np.float32)
    return PanopticResult(class_map, instance_map, segment_map, conf, segments)


class OracleTilePredictor(TilePredictor):
    """A per-tile predictor that returns the ground truth of a label source.

    It needs the tiles' raster ``windows`` (which inference always passes) to know
    where each tile lies.

    Parameters
    ----------
    labels:
        Ground truth, one of: a ``(class_map, instance_map)`` pair of full-raster
        arrays (class Values, instance ids); a GeoDataFrame of label polygons in
        the raster's CRS (rasterised per tile with
        :func:`geomax.data.rasterize.rasterize_labels`, so memory stays flat);
        or the path of a vector file holding them.
    class_table:
        The classes.
    n_bands:
        Number of bands the oracle claims to take.
    band_names:
        Band names it claims to expect (``None``: unknown).
    transform:
        Affine transform of the raster (needed for vector labels).
    class_field:
        Class field of vector labels.
    view:
        ``"global"``: an instance keeps its identity inside a tile (multi-part
        objects stay one instance). ``"tile"``: like a model that only sees its
        tile, each 4-connected piece of an object inside the tile is its own
        instance. In both views instance ids restart at 1 in every tile, in a
        shuffled order, and objects are cut at the tile's edges.
    compute_seconds:
        Artificial compute time per tile (sleep), to stand in for a network.
    tile_multiple:
        Tile sizes must be a multiple of this (as a model's output stride requires).
    seed:
        Seed of the per-tile id shuffling.
    """

    def __init__(self, labels, class_table: ClassTable, n_bands: int = 3, band_names: Sequence[str] | None = None,
                 transform=None, class_field: str = "class_name", view: str = "global",
                 compute_seconds: float = 0.0, tile_multiple: int = 1, seed: int = 0):
        if view not in ("global", "tile"):
            raise ArgumentError(f"view must be 'global' or 'tile', got {view!r}.")
        self.class_table = class_table
        self.n_bands = int(n_bands)
        self.band_names = list(band_names) if band_names else None
        self.transform = transform
        self.class_field = class_field
        self.view = view
        self.compute_seconds = float(compute_seconds)
        self.tile_multiple = int(tile_multiple)
        self.device = "cpu"
        self._rng = np.random.default_rng(seed)
        self._arrays = None
        self._gdf = None
        if isinstance(labels, (str, os.PathLike)):
            import geopandas as gpd

            labels = gpd.read_file(labels)
        if isinstance(labels, tuple):
            self._arrays = (np.asarray(labels[0]), np.asarray(labels[1]))
        else:
            if transform is None:
                raise ArgumentError("OracleTilePredictor needs transform= (the raster's) for vector labels. Pass "
                                    "transform=src.transform of the raster the labels cover.")
            self._gdf = labels
            self._sindex = labels.sindex

    def _truth(self, window) -> tuple[np.ndarray, np.ndarray]:
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        if self._arrays is not None:
            cls_full, inst_full = self._arrays
            cls = np.zeros((h, w), np.int32)
            inst = np.zeros((h, w), np.int32)
            rr0, cc0 = max(r0, 0), max(c0, 0)
            rr1, cc1 = min(r0 + h, cls_full.shape[0]), min(c0 + w, cls_full.shape[1])
            if rr1 > rr0 and cc1 > cc0:
                sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
                cls[sl] = cls_full[rr0:rr1, cc0:cc1]
                inst[sl] = inst_full[rr0:rr1, cc0:cc1]
            return cls, inst
        from rasterio.windows import bounds
        from rasterio.windows import transform as window_transform
        from shapely.geometry import box

        from ..data.rasterize import rasterize_labels

        win_box = box(*bounds(window, self.transform))
        idx = np.sort(self._sindex.query(win_box))
        assert self._gdf is not None  # set with the spatial index for vector labels
        sub = self._gdf.iloc[idx].copy()
        # clip to the window (grown by a pixel) so rasterising costs what the tile holds, not what the
        # features hold: large stuff polygons span the whole scene
        pad = 2 * max(abs(self.transform.a), abs(self.transform.e))
        x0, y0, x1, y1 = win_box.buffer(pad, join_style="mitre").bounds
        sub[sub.geometry.name] = shapely.clip_by_rect(sub.geometry.values, x0, y0, x1, y1)
        return rasterize_labels(sub, self.class_field, self.class_table,
                                window_transform(window, self.transform), (h, w))

    def _renumber(self, cls: np.ndarray, inst: np.ndarray) -> np.ndarray:
        thing = np.isin(cls, self.class_table.thing_values) & (inst > 0)
        if self.view == "tile":
            pieces = np.zeros(inst.shape, np.int64)
            n_total = 0
            thing_inst = np.where(thing, inst, 0)
            for i, box in enumerate(ndimage.find_objects(thing_inst), start=1):
                if box is None:
                    continue
                comp, n = ndimage.label(thing_inst[box] == i)
                sub = pieces[box]
                sub[comp > 0] = comp[comp > 0] + n_total
                n_total += n
            inst = pieces
        ids = np.unique(inst[thing])
        lut = np.zeros(int(inst.max(initial=0)) + 1, np.int32)
        lut[ids] = self._rng.permutation(len(ids)).astype(np.int32) + 1
        return np.where(thing, lut[inst], 0).astype(np.int32)

    def _confidence(self, cls: np.ndarray, inst: np.ndarray) -> np.ndarray:
        # a deterministic confidence per class (and, for things, per instance) in [0.55, 0.95]
        phase = (cls.astype(np.float64) * 0.37 + inst * 0.618) % 1.0
        return np.where(cls > 0, 0.55 + 0.4 * phase, 0.0).astype(np.float32)

    def predict_tiles(self, tiles: np.ndarray, valid: np.ndarray, windows: Sequence[Window] | None = None,
                      **options) -> list[PanopticResult]:
        """Ground truth of every tile (void where ``valid`` is False); the oracle takes no ``options``."""
        if options:
            raise ArgumentError(f"OracleTilePredictor.predict_tiles takes no options, got {sorted(options)}. "
                                "Remove the options (the oracle ignores post-processing settings).")
        if windows is None:
            raise ArgumentError("OracleTilePredictor.predict_tiles needs windows= (predict_raster passes them). "
                                "Pass the tiles' windows, or run it through predict_raster.")
        if tiles.shape[1] != self.n_bands:
            raise ArgumentError(f"expected {self.n_bands} bands, got {tiles.shape[1]}")
        out = []
        for k, window in enumerate(windows):
            t0 = time.perf_counter()
            cls, inst = self._truth(window)
            cls = np.where(valid[k], cls, 0)
            inst = np.where(valid[k], inst, 0)
            conf = self._confidence(cls, inst)
            inst = self._renumber(cls, inst)
            out.append(panoptic_from_maps(cls, inst, conf, self.class_table))
            if self.compute_seconds > 0:
                time.sleep(max(0.0, self.compute_seconds - (time.perf_counter() - t0)))
        return out
