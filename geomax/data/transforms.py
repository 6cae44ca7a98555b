"""Joint augmentations of an image chip and its panoptic labels.

Transforms act on a :class:`Sample` *before* the target masks are built: the
image (raw band values), the class-index map, the instance map and the
validity mask move together, and the masks are made afterwards from the
transformed maps, so image and masks can never disagree.

A transform is any callable ``transform(sample, rng) -> sample`` where ``rng``
is a :class:`numpy.random.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError

__all__ = ["Sample", "RandomCrop", "CenterCrop", "Dihedral", "RandomScale", "Brightness", "default_transforms",
           "crop_or_pad"]


@dataclass
class Sample:
    """One chip before tensor conversion.

    Attributes
    ----------
    image:
        (bands, H, W) float32 raw band values.
    class_index:
        (H, W) int64 model class index (0 = void / no data).
    instance:
        (H, W) int32 instance id, unique within the chip across thing classes (0 = none).
    valid:
        (H, W) bool, False on no-data pixels.
    """

    image: np.ndarray
    class_index: np.ndarray
    instance: np.ndarray
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.class_index.shape

    def window(self, r0: int, c0: int, h: int, w: int) -> "Sample":
        return Sample(self.image[:, r0:r0 + h, c0:c0 + w], self.class_index[r0:r0 + h, c0:c0 + w],
                      self.instance[r0:r0 + h, c0:c0 + w], self.valid[r0:r0 + h, c0:c0 + w])


def crop_or_pad(sample: Sample, size, rng: np.random.Generator | None) -> Sample:
    """Bring a sample to ``size`` (int or (h, w)): crop (random when ``rng`` is given, else centred) or pad with no-data."""
    sh, sw = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    h, w = sample.shape
    if h > sh or w > sw:
        ch, cw = min(h, sh), min(w, sw)
        if rng is None:
            r0, c0 = (h - ch) // 2, (w - cw) // 2
        else:
            r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        sample = sample.window(r0, c0, ch, cw)
        h, w = sample.shape
    if h < sh or w < sw:
        ph, pw = sh - h, sw - w
        pad2 = ((0, ph), (0, pw))
        sample = Sample(np.pad(sample.image, ((0, 0),) + pad2), np.pad(sample.class_index, pad2),
                        np.pad(sample.instance, pad2), np.pad(sample.valid, pad2))
    return sample


class RandomCrop:
    """Random ``size`` x ``size`` crop (pads with no-data if the chip is smaller)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return crop_or_pad(sample, self.size, rng)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class CenterCrop(RandomCrop):
    """Centred ``size`` x ``size`` crop."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return crop_or_pad(sample, self.size, None)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class Dihedral:
    """One of the 8 flips / quarter turns, at random (imagery seen from above has no 'up')."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.shape
        k = int(rng.integers(0, 8))
        if h != w and k % 2 == 1:
            k -= 1  # quarter turns would swap height and width of a non-square chip

        def f(a):
            a = np.rot90(a, k % 4, axes=(-2, -1))
            return np.flip(a, -1) if k >= 4 else a

        return Sample(np.ascontiguousarray(f(sample.image)), np.ascontiguousarray(f(sample.class_index)),
                      np.ascontiguousarray(f(sample.instance)), np.ascontiguousarray(f(sample.valid)))

    def __repr__(self) -> str:
        return "Dihedral()"


class RandomScale:
    """Zoom by a factor in ``[min_scale, max_scale]`` with probability ``p``; keeps the chip size.

    The image is resampled bilinearly, the label maps by nearest neighbour; zooming out pads with no-data.
    """

    def __init__(self, min_scale: float = 0.9, max_scale: float = 1.1, p: float = 0.5):
        if not 0 < min_scale <= max_scale:
            raise ArgumentError(f"RandomScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}. "
                                "Pass a positive min_scale no larger than max_scale (e.g. 0.9, 1.1).")
        self.min_scale, self.max_scale, self.p = float(min_scale), float(max_scale), float(p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        import torch
        import torch.nn.functional as F

        s = float(rng.uniform(self.min_scale, self.max_scale))
        h, w = sample.shape
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        if (nh, nw) == (h, w):
            return sample
        img = F.interpolate(torch.from_numpy(np.ascontiguousarray(sample.image))[None].float(), size=(nh, nw),
                            mode="bilinear", align_corners=False)[0].numpy()
        maps = np.stack([sample.class_index.astype(np.int64), sample.instance.astype(np.int64),
                         sample.valid.astype(np.int64)])
        maps = F.interpolate(torch.from_numpy(maps)[None].double(), size=(nh, nw), mode="nearest")[0].long().numpy()
        out = Sample(img, maps[0], maps[1].astype(np.int32), maps[2].astype(bool))
        return crop_or_pad(out, (h, w), rng)

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale}, p={self.p})"


class Brightness:
    """Multiply all bands by ``1 + u``, ``u`` uniform in ``[-max_delta, max_delta]``, with probability ``p``."""

    def __init__(self, max_delta: float = 0.1, p: float = 0.5):
        self.max_delta, self.p = float(max_delta), float(p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        factor = np.float32(1.0 + rng.uniform(-self.max_delta, self.max_delta))
        return Sample(sample.image * factor, sample.class_index, sample.instance, sample.valid)

    def __repr__(self) -> str:
        return f"Brightness({self.max_delta}, p={self.p})"


def default_transforms(chip_size: int) -> list:
    """Training augmentations: random crop to ``chip_size``, the 8 dihedral flips / turns, mild zoom and brightness."""
    return [RandomCrop(chip_size), Dihedral(), RandomScale(0.9, 1.1, p=0.5), Brightness(0.1, p=0.5)]
