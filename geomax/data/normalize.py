"""Per-band statistics and the one normalisation used by training, ``predict`` and ``predict_raster``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["BandStats", "RunningBandStats", "normalize"]


@dataclass
class BandStats:
    """Statistics of every band of the training data (valid pixels only).

    Attributes
    ----------
    names:
        Band names, in band order.
    min, max, mean, std:
        One float per band.
    """

    names: list[str]
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        for key in ("min", "max", "mean", "std"):
            setattr(self, key, np.asarray(getattr(self, key), dtype=np.float64).reshape(-1))
        n = len(self.names)
        if not all(len(getattr(self, k)) == n for k in ("min", "max", "mean", "std")):
            raise DataError(f"Band statistics disagree in length with the {n} band names {self.names}. Give one "
                            "min, max, mean and std per band name.")
        # A constant band would divide by zero: treat its spread as 1.
        self.std = np.where(np.isfinite(self.std) & (self.std > 1e-12), self.std, 1.0)

    @property
    def n_bands(self) -> int:
        return len(self.names)

    def select(self, indices: Sequence[int]) -> "BandStats":
        """Statistics of a subset of the bands (0-based indices, in the given order)."""
        idx = list(indices)
        return BandStats([self.names[i] for i in idx], self.min[idx], self.max[idx], self.mean[idx], self.std[idx])

    def to_emd(self) -> list[dict]:
        """The ArcGIS ``AllTilesStats`` list (``BandName``, ``Min``, ``Max``, ``Mean``, ``StdDev``)."""
        return [
            {"BandName": n, "Min": float(a), "Max": float(b), "Mean": float(m), "StdDev": float(s)}
            for n, a, b, m, s in zip(self.names, self.min, self.max, self.mean, self.std)
        ]

    @classmethod
    def from_emd(cls, tiles_stats: list[dict], names: Sequence[str] | None = None,
                 source: str = "esri_model_definition.emd") -> "BandStats":
        """Read an ``AllTilesStats`` list."""
        try:
            mins = [float(s["Min"]) for s in tiles_stats]
            maxs = [float(s["Max"]) for s in tiles_stats]
            means = [float(s["Mean"]) for s in tiles_stats]
            stds = [float(s.get("StdDev", s.get("Std", 1.0))) for s in tiles_stats]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: 'AllTilesStats' entries need Min, Max, Mean and StdDev ({exc}). Re-export "
                            "the training data (or restore the .emd) so every band has these numbers.") from exc
        if names is None or len(names) != len(tiles_stats):
            names = [s.get("BandName") or f"band_{i + 1}" for i, s in enumerate(tiles_stats)]
        return cls(list(names), np.asarray(mins), np.asarray(maxs), np.asarray(means), np.asarray(stds))

    def to_dict(self) -> dict:
        return {k: (list(getattr(self, k)) if k == "names" else [float(x) for x in getattr(self, k)])
                for k in ("names", "min", "max", "mean", "std")}

    @classmethod
    def from_dict(cls, d: dict) -> "BandStats":
        return cls(d["names"], d["min"], d["max"], d["mean"], d["std"])

    @staticmethod
    def combine(stats: Sequence["BandStats"], weights: Sequence[float]) -> "BandStats":
        """Pool statistics of several exports (weights: number of chips or pixels of each)."""
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = sum(wi * s.mean for wi, s in zip(w, stats))
        var = sum(wi * (s.std ** 2 + (s.mean - mean) ** 2) for wi, s in zip(w, stats))
        return BandStats(stats[0].names, np.min([s.min for s in stats], 0), np.max([s.max for s in stats], 0),
                         mean, np.sqrt(var))


class RunningBandStats:
    """Accumulates per-band count, sum, sum of squares, min and max over valid pixels (float64)."""

    def __init__(self, names: Sequence[str]):
        n = len(names)
        self.names = list(names)
        self.count = np.zeros(n, np.float64)
        self.sum = np.zeros(n, np.float64)
        self.sumsq = np.zeros(n, np.float64)
        self.min = np.full(n, np.inf)
        self.max = np.full(n, -np.inf)

    def update(self, image: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one (bands, H, W) image; ``valid`` (H, W) selects the pixels that count."""
        flat = image.reshape(image.shape[0], -1)
        if valid is not None:
            flat = flat[:, valid.reshape(-1)]
        if flat.shape[1] == 0:
            return
        flat = flat.astype(np.float64)
        self.count += flat.shape[1]
        self.sum += flat.sum(1)
        self.sumsq += np.square(flat).sum(1)
        self.min = np.minimum(self.min, flat.min(1))
        self.max = np.maximum(self.max, flat.max(1))

    def result(self) -> BandStats:
        """The statistics so far (zeros and unit spread for bands without valid pixels)."""
        n = np.maximum(self.count, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean ** 2, 0.0))
        mn = np.where(np.isfinite(self.min), self.min, 0.0)
        mx = np.where(np.isfinite(self.max), self.max, 0.0)
        return BandStats(self.names, mn, mx, mean, std)


def normalize(array, stats: BandStats, valid=None):
    """Normalise raw band values: ``(x - mean) / std`` per band, 0 on no-data pixels.

    Parameters
    ----------
    array:
        numpy array or torch tensor of raw values, bands on axis -3:
        (bands, H, W) or (B, bands, H, W).
    stats:
        Band statistics with the same number (and order) of bands.
    valid:
        Optional bool array (H, W) or (B, H, W); False pixels are set to 0.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        float32, same shape and type as the input.

    Raises
    ------
    DataError
        The band count differs from the statistics.
    """
    n = array.shape[-3]
    if n != stats.n_bands:
        raise DataError(
            f"The image has {n} bands but the band statistics describe {stats.n_bands} ({stats.names}). "
            "Select the same bands the model was trained on."
        )
    mean = stats.mean.astype(np.float32).reshape(-1, 1, 1)
    std = stats.std.astype(np.float32).reshape(-1, 1, 1)
    import torch

    if isinstance(array, torch.Tensor):
        m = torch.as_tensor(mean, device=array.device)
        s = torch.as_tensor(std, device=array.device)
        scaled = torch.nan_to_num((array.float() - m) / s, nan=0.0, posinf=0.0, neginf=0.0)
        if valid is not None:
            scaled = scaled * torch.as_tensor(valid, device=array.device).bool().unsqueeze(-3)
        return scaled
    out = (np.asarray(array, dtype=np.float32) - mean) / std
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    if valid is not None:
        out = out * np.expand_dims(np.asarray(valid, bool), -3)
    return out.astype(np.float32, copy=False)
