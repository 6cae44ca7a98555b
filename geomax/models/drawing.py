"""Figures of model results: image, ground truth and prediction side by side."""
from __future__ import annotations

from typing import Sequence

__all__ = ["results_figure"]


def results_figure(images: Sequence, truths: Sequence, predictions: Sequence, class_table):
    """A matplotlib figure with one row per chip: image, ground truth, prediction.

    Parameters
    ----------
    images:
        RGB arrays (H, W, 3) in [0, 1].
    truths:
        ``(class_map, instance_map)`` pairs of the ground truth.
    predictions:
        :class:`~geomax.panoptic.PanopticResult` of each chip.
    class_table:
        The classes (colours and the legend).
    """
    import matplotlib.pyplot as plt

    from ..viz import add_legend, show_panoptic

    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(12, 4 * n), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("image")
        axes[r, 0].axis("off")
        show_panoptic(images[r], truths[r][0], truths[r][1], class_table=class_table, ax=axes[r, 1],
                      title="ground truth")
        show_panoptic(images[r], predictions[r].class_map, predictions[r].instance_map, class_table=class_table,
                      ax=axes[r, 2], title=f"prediction ({predictions[r].n_things} objects)")
    add_legend(fig, class_table)
    fig.tight_layout()
    return fig
