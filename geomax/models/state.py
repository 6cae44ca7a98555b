"""``ModelState``: everything a trained model is besides its weights, written and read in one place.

A model package's ``.emd`` is :meth:`ModelState.to_emd`; :meth:`ModelState.from_emd`
reads it back (configs checked: an unknown key is an error). The learner, the
light :class:`~geomax.models.predictor.PanopticPredictor`, ``evaluate`` and the Dask
workers all load models through :func:`geomax.models.loading.load_model_state`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..config import LossConfig, PostprocessConfig, TilingConfig, TrainConfig
from ..data.classes import ClassTable
from ..data.normalize import BandStats
from ..errors import ModelError

__all__ = ["ModelState"]


def _jsonable(obj):
    """Metrics dicts hold numpy scalars; make them plain JSON."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


@dataclass
class ModelState:
    """What a model needs besides its weights to be rebuilt, run and described.

    Attributes
    ----------
    network_config:
        The network's ``.config`` (variant, band and class counts, every NetworkConfig setting).
    class_table:
        Classes (Values, names, colours, thing flags).
    band_names, band_stats:
        Input bands in the model's order and their normalisation statistics.
    extract_bands:
        0-based source band indices the training chips were cut from (ArcGIS's ``ExtractBands``).
    chip_size:
        Training chip side in pixels.
    rgb_bands:
        Bands shown as red, green, blue in pictures (``None``: the first three).
    loss, postprocess:
        The loss and post-processing configs the model was built with.
    train:
        The recipe of the model's last training (``None`` before any ``fit``).
    tiling:
        Tiling settings saved with the model (defaults resolve from ``chip_size``).
    metrics, history:
        Validation metrics and per-epoch training history.
    """

    network_config: dict
    class_table: ClassTable
    band_names: list[str]
    band_stats: BandStats
    extract_bands: list[int]
    chip_size: int
    rgb_bands: list[int] | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    train: TrainConfig | None = None
    tiling: TilingConfig = field(default_factory=TilingConfig)
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    @property
    def backbone(self) -> str:
        """The network variant's name."""
        return str(self.network_config.get("variant"))

    @property
    def n_bands(self) -> int:
        return len(self.band_names)

    @property
    def fingerprint(self) -> str:
        """Short hash of what decides whether weights fit this model: network settings, classes, bands."""
        key = json.dumps({"network": self.network_config, "classes": self.class_table.to_dict(),
                          "bands": self.band_names}, sort_keys=True, default=str)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    def to_emd(self, model_file: str) -> dict:
        """The ``.emd`` dict (ArcGIS keys plus geomax's ``ModelParameters``)."""
        return {
            "Framework": "geomax-PyTorch",
            "ModelType": "PanopticSegmenter",
            "ModelName": "MaXDeepLab",
            "ModelConfiguration": "MaXDeepLab",
            "ModelFile": model_file,
            "InferenceFunction": "geomax",
            "GeomaxVersion": __version__,
            "ImageHeight": self.chip_size,
            "ImageWidth": self.chip_size,
            "ExtractBands": list(self.extract_bands),
            "ImageSpaceUsed": "MAP_SPACE",
            "IsMultispectral": len(self.band_names) != 3,
            **self.class_table.to_emd(),
            "ModelParameters": {
                "backbone": self.backbone,
                "network_config": dict(self.network_config),
                "loss_config": self.loss.to_dict(),
                "postprocess_config": self.postprocess.to_dict(),
                "train_config": self.train.to_dict() if self.train is not None else None,
                "tiling_config": self.tiling.to_dict(),
                "band_names": list(self.band_names),
                "band_stats": self.band_stats.to_dict(),
                "rgb_bands": self.rgb_bands,
            },
            "Metrics": _jsonable(self.metrics),
            "TrainingHistory": _jsonable(self.history),
        }

    @classmethod
    def from_emd(cls, emd: dict, source: str = "the model definition") -> "ModelState":
        """Read a state back from an ``.emd`` dict.

        Raises
        ------
        ModelError
            A required entry is missing.
        ArgumentError
            A saved config holds an unknown key.
        """
        params = emd.get("ModelParameters")
        if not isinstance(params, dict):
            raise ModelError(f"{source} has no ModelParameters; it is not a geomax model definition. Give the .emd "
                             "of a model geomax saved (not a training-data export's .emd).")
        for key in ("network_config", "band_names", "band_stats"):
            if key not in params:
                raise ModelError(f"{source} lacks ModelParameters.{key}; the model definition is incomplete. Save "
                                 "the model again with geomax (or restore the original .emd).")
        train = params.get("train_config")
        return cls(
            network_config=dict(params["network_config"]),
            class_table=ClassTable.from_emd(emd, source=source),
            band_names=[str(b) for b in params["band_names"]],
            band_stats=BandStats.from_dict(params["band_stats"]),
            extract_bands=[int(b) for b in emd.get("ExtractBands", range(len(params["band_names"])))],
            chip_size=int(emd.get("ImageHeight", TilingConfig.FALLBACK_TILE_SIZE)),
            rgb_bands=params.get("rgb_bands"),
            loss=LossConfig.from_dict(params.get("loss_config") or {}, source=source),
            postprocess=PostprocessConfig.from_dict(params.get("postprocess_config") or {}, source=source),
            train=TrainConfig.from_dict(train, source=source) if train else None,
            tiling=TilingConfig.from_dict(params.get("tiling_config") or {}, source=source),
            metrics=emd.get("Metrics") or {},
            history=list(emd.get("TrainingHistory") or []),
        )

    def with_options(self, **changes: Any) -> "ModelState":
        """A copy with other field values (configs are immutable; the class table is shared)."""
        from dataclasses import replace

        return replace(self, **changes)
