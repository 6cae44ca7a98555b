"""Drawing: image chips as RGB and panoptic overlays (stuff tinted by class colour, things outlined)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .data.classes import ClassTable

__all__ = ["denormalize", "image_to_rgb", "show_panoptic", "panoptic_overlay", "instance_colors", "add_legend"]


def denormalize(image, stats) -> np.ndarray:
    """Undo :func:`geomax.data.normalize.normalize`: (bands, H, W) normalised values -> band values."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    shape = (-1, 1, 1)
    return image * stats.std.astype(np.float32).reshape(shape) + stats.mean.astype(np.float32).reshape(shape)


def image_to_rgb(image, stats=None, rgb_bands: Sequence[int] | None = None, valid=None,
                 percentiles=(2.0, 98.0)) -> np.ndarray:
    """Turn a (bands, H, W) chip of raw band values into an (H, W, 3) float RGB image in [0, 1].

    Parameters
    ----------
    image:
        (bands, H, W) numpy array or torch tensor of band values (use :func:`denormalize`
        first for a normalised training batch).
    stats:
        Optional :class:`geomax.data.normalize.BandStats`: each band is stretched over
        mean +- 2.5 std (within min..max) of the dataset, so all chips share one colour
        scale. Without it each band is stretched between ``percentiles`` of the chip.
    rgb_bands:
        0-based band indices drawn as red, green, blue (default: 0, 1, 2, or band 0 as grey).
    valid:
        Optional (H, W) bool; invalid pixels are drawn black and ignored by the stretch.
    percentiles:
        Stretch of a chip without ``stats``.
    """
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    n = image.shape[0]
    if rgb_bands is None:
        rgb_bands = [0, 1, 2] if n >= 3 else [0, 0, 0]
    rgb_bands = [int(b) for b in rgb_bands]
    rgb = np.stack([image[b] for b in rgb_bands], axis=-1)
    mask = np.ones(rgb.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    out = np.zeros_like(rgb)
    for k, b in enumerate(rgb_bands):
        band = rgb[..., k]
        if stats is not None and b < stats.n_bands:
            lo = max(stats.mean[b] - 2.5 * stats.std[b], stats.min[b])
            hi = min(stats.mean[b] + 2.5 * stats.std[b], stats.max[b])
        else:
            vals = band[mask]
            if vals.size == 0:
                continue
            lo, hi = np.percentile(vals, percentiles)
        if hi <= lo:
            hi = lo + 1e-6
        out[..., k] = np.clip((band - lo) / (hi - lo), 0, 1)
    out[~mask] = 0
    return out


def instance_colors(n: int, seed: int = 3) -> np.ndarray:
    """(n + 1, 3) float colours for instance ids 0..n (0 unused), bright and well spread."""
    import colorsys

    rng = np.random.default_rng(seed)
    hues = (np.arange(n + 1) * 0.618033988749895 + rng.random()) % 1.0
    cols = np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float32)
    cols[0] = 0
    return cols


def _as_rgb(image, hw) -> np.ndarray:
    """Accept (H, W, 3) floats in [0, 1], (H, W, 3) uint8, or a (bands, H, W) chip (stretched)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[:2] == tuple(hw) and image.shape[2] == 3:
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        if image.dtype.kind == "f" and image.min() >= 0 and image.max() <= 1:
            return image.astype(np.float32).copy()
        return image_to_rgb(np.moveaxis(image, -1, 0))
    return image_to_rgb(image)


def _boundaries(label_map: np.ndarray) -> np.ndarray:
    b = np.zeros(label_map.shape, bool)
    b[1:, :] |= label_map[1:, :] != label_map[:-1, :]
    b[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    b[:, 1:] |= label_map[:, 1:] != label_map[:, :-1]
    b[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    return b


def panoptic_overlay(image_rgb, class_map, instance_map, class_table: ClassTable, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) float image: stuff tinted by class colour, thing instances tinted and outlined in their own colour."""
    class_map = np.asarray(class_map)
    instance_map = np.asarray(instance_map)
    h, w = class_map.shape
    base = np.full((h, w, 3), 0.5, np.float32) if image_rgb is None else _as_rgb(image_rgb, (h, w))
    colours = np.zeros((max(class_table.values + [int(class_map.max())]) + 1, 3), np.float32)
    for c in class_table:
        colours[c.value] = np.array(c.color, np.float32) / 255.0
    labelled = class_map > 0
    is_thing_value = np.zeros(colours.shape[0], bool)
    is_thing_value[class_table.thing_values] = True
    things = labelled & is_thing_value[class_map] & (instance_map > 0)
    out = base
    tint = colours[class_map]
    inst_cols = instance_colors(int(instance_map.max()) if instance_map.size else 0)
    tint[things] = inst_cols[instance_map[things]]
    out[labelled] = (1 - alpha) * base[labelled] + alpha * tint[labelled]
    edge = _boundaries(np.where(things, instance_map, 0)) & things
    out[edge] = inst_cols[instance_map[edge]]
    return np.clip(out, 0, 1)


def add_legend(fig, class_table: ClassTable, values=None) -> None:
    """Class legend (colour, name, thing/stuff) at the bottom of a figure; ``values`` limits it to those classes."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c.color_fraction, edgecolor="k",
                     label=f"{c.name} ({'thing' if c.is_thing else 'stuff'})")
               for c in class_table if values is None or c.value in values]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False, fontsize=9)


def show_panoptic(image_rgb, class_map, instance_map, class_table: ClassTable | None = None, ax=None,
                  title: str | None = None, alpha: float = 0.45, legend: bool = True):
    """Draw a panoptic map over an image.

    Parameters
    ----------
    image_rgb:
        (H, W, 3) float RGB in [0, 1] (see :func:`image_to_rgb`) or ``None`` for a grey background.
    class_map:
        (H, W) class **Values** (0 = void).
    instance_map:
        (H, W) instance ids (0 = stuff / void).
    class_table:
        The classes (colours, names, things). Without it classes get palette colours and all are stuff.
    ax:
        Matplotlib axes (default: a new figure).
    title:
        Axes title.
    alpha:
        Overlay opacity.
    legend:
        Add a legend of the classes present.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    class_map = np.asarray(class_map)
    if class_table is None:
        vals = sorted(int(v) for v in np.unique(class_map) if v > 0)
        class_table = ClassTable.from_lists([f"class_{v}" for v in vals], values=vals) if vals else ClassTable([])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(panoptic_overlay(image_rgb, class_map, np.asarray(instance_map), class_table, alpha))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        from matplotlib.patches import Patch

        present = set(np.unique(class_map).tolist())
        handles = [Patch(facecolor=c.color_fraction, edgecolor="k", label=c.name)
                   for c in class_table if c.value in present]
        if handles:
            ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)
    return ax
