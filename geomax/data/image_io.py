"""Read one image (a raster file or an array) for a model: its bands, in the model's order, and validity.

The no-data rule of geomax is defined here once (:func:`valid_pixels`) and used by
the export's chip reading, the training chips, ``predict`` and ``predict_raster``'s
tile reader alike: a pixel is valid only if it is valid in **every** band read, so
it is invalid when any band is NaN (or infinite), equals that band's no-data value,
or is masked by the raster's mask (alpha band, internal or external mask).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import ArgumentError, DataError, InputMismatchError
from .input_rules import band_labels, check_image_values, names_give_order, select_bands
from .normalize import BandStats
from .sources import open_raster

__all__ = ["read_image", "valid_pixels", "read_valid_pixels", "needs_band_masks"]


def valid_pixels(array: np.ndarray, nodata=None, mask: np.ndarray | None = None) -> np.ndarray:
    """The pixels of ``array`` (bands, H, W) that are valid in every band, as a bool (H, W) array.

    Parameters
    ----------
    array:
        Raw pixel values, bands first.
    nodata:
        The no-data value: one for all bands, one per band (``None`` entries: that band
        has none), or ``None``. NaN matches NaN.
    mask:
        Optional validity mask, (H, W) or one per band (bands, H, W), nonzero where valid.

    Returns
    -------
    numpy.ndarray
        bool (H, W): False where any band is NaN or infinite, equals its no-data value,
        or is masked.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ArgumentError(f"valid_pixels takes an array (bands, H, W); got shape {array.shape}.")
    valid = np.ones(array.shape[1:], dtype=bool)
    if array.dtype.kind in "fc":
        valid &= np.isfinite(array).all(0)
    for band, value in zip(array, _per_band(nodata, array.shape[0])):
        if value is not None and not np.isnan(value):
            valid &= band != _as_band_value(value, band.dtype)
    if mask is not None:
        mask = np.asarray(mask)
        valid &= (mask != 0).all(0) if mask.ndim == 3 else mask != 0
    return valid


def _per_band(nodata, n_bands: int) -> list:
    if nodata is None or np.isscalar(nodata):
        return [nodata] * n_bands
    values = list(nodata)
    if len(values) != n_bands:
        raise ArgumentError(f"nodata gives {len(values)} values for {n_bands} bands; give one value or one per band.")
    return values


def _as_band_value(value: float, dtype: np.dtype):
    """The no-data value as the band stores it (a float32 band holds float32(nodata), not the float64)."""
    return dtype.type(value) if dtype.kind == "f" else value


def needs_band_masks(src, bands: Sequence[int]) -> bool:
    """Whether ``src``'s validity for ``bands`` (1-based) needs its masks, not only values and no-data.

    Bands that are all valid or masked by their no-data value alone need no mask read:
    :func:`valid_pixels` compares the values with the no-data value.
    """
    from rasterio.enums import MaskFlags

    simple = ([MaskFlags.all_valid], [MaskFlags.nodata])
    return not all(src.mask_flag_enums[b - 1] in simple for b in bands)


def read_valid_pixels(src, bands: Sequence[int], data: np.ndarray, window=None,
                      masks_needed: bool | None = None) -> np.ndarray:
    """Validity (H, W) of ``data``, the ``bands`` (1-based) of ``src`` read at ``window``.

    Applies :func:`valid_pixels` with each band's no-data value and, when the raster has
    an alpha band or a mask (:func:`needs_band_masks`; pass ``masks_needed`` to skip the
    probe), the bands' masks.
    """
    bands = list(bands)
    if masks_needed is None:
        masks_needed = needs_band_masks(src, bands)
    mask = src.read_masks(bands, window=window) if masks_needed else None
    return valid_pixels(data, [src.nodatavals[b - 1] for b in bands], mask)


