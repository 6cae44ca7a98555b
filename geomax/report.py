"""The demo's self-contained HTML report: loss curve, metrics, pictures of the test scene, timings.

Every picture is embedded in the HTML (base64 PNG), so the report is one file
that opens anywhere; the same pictures are also written as PNG files beside it.
Scene pictures are drawn from a downsampled overview (decimated reads), so a big
test scene never has to be read whole.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.classes import ClassTable

__all__ = ["write_demo_report", "scene_overview", "plot_losses", "plot_scene_panels"]


def _png_bytes(fig, dpi: int = 90) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _stretch(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3, H, W) raw values -> (H, W, 3) float in [0, 1], 2-98 % stretch per band over valid pixels."""
    out = np.zeros(image.shape[1:] + (3,), np.float32)
    for b in range(3):
        band = image[b].astype(np.float32)
        vals = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(vals, (2, 98)) if vals.size else (0.0, 1.0)
        out[..., b] = np.clip((band - lo) / max(float(hi - lo), 1e-6), 0, 1)
    out[~valid] = 1.0
    return out


def scene_overview(
    image_raster: str | os.PathLike,
    prediction_raster: str | os.PathLike | None = None,
    reference_labels: str | os.PathLike | None = None,
    class_table: ClassTable | None = None,
    class_field: str | None = None,
    max_size: int = 768,
    rgb_bands: Sequence[int] | None = None,
) -> dict:
    """Downsampled arrays of a scene for drawing: RGB image, reference and prediction maps.

    Parameters
    ----------
    image_raster:
        The input image (any band count; ``rgb_bands`` (1-based) pick the display
        bands, default the first three, or the single band as grey).
    prediction_raster:
        Panoptic GeoTIFF (band 1 class Value, band 2 instance id), optional.
    reference_labels:
        Vector labels, burned on the overview grid, optional (needs ``class_table``).
    class_field:
        Class field of the labels (default: detected as in :mod:`geomax.evaluate`).
    max_size:
        Longest side of the overview in pixels.

    Returns
    -------
    dict
        ``rgb`` (h, w, 3) float, ``valid`` (h, w) bool and, when asked,
        ``pred_class`` / ``pred_instance`` and ``gt_class`` / ``gt_instance`` (h, w) int32.
    """
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(image_raster) as src:
        scale = max(1.0, max(src.width, src.height) / float(max_size))
        h, w = max(1, int(round(src.height / scale))), max(1, int(round(src.width / scale)))
        if rgb_bands is None:
            rgb_bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        image = src.read(list(rgb_bands), out_shape=(3, h, w), resampling=Resampling.average)
        valid = src.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
        transform = src.transform * src.transform.scale(src.width / w, src.height / h)
        crs = src.crs
    out: dict[str, Any] = {"rgb": _stretch(image, valid), "valid": valid, "scale": scale}
    if prediction_raster is not None:
        with rasterio.open(prediction_raster) as src:
            out["pred_class"] = src.read(1, out_shape=(h, w), resampling=Resampling.nearest).astype(np.int32)
            out["pred_instance"] = src.read(2, out_shape=(h, w), resampling=Resampling.nearest).astype(np.int32)
    if reference_labels is not None and class_table is not None:
        import geopandas as gpd

        from .data.rasterize import rasterize_labels
        from .evaluate import _pick_class_field

        gdf = gpd.read_file(reference_labels)
        if crs is not None and gdf.crs is not None and gdf.crs != crs:
            gdf = gdf.to_crs(crs)
        field = _pick_class_field(gdf, class_field, Path(reference_labels))
        gt_class, gt_instance = rasterize_labels(gdf, field, class_table, transform, (h, w))
        gt_class[~valid] = 0
        gt_instance[~valid] = 0
        out["gt_class"], out["gt_instance"] = gt_class, gt_instance
    return out


def _panoptic_rgb(rgb: np.ndarray, class_map: np.ndarray, instance_map: np.ndarray, class_table: ClassTable,
                  alpha: float = 0.5) -> np.ndarray:
    """Stuff tinted by class colour, each thing instance tinted and outlined in its own colour."""
    from .viz import panoptic_overlay

    return panoptic_overlay(rgb.copy(), class_map, np.where(class_map > 0, instance_map, 0), class_table, alpha=alpha)


