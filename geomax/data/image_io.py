"""Read one image (a raster file or an array) for a model: its bands, in the model's order, and validity."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, InputMismatchError

__all__ = ["read_image"]


def read_image(image, band_names: Sequence[str], extract_bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(array (bands, H, W), valid (H, W))`` of an image for a model with ``band_names``.

    Parameters
    ----------
    image:
        A path readable by rasterio, or an array (bands, H, W) or (H, W, bands) of raw
        pixel values (a 2-D array for a one-band model).
    band_names:
        The model's bands, in order.
    extract_bands:
        0-based source band indices the model was trained on; a raster with more bands
        is read at those.

    Raises
    ------
    DataError
        The file is missing or not a raster.
    InputMismatchError
        The image's bands do not match the model's.
    """
    n_bands = len(band_names)
    if isinstance(image, (str, Path)):
        import rasterio

        path = Path(image)
        if not path.exists():
            raise DataError(f"Image '{path}' does not exist.")
        try:
            with rasterio.open(path) as src:
                array = src.read()
                valid = src.dataset_mask() > 0
        except rasterio.errors.RasterioIOError as exc:
            raise DataError(f"Cannot read image '{path}' ({exc}). Is it a valid raster?") from exc
        if array.shape[0] != n_bands and array.shape[0] > max(extract_bands):
            array = array[list(extract_bands)]  # a full-band image: take the bands the model was trained on
    else:
        array = np.asarray(image)
        if array.ndim == 2 and n_bands == 1:
            array = array[None]
        if array.ndim == 3 and array.shape[0] != n_bands and array.shape[-1] == n_bands:
            array = np.moveaxis(array, -1, 0)
        valid = np.ones(array.shape[-2:], dtype=bool)
    if array.ndim != 3 or array.shape[0] != n_bands:
        raise InputMismatchError(f"The model takes {n_bands} bands {list(band_names)}; the image has shape "
                                 f"{array.shape}. Give an image with the same bands as the training data.")
    return array, valid