def read_image(image, band_names: Sequence[str], extract_bands: Sequence[int], *,
               bands: Sequence[int] | None = None,
               band_stats: BandStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(array (bands, H, W), valid (H, W))`` of an image for a model with ``band_names``.

    Parameters
    ----------
    image:
        A local path or any name GDAL opens (a URL such as ``https://...`` or ``s3://...``,
        ``/vsizip/...``, a subdataset string: :func:`geomax.data.sources.raster_source`); or
        an array (bands, H, W) or (H, W, bands) of raw pixel values (a 2-D array for a
        one-band model).
    band_names:
        The model's bands, in order.
    extract_bands:
        0-based source band indices the model was trained on; a raster with another
        band count than the model is read at those.
    bands:
        1-based bands of a file to read, in the model's order (default: all bands when
        the file has the model's band count, else ``extract_bands``). Not for arrays.
    band_stats:
        The model's training statistics. When given, the image's values are compared
        with them (:func:`geomax.data.input_rules.check_image_values`): a warning when
        the value range or data type differs from the training data, or when the bands
        look out of order and their names could not tell.

    Raises
    ------
    DataError
        The file is missing or not a raster, or GDAL cannot open the dataset name.
    InputMismatchError
        The image's bands do not match the model's (count, or named bands in another order).
    ArgumentError
        ``bands`` is given for an array, or names a band the file does not have.
    """
    if isinstance(image, (str, os.PathLike)):
        read = _read_file(image, band_names, extract_bands, bands)
    else:
        if bands is not None:
            raise ArgumentError("bands= selects bands of a file; for an array, index it in the model's band order "
                                "(e.g. image[[2, 1, 0]]).")
        read = _read_array(np.asarray(image), band_names)
    if band_stats is not None:
        # the warnings point at the caller of predict(): read_image <- PanopticPredictor.read_image <- predict
        check_image_values(read.array, read.valid, band_stats, read.source, read.labels,
                           order_known=read.order_known, fix=read.fix, stacklevel=5)
    return read.array, read.valid


@dataclass
class _ImageRead:
    """An image read for a model, and how the input checks name it and its bands."""

    array: np.ndarray
    valid: np.ndarray
    source: str
    labels: list[str]
    order_known: bool
    fix: Callable[[list[int]], str]


def _read_file(path, band_names: Sequence[str], extract_bands: Sequence[int],
               bands: Sequence[int] | None) -> _ImageRead:
    """The selected bands of a raster (:func:`~geomax.data.input_rules.select_bands`) and their validity."""
    import rasterio

    with open_raster(path, "image") as src:  # a missing file, a URL GDAL cannot open: DataError
        try:
            descriptions = list(src.descriptions)
            chosen = select_bands(descriptions, src.count, bands, len(band_names), band_names, path,
                                  default_bands=[int(b) + 1 for b in extract_bands])
            array = src.read(chosen)
            valid = read_valid_pixels(src, chosen, array)
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(f"Cannot read image '{path}' ({exc}). Is it a valid raster? Check that it is not cut "
                            "short; re-export or re-download it.") from exc
    return _ImageRead(array, valid, f"'{path}'", band_labels(descriptions, chosen), names_give_order(descriptions, band_names),
                      lambda order: f"pass bands={[chosen[i] for i in order]} (1-based bands of the file, "
                                    "in the model's order)")


def _read_array(array: np.ndarray, band_names: Sequence[str]) -> _ImageRead:
    """An array in the model's (bands, H, W) layout; (H, W, bands) and 2-D one-band arrays are accepted."""
    n_bands = len(band_names)
    if array.ndim == 2 and n_bands == 1:
        array = array[None]
    if array.ndim == 3 and array.shape[0] != n_bands and array.shape[-1] == n_bands:
        array = np.moveaxis(array, -1, 0)
    if array.ndim != 3 or array.shape[0] != n_bands:
        counts = f"{array.shape[0]} bands (bands first) or {array.shape[-1]} (bands last)" if array.ndim == 3 \
            else f"{array.ndim} dimensions"
        raise InputMismatchError(f"The model takes {n_bands} bands {list(band_names)}; the image array of shape "
                                 f"{array.shape} has {counts}. Give an array (bands, H, W) or (H, W, bands) with "
                                 "the same bands as the training data, in the same order.")
    return _ImageRead(array, valid_pixels(array), "the image array", [f"band index {i}" for i in range(n_bands)],
                      False, lambda order: f"reorder the array's bands as {order} (0-based; image[{order}] for a "
                                           "bands-first array)")