def plot_scene_panels(overview: dict, class_table: ClassTable, title: str = "test scene"):
    """Figure with the input image, the ground truth and the prediction side by side, with a legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [("input image", overview["rgb"])]
    if "gt_class" in overview:
        n = len(np.unique(overview["gt_instance"][overview["gt_instance"] > 0]))
        panels.append((f"ground truth ({n} objects at this scale)",
                       _panoptic_rgb(overview["rgb"], overview["gt_class"], overview["gt_instance"], class_table)))
    if "pred_class" in overview:
        thing = np.isin(overview["pred_class"], class_table.thing_values)
        n = len(np.unique(overview["pred_instance"][thing & (overview["pred_instance"] > 0)]))
        panels.append((f"prediction ({n} objects at this scale)",
                       _panoptic_rgb(overview["rgb"], overview["pred_class"], overview["pred_instance"], class_table)))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6.4), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [Patch(color=c.color_fraction, label=f"{c.name} ({'thing' if c.is_thing else 'stuff'})")
               for c in class_table]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def plot_losses(history: Sequence[dict], batch_losses: Sequence[float] | None = None,
                epoch_ends: Sequence[int] | None = None):
    """Training loss per batch (smoothed) and train / validation loss per epoch; PQ on a second axis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    if batch_losses is not None and len(batch_losses):
        x = np.arange(1, len(batch_losses) + 1)
        ax.plot(x, batch_losses, color="#9ecae1", lw=1, label="train loss (per batch, smoothed)")
        ax.set_xlabel("batch")
    n_batches = len(batch_losses) if batch_losses is not None else 0
    if history:
        n_ep = len(history)
        if epoch_ends is not None and len(epoch_ends) == n_ep:
            xs = np.asarray(epoch_ends, dtype=float)
        else:
            xs = np.linspace(n_batches / n_ep, n_batches, n_ep) if n_batches else np.arange(1, n_ep + 1)
        def present(key):
            """The epochs' x and value of ``key`` where it was recorded (a time budget validates on a schedule)."""
            pairs = [(x, h.get(key)) for x, h in zip(xs, history)]
            pairs = [(x, float(y)) for x, y in pairs if y is not None and not math.isnan(float(y))]
            return [p[0] for p in pairs], [p[1] for p in pairs]

        for key, style in (("train_loss", "o-"), ("valid_loss", "s-")):
            px, py = present(key)
            if px:
                ax.plot(px, py, style, label=f"{key} (per epoch)")
        px, py = present("panoptic_quality")
        if px:
            ax2 = ax.twinx()
            ax2.plot(px, py, "^--", color="#d62728", label="validation PQ")
            ax2.set_ylabel("validation PQ")
            ax2.set_ylim(0, 1)
            ax2.legend(loc="center right")
        if not n_batches:
            ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _fmt_seconds(s: float) -> str:
    s = float(s)
    return f"{int(s // 60)} min {s % 60:04.1f} s" if s >= 60 else f"{s:.1f} s"


