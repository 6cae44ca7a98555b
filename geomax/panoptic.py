"""The panoptic result: what inference returns for one image or one raster tile."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PanopticResult", "SEGMENT_COLUMNS"]

#: Columns of :attr:`PanopticResult.segments`.
SEGMENT_COLUMNS = ["id", "class_value", "class_name", "is_thing", "score", "area"]


@dataclass
class PanopticResult:
    """Panoptic segmentation of one image.

    Attributes
    ----------
    class_map:
        (H, W) int32 class **Values** (ArcGIS ``Value``), 0 = void / no data.
    instance_map:
        (H, W) int32, 0 for stuff and void pixels, 1..k for thing instances.
    segment_map:
        (H, W) int32 segment id per pixel (0 = void); ids index ``segments.id``.
        Every stuff region of one class is one segment; each thing instance is one segment.
    confidence:
        (H, W) float32 in [0, 1]: class probability x mask probability of the winning slot.
    segments:
        pandas DataFrame with :data:`SEGMENT_COLUMNS` (id, class_value, class_name,
        is_thing, score, area in pixels).
    """

    class_map: np.ndarray
    instance_map: np.ndarray
    segment_map: np.ndarray
    confidence: np.ndarray
    segments: pd.DataFrame

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.class_map.shape)

    @property
    def n_things(self) -> int:
        return int(self.segments["is_thing"].sum()) if len(self.segments) else 0

    def show(self, image=None, class_table=None, ax=None, title=None):
        """Draw the result (stuff tinted by class colour, thing instances outlined)."""
        from .viz import show_panoptic  # local import: matplotlib only when drawing

        return show_panoptic(image, self.class_map, self.instance_map, class_table=class_table, ax=ax, title=title)
