"""Burn vector labels into a panoptic pair: a class-Value map and an instance map.

One function serves the export, the evaluation and the inference tests, so that
every part of geomax agrees on what the ground truth of a window is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError
from .classes import ClassTable

__all__ = ["rasterize_labels", "feature_class_values", "burn_shapes"]


def feature_class_values(values: Sequence, class_table: ClassTable, class_field: str = "class") -> np.ndarray:
    """Class Value of every feature, from a class field holding class names or class Values.

    Parameters
    ----------
    values:
        The class-field entries of the features (names such as ``"building"`` or
        integer Values such as ``5``; the two may be mixed).
    class_table:
        The classes the labels may use.
    class_field:
        Name of the field (only used in error messages).

    Returns
    -------
    numpy.ndarray
        int32 class Value per feature.

    Raises
    ------
    DataError
        A feature's class is neither a name nor a Value of the class table.
    """
    by_name = {c.name: c.value for c in class_table}
    by_lower = {c.name.lower(): c.value for c in class_table}
    known_values = set(class_table.values)
    out = np.zeros(len(values), dtype=np.int32)
    unknown: set = set()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            unknown.add(None)
            continue
        if isinstance(v, str):
            key = v.strip()
            if key in by_name:
                out[i] = by_name[key]
                continue
            if key.lower() in by_lower:
                out[i] = by_lower[key.lower()]
                continue
            try:
                v = int(key)
            except ValueError:
                unknown.add(v)
                continue
        try:
            iv = int(v)
        except (TypeError, ValueError):
            unknown.add(v)
            continue
        if iv in known_values and iv == v:
            out[i] = iv
        else:
            unknown.add(v)
    if unknown:
        shown = sorted(map(repr, unknown))[:10]
        raise DataError(
            f"Field '{class_field}' holds classes that are not in the class table: {', '.join(shown)}. "
            f"Known classes (Value: Name): {', '.join(f'{c.value}: {c.name}' for c in class_table)}. "
            "Fix the labels or add these classes to the class table."
        )
    return out


def burn_shapes(geometries, burn_values, transform, shape, dtype="int32") -> np.ndarray:
    """Rasterize geometries in order (later ones drawn over earlier ones); 0 where nothing is drawn.

    Thin wrapper over :func:`rasterio.features.rasterize` that skips empty geometries.
    """
    from rasterio.features import rasterize

    pairs = [(g, int(v)) for g, v in zip(geometries, burn_values) if g is not None and not g.is_empty]
    if not pairs:
        return np.zeros(shape, dtype=dtype)
    return rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype=dtype)


def rasterize_labels(gdf, class_field: str, class_table: ClassTable, transform, shape) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize vector labels over one raster window.

    Stuff features are drawn first, then thing features, each group in the order
    of the rows of ``gdf`` (a later feature covers an earlier one where they
    overlap). Every thing feature is one instance.

    Parameters
    ----------
    gdf:
        GeoDataFrame of label polygons, already in the raster's CRS.
    class_field:
        Column holding each feature's class, as a class name or a class Value.
    class_table:
        The classes; :attr:`ClassInfo.is_thing` says which ones are things.
    transform:
        Affine transform of the window (``rasterio.windows.transform``).
    shape:
        ``(height, width)`` of the window.

    Returns
    -------
    class_map : numpy.ndarray
        (H, W) int32 class **Values**, 0 where no feature lies.
    instance_map : numpy.ndarray
        (H, W) int32, 0 on stuff and unlabeled pixels; thing instances visible in
        the window are numbered 1..k in feature order.

    Raises
    ------
    DataError
        ``class_field`` is missing, or a feature's class is not in the class table.
    """
    shape = (int(shape[0]), int(shape[1]))
    if class_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise DataError(
            f"The labels have no field '{class_field}' (fields: {fields}). Pass class_field= the field that holds the class."
        )
    if len(gdf) == 0:
        return np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    values = feature_class_values(gdf[class_field].tolist(), class_table, class_field)
    thing_values = np.array(class_table.thing_values, dtype=np.int32)
    is_thing = np.isin(values, thing_values)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    order = np.concatenate([np.flatnonzero(~is_thing), np.flatnonzero(is_thing)])
    class_map = burn_shapes(geoms[order], values[order], transform, shape)
    thing_idx = np.flatnonzero(is_thing)
    if thing_idx.size == 0:
        return class_map, np.zeros(shape, np.int32)
    # Burn feature number + 1 of things, then renumber the visible ones 1..k in feature order.
    feature_map = burn_shapes(geoms[thing_idx], np.arange(1, thing_idx.size + 1), transform, shape)
    present = np.unique(feature_map)
    present = present[present > 0]
    lut = np.zeros(thing_idx.size + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    instance_map = lut[feature_map]
    return class_map, instance_map