def write_demo_report(
    out_html: str | os.PathLike,
    metrics: dict,
    class_table: ClassTable,
    test_raster: str | os.PathLike,
    prediction_raster: str | os.PathLike,
    reference_labels: str | os.PathLike | None = None,
    history: Sequence[dict] = (),
    batch_losses: Sequence[float] | None = None,
    epoch_ends: Sequence[int] | None = None,
    timings: dict | None = None,
    settings: dict | None = None,
    files: dict | None = None,
    png_dir: str | os.PathLike | None = None,
    overview_size: int = 768,
) -> Path:
    """Write the demo's one-file HTML report (and its pictures as PNG files).

    Parameters
    ----------
    out_html:
        The report to write.
    metrics:
        Panoptic quality of the test scene (:func:`geomax.evaluate.evaluate_raster`).
    class_table:
        The classes.
    test_raster, prediction_raster, reference_labels:
        The test image, its panoptic prediction and its labels, drawn side by side.
    history:
        One dict per epoch (``train_loss``, ``valid_loss``, ``panoptic_quality``...).
    batch_losses:
        Training loss of every batch (fastai's smoothed loss), for the loss curve.
    epoch_ends:
        Batches run at the end of each epoch (places the per-epoch points).
    timings:
        ``{step name: seconds}``.
    settings:
        ``{name: value}`` shown as the run's settings.
    files:
        ``{description: path}`` of the outputs, listed in the report.
    png_dir:
        Folder for the PNG copies of the pictures (default: beside the report).
    overview_size:
        Longest side of the scene pictures, in pixels.

    Returns
    -------
    pathlib.Path
        The report.
    """
    from .models.package import REPORT_CSS, metrics_table_html

    out_html = Path(out_html)
    png_dir = Path(png_dir) if png_dir is not None else out_html.parent
    png_dir.mkdir(parents=True, exist_ok=True)
    pictures: list[tuple[str, str, bytes]] = []
    if history or batch_losses:
        pictures.append(("Training", "report_loss.png", _png_bytes(plot_losses(history, batch_losses, epoch_ends))))
    overview = scene_overview(test_raster, prediction_raster, reference_labels, class_table, max_size=overview_size)
    fig = plot_scene_panels(overview, class_table,
                            title=f"test scene (overview, 1 pixel = {overview['scale']:.1f} scene pixels)")
    pictures.append(("Test scene: input, ground truth, prediction", "report_scene.png", _png_bytes(fig)))
    # a full-resolution crop of the centre, where small objects are visible
    crop = _centre_crop(test_raster, prediction_raster, reference_labels, class_table, size=256)
    if crop is not None:
        fig = plot_scene_panels(crop, class_table, title="test scene, full-resolution crop at the centre (256 px)")
        pictures.append(("Detail at full resolution", "report_detail.png", _png_bytes(fig)))
    for _, name, data in pictures:
        (png_dir / name).write_bytes(data)

    esc = html.escape
    parts = [f"<html><head><meta charset='utf-8'><title>geomax demo report</title><style>{REPORT_CSS}</style>"
             "</head><body><h1>geomax demo: MaX-DeepLab panoptic segmentation</h1>"]
    pq = metrics.get("all", {}).get("pq", float("nan"))
    parts.append(f"<p>Panoptic quality on the held-out test scene: <b>PQ {100 * pq:.1f}</b> "
                 f"(things {100 * metrics.get('things', {}).get('pq', float('nan')):.1f}, "
                 f"stuff {100 * metrics.get('stuff', {}).get('pq', float('nan')):.1f}).</p>")
    if settings:
        parts.append("<h2>Settings</h2><table>" + "".join(
            f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in settings.items()) + "</table>")
    for title, name, data in pictures[:1] if (history or batch_losses) else []:
        parts.append(f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    parts.append("<h2>Panoptic quality on the test scene</h2>")
    parts.append(metrics_table_html({k: v for k, v in metrics.items() if k in ("all", "things", "stuff", "per_class")}))
    for title, name, data in pictures[1 if (history or batch_losses) else 0:]:
        parts.append(f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{base64.b64encode(data).decode()}'>")
    if timings:
        total = sum(float(v) for v in timings.values())
        parts.append("<h2>Timings</h2><table><tr><th>step</th><th>time</th></tr>" + "".join(
            f"<tr><td>{esc(str(k))}</td><td>{_fmt_seconds(v)}</td></tr>" for k, v in timings.items())
            + f"<tr><th>total</th><th>{_fmt_seconds(total)}</th></tr></table>")
    if files:
        parts.append("<h2>Files</h2><table>" + "".join(
            f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in files.items()) + "</table>")
    parts.append("</body></html>")
    tmp = out_html.with_name(f".{out_html.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, out_html)
    return out_html


def _centre_crop(test_raster, prediction_raster, reference_labels, class_table, size: int = 256) -> dict | None:
    """Full-resolution arrays of a ``size`` x ``size`` window at the centre of the scene."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with rasterio.open(test_raster) as src:
        if src.width <= size * 2 and src.height <= size * 2:
            return None
        win = Window((src.width - size) // 2, (src.height - size) // 2, size, size)
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        image = src.read(bands, window=win)
        valid = src.dataset_mask(window=win) > 0
        transform, crs = window_transform(win, src.transform), src.crs
    out: dict[str, Any] = {"rgb": _stretch(image, valid), "valid": valid, "scale": 1.0}
    with rasterio.open(prediction_raster) as src:
        out["pred_class"] = src.read(1, window=win).astype(np.int32)
        out["pred_instance"] = src.read(2, window=win).astype(np.int32)
    if reference_labels is not None:
        import geopandas as gpd

        from .data.rasterize import rasterize_labels
        from .evaluate import _pick_class_field

        gdf = gpd.read_file(reference_labels)
        if crs is not None and gdf.crs is not None and gdf.crs != crs:
            gdf = gdf.to_crs(crs)
        field = _pick_class_field(gdf, None, Path(reference_labels))
        out["gt_class"], out["gt_instance"] = rasterize_labels(gdf, field, class_table, transform, (size, size))
    return out
