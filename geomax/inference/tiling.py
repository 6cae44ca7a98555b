"""Tile grids over a raster and windowed, no-data aware tile reading.

The grid is laid out so that the *cores* of the tiles are a plain grid of
``stride x stride`` blocks (``stride = tile_size - overlap``) starting at the
raster origin, and every tile is its core grown by ``overlap // 2`` pixels on the
top / left and ``overlap - overlap // 2`` on the bottom / right. Two consequences:

* each raster pixel lies in the core of exactly one tile, and that tile is the one
  whose centre is nearest to it (core borders sit at the middle of the overlaps);
* every pixel, the raster's edge pixels included, sees at least ``overlap // 2``
  pixels of context on each side (outside the raster that context is no data).

Tiles that run past the raster are read *boundless*: the missing part is filled
with the fill value and marked invalid.

For distributed inference :class:`TileBlocks` cuts a grid into blocks of whole
tiles; a block's own :class:`TileGrid` is the same tiles, with windows still in
raster pixels (``row_off`` / ``col_off``). :func:`resolve_tiling` turns a
:class:`~geomax.config.TilingConfig` and keyword overrides into the settings for
one predictor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ..config import TilingConfig
from ..data.image_io import needs_band_masks, read_valid_pixels
from ..errors import DataError, InputMismatchError

__all__ = ["TileGrid", "TileBlocks", "TileReader", "resolve_tiling"]


def resolve_tiling(tiling: TilingConfig | dict | None, chip_size: int | None, tile_multiple: int,
                   **overrides) -> TilingConfig:
    """The tiling settings for one predictor: ``TilingConfig.build(tiling, **overrides).resolve(...)``.

    Parameters
    ----------
    tiling:
        Base settings (a :class:`~geomax.config.TilingConfig`, a dict of its fields, or ``None``).
    chip_size, tile_multiple:
        The predictor's training chip size and tile multiple.
    **overrides:
        Keyword settings (``tile_size=...``); ``None`` values are ignored.

    Raises
    ------
    ArgumentError
        An invalid or unknown setting.
    InputMismatchError
        The tile size is not a multiple of ``tile_multiple``.
    """
    resolved = TilingConfig.build(tiling, **overrides).resolve(chip_size, tile_multiple)
    tile = resolved.tile_size
    assert tile is not None  # resolve() fills it in
    if tile % tile_multiple:
        raise InputMismatchError(f"tile_size={tile} is not a multiple of {tile_multiple}, which the model needs. "
                                 f"Use tile_size={max(tile_multiple, tile // tile_multiple * tile_multiple)}.")
    return resolved


@dataclass(frozen=True)
class TileGrid:
    """A grid of overlapping square tiles covering a ``height x width`` area of a raster.

    Parameters
    ----------
    height, width:
        Size in pixels of the area the tile cores cover (the raster, or a block of it).
    tile_size:
        Side of a tile in pixels (what the predictor sees).
    overlap:
        Pixels shared by two neighbouring tiles; ``0 <= 2 * overlap <= tile_size``.
    row_off, col_off:
        Raster pixel of the area's top-left corner (0 for a whole raster). Every window
        the grid returns is in raster pixels.
    """

    height: int
    width: int
    tile_size: int
    overlap: int
    row_off: int = 0
    col_off: int = 0

    def __post_init__(self) -> None:
        if self.tile_size < 1 or self.overlap < 0 or 2 * self.overlap > self.tile_size:
            raise ValueError(f"need 0 <= 2 * overlap <= tile_size, got tile_size={self.tile_size}, overlap={self.overlap}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"empty raster ({self.height} x {self.width})")

    @property
    def stride(self) -> int:
        """Distance between the origins of two neighbouring tiles (= core size)."""
        return self.tile_size - self.overlap

    @property
    def pad_before(self) -> int:
        """Context pixels above / left of a tile's core."""
        return self.overlap // 2

    @property
    def n_rows(self) -> int:
        return math.ceil(self.height / self.stride)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.width / self.stride)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    @property
    def window(self) -> Window:
        """The area the tile cores cover, in raster pixels."""
        return Window(self.col_off, self.row_off, self.width, self.height)

    def tile_window(self, row: int, col: int) -> Window:
        """Window of tile (row, col) in raster pixels; may extend past the raster."""
        return Window(self.col_off + col * self.stride - self.pad_before,
                      self.row_off + row * self.stride - self.pad_before, self.tile_size, self.tile_size)

    def core_window(self, row: int, col: int) -> Window:
        """Window of the pixels tile (row, col) decides (raster pixels), clipped to the area."""
        r0, c0 = row * self.stride, col * self.stride
        return Window(self.col_off + c0, self.row_off + r0, min(self.stride, self.width - c0),
                      min(self.stride, self.height - r0))

    def core_slices(self, row: int, col: int) -> tuple[slice, slice]:
        """(rows, cols) slices of the core inside the tile array."""
        w = self.core_window(row, col)
        p = self.pad_before
        return slice(p, p + int(w.height)), slice(p, p + int(w.width))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Tiles in raster order: row by row, left to right."""
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield r, c


@dataclass(frozen=True)
class TileBlocks:
    """A tile grid cut into blocks of ``block_tiles x block_tiles`` whole tiles (the last ones smaller).

    A block decides the pixels of its tiles' cores; its tiles reach ``overlap // 2``
    pixels past that core on the top / left and the rest of the overlap on the bottom /
    right (the block's halo).

    Parameters
    ----------
    grid:
        The raster's tile grid.
    block_tiles:
        Tiles per block side (>= 1).
    """

    grid: TileGrid
    block_tiles: int

    def __post_init__(self) -> None:
        if self.block_tiles < 1:
            raise ValueError(f"block_tiles must be >= 1, got {self.block_tiles}")

    @classmethod
    def of_size(cls, grid: TileGrid, block_size: int) -> "TileBlocks":
        """Blocks whose core is ``block_size`` pixels, rounded down to whole tiles (at least one)."""
        return cls(grid, max(1, block_size // grid.stride))

    @property
    def n_rows(self) -> int:
        return -(-self.grid.n_rows // self.block_tiles)

    @property
    def n_cols(self) -> int:
        return -(-self.grid.n_cols // self.block_tiles)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Blocks in raster order."""
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield r, c

    def first_tile(self, block: tuple[int, int]) -> tuple[int, int]:
        """(row, col) in the raster grid of the block's top-left tile."""
        return block[0] * self.block_tiles, block[1] * self.block_tiles

    def block_grid(self, block: tuple[int, int]) -> TileGrid:
        """The block's own grid: the raster grid's tiles of this block, windows in raster pixels."""
        g = self.grid
        r0, c0 = (k * g.stride for k in self.first_tile(block))
        height = min(self.block_tiles * g.stride, g.height - r0)
        width = min(self.block_tiles * g.stride, g.width - c0)
        return TileGrid(height, width, g.tile_size, g.overlap, g.row_off + r0, g.col_off + c0)


class TileReader:
    """Reads tiles from an open rasterio dataset, boundless and no-data aware.

    A pixel is invalid when it lies outside the raster, or when it is invalid in any
    selected band: NaN, equal to the band's no-data value, or masked by the dataset's
    mask (alpha band, internal / external mask) -- the rule of
    :func:`geomax.data.image_io.valid_pixels`, shared with export and ``predict``.

    Parameters
    ----------
    src:
        Open rasterio dataset.
    bands:
        1-based band indexes to read, in the order the predictor expects.
    """

    def __init__(self, src, bands: Sequence[int]):
        self.src = src
        self.bands = list(bands)
        self.nodata = src.nodata
        self.dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        if len({src.dtypes[b - 1] for b in self.bands}) > 1:
            # mixed band types (rare): read everything as the widest common type
            self.dtype = np.result_type(*[np.dtype(src.dtypes[b - 1]) for b in self.bands])
        self._masks_needed = needs_band_masks(src, self.bands)
        fill = self.nodata if self.nodata is not None and not np.isnan(self.nodata) else 0
        self.fill_value = np.array(fill).astype(self.dtype) if np.can_cast(np.min_scalar_type(fill), self.dtype) else 0

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(data (bands, h, w), valid (h, w) bool)`` for a possibly out-of-raster window."""
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        data = np.full((len(self.bands), h, w), self.fill_value, dtype=self.dtype)
        valid = np.zeros((h, w), dtype=bool)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.src.height), min(c0 + w, self.src.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return data, valid
        inner = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        try:
            block = self.src.read(self.bands, window=inner, out_dtype=self.dtype)
            valid[sl] = read_valid_pixels(self.src, self.bands, block, inner, self._masks_needed)
        except RasterioIOError as exc:
            raise DataError(f"Reading '{self.src.name}' failed at rows {rr0}-{rr1}, columns {cc0}-{cc1} ({exc}): the "
                            "file is corrupt or cut short. Check it (gdalinfo -checksum), then re-export or "
                            "re-download it.") from exc
        data[(slice(None),) + sl] = block
        return data, valid
