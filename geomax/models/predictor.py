"""``PanopticPredictor``: a trained network as a :class:`~geomax.inference.predictor.TilePredictor`.

Normalises raw raster values with the model's band statistics, pads to the
network's input multiple, runs the network (bfloat16 autocast on CUDA and on a CPU with
native bfloat16, :mod:`geomax.models.precision`) and
post-processes to panoptic results cropped back to the tile. It needs no fastai
``Learner``: :func:`geomax.models.loading.load_predictor` builds it from a package,
and :class:`~geomax.models.learner.MaXDeepLab` keeps one over the network it trains.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..config import PostprocessConfig, TilingConfig
from ..data.image_io import read_image
from ..data.normalize import BandStats, normalize
from ..errors import InputMismatchError
from ..inference.predictor import TilePredictor
from ..panoptic import PanopticResult
from .maxdeeplab import INPUT_MULTIPLE, pad_to_multiple
from .postprocess import PanopticPostProcessor
from .precision import autocast, check_mode
from .state import ModelState

__all__ = ["PanopticPredictor"]


class PanopticPredictor(TilePredictor):
    """Network + post-processor + band statistics: panoptic results for raw tiles or images.

    Parameters
    ----------
    network:
        The MaX-DeepLab network (shared, not copied: a learner that trains it and its
        predictor see the same weights).
    state:
        The model's :class:`~geomax.models.state.ModelState` (classes, bands, statistics,
        post-processing config). The learner updates it when it trains.
    mixed_precision:
        ``"auto"`` (bfloat16 autocast where the device computes it natively) or ``"off"``
        (float32); see :mod:`geomax.models.precision`. An attribute: set it to change it.
    """

    tile_multiple = INPUT_MULTIPLE

    def __init__(self, network: torch.nn.Module, state: ModelState, mixed_precision: str = "auto"):
        self.network = network
        self.state = state
        self.mixed_precision = check_mode(mixed_precision)
        self._post: PanopticPostProcessor | None = None
        self._post_config: PostprocessConfig | None = None

    # ---- TilePredictor members --------------------------------------------------------
    @property
    def n_bands(self) -> int:  # type: ignore[override]
        return self.state.n_bands

    @property
    def class_table(self):  # type: ignore[override]
        return self.state.class_table

    @property
    def band_names(self) -> list[str]:  # type: ignore[override]
        return list(self.state.band_names)

    @property
    def chip_size(self) -> int:  # type: ignore[override]
        return int(self.state.chip_size)

    @property
    def saved_tiling(self) -> TilingConfig:  # type: ignore[override]
        return self.state.tiling

    @property
    def band_stats(self) -> BandStats:  # type: ignore[override]
        return self.state.band_stats

    @property
    def extract_bands(self) -> list[int]:  # type: ignore[override]
        return [int(b) for b in self.state.extract_bands]

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ---- post-processing -------------------------------------------------------------
    def postprocessor(self, **options) -> PanopticPostProcessor:
        """The post-processor of the model's config, with per-call ``options`` overriding it."""
        config = self.state.postprocess.replace(**options) if options else self.state.postprocess
        if self._post is None or self._post_config != config or self._post.class_table is not self.class_table:
            self._post = PanopticPostProcessor(self.class_table, config)
            self._post_config = config
        return self._post

    # ---- forward ---------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> dict:
        """Raw network outputs (float32) for normalised images of any size (padded to the input multiple)."""
        net = self.network
        was_training = net.training
        net.eval()
        try:
            padded, _ = pad_to_multiple(image.to(self.device), self.tile_multiple)
            with autocast(self.device, self.mixed_precision):
                out = net(padded)
            return {k: v.float() for k, v in out.items()}
        finally:
            net.train(was_training)

    def predict_tiles(self, tiles: np.ndarray, valid: np.ndarray | None = None, windows: Sequence | None = None,
                      **options) -> list[PanopticResult]:
        """Panoptic results for a batch of raw raster tiles.

        Parameters
        ----------
        tiles:
            (B, bands, h, w) raw pixel values, bands in the model's band order.
        valid:
            (B, h, w) bool, False on no-data pixels (they come out as void, class 0).
        windows:
            The tiles' raster windows (not needed by the network).
        **options:
            Post-processing settings overriding the model's for this call.
        """
        tiles = np.asarray(tiles)
        if tiles.ndim != 4 or tiles.shape[1] != self.n_bands:
            raise InputMismatchError(f"Expected tiles of shape (B, {self.n_bands}, h, w), got {tiles.shape}.")
        post = self.postprocessor(**options)
        h, w = tiles.shape[-2:]
        pred = self.forward(torch.from_numpy(normalize(tiles, self.state.band_stats, valid)))
        valid_t = None if valid is None else torch.from_numpy(np.asarray(valid, dtype=bool))
        ph, pw = (n + (-n) % self.tile_multiple for n in (h, w))
        results = post(pred, out_size=(ph, pw), valid=_pad_valid(valid_t, ph, pw, len(tiles), h, w))
        return [_crop_result(r, h, w) for r in results]

    def read_image(self, image, bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(array, valid)`` of a path or array in the model's bands, checked against the training data.

        See :func:`geomax.data.image_io.read_image`: a wrong band count or named bands in
        another order raise; a value range or data type unlike the training data's, or bands
        whose statistics suggest another order, warn.
        """
        return read_image(image, self.band_names, self.state.extract_bands, bands=bands,
                          band_stats=self.state.band_stats)

    def predict(self, image, *, bands: Sequence[int] | None = None, **options) -> PanopticResult:
        """Panoptic segmentation of one image (path or array, any size; ``bands``: 1-based bands of a file)."""
        array, valid = self.read_image(image, bands)
        return self.predict_tiles(array[None], valid[None], **options)[0]


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
