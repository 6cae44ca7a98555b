"""Label geometries as export and evaluation read them: null and empty ones dropped, invalid ones repaired."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["clean_label_geometries"]

_POLYGONAL = ("Polygon", "MultiPolygon")


def _polygonal_part(geom):
    """The polygons of a geometry (a collection's other parts dropped); an empty polygon when it has none."""
    import shapely
    from shapely.geometry import Polygon

    if geom.geom_type in _POLYGONAL:
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL and not p.is_empty]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def clean_label_geometries(gdf, source: str, stacklevel: int = 2):
    """Label features ready to rasterize: invalid polygons repaired, null and empty geometries dropped.

    Invalid geometries (self-intersections, bow-ties, wrong ring order...) are repaired with
    :func:`shapely.make_valid`, keeping only their polygonal parts; a feature whose repair
    leaves no polygon is dropped with the null and empty ones. One ``UserWarning`` gives
    the counts, e.g. ``3 features had invalid geometries, repaired with make_valid;
    2 null/empty geometries dropped``. Features of other geometry types (points, lines)
    are kept as they are: the caller decides about them.

    Parameters
    ----------
    gdf:
        The label layer (a GeoDataFrame; not changed).
    source:
        The layer, as named in the warning.
    stacklevel:
        Of the warning, as if this function called ``warnings.warn`` (2: its caller).

    Returns
    -------
    geopandas.GeoDataFrame
        A copy without null / empty geometries, with invalid polygons repaired.
    """
    import geopandas as gpd
    import shapely

    geoms = gdf.geometry
    missing = np.asarray(geoms.isna() | geoms.is_empty)
    invalid = ~missing & np.asarray(geoms.geom_type.isin(_POLYGONAL)) & ~np.asarray(geoms.is_valid)
    values = np.asarray(geoms, dtype=object).copy()
    repaired = [_polygonal_part(g) for g in shapely.make_valid(values[invalid])]
    values[invalid] = repaired
    unusable = invalid.copy()
    unusable[invalid] = [g.is_empty for g in repaired]
    out = gdf.copy()
    out[geoms.name] = gpd.GeoSeries(values, index=gdf.index, crs=gdf.crs)
    out = out[~(missing | unusable)]
    _warn_counts(source, int(invalid.sum()), int(missing.sum()), int(unusable.sum()), stacklevel + 1)
    return out


def _warn_counts(source: str, n_invalid: int, n_missing: int, n_unusable: int, stacklevel: int) -> None:
    notes = []
    if n_invalid:
        notes.append(f"{n_invalid} feature{'s' if n_invalid != 1 else ''} had invalid geometries, repaired with "
                     "make_valid" + (f" ({n_unusable} with no polygonal part left, dropped)" if n_unusable else ""))
    if n_missing:
        notes.append(f"{n_missing} null/empty geometr{'ies' if n_missing != 1 else 'y'} dropped")
    if notes:
        warnings.warn(f"{source}: {'; '.join(notes)}. Fix the geometries in the label layer (e.g. a GIS's "
                      "Repair Geometry) to keep them as drawn.", UserWarning, stacklevel=stacklevel)
