"""Tile grids, blocks of tiles, tiling settings and boundless, no-data aware tile reading."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geomax.config import TilingConfig
from geomax.errors import ArgumentError, InputMismatchError
from geomax.inference.tiling import TileBlocks, TileGrid, TileReader, resolve_tiling


def _owners(grid: TileGrid, height: int, width: int) -> np.ndarray:
    """Index of the tile whose core holds each pixel; asserts that no two cores share a pixel."""
    owner = np.full((height, width), -1)
    for k, (r, c) in enumerate(grid):
        w = grid.core_window(r, c)
        sl = (slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
        assert (owner[sl] == -1).all(), f"core of tile {(r, c)} overlaps another core"
        owner[sl] = k
    return owner


@pytest.mark.parametrize("height,width,tile_size,overlap", [(101, 77, 32, 8), (50, 50, 24, 0), (7, 130, 40, 10),
                                                             (64, 64, 32, 16)])
def test_cores_tile_the_raster_exactly_once(height, width, tile_size, overlap):
    grid = TileGrid(height, width, tile_size, overlap)
    assert (_owners(grid, height, width) >= 0).all()
    assert len(grid) == grid.n_rows * grid.n_cols == len(list(grid))
    for r, c in grid:
        t, w = grid.tile_window(r, c), grid.core_window(r, c)
        assert (t.height, t.width) == (tile_size, tile_size)
        # the core lies inside its tile, overlap // 2 pixels from the tile's top / left
        assert (w.row_off - t.row_off, w.col_off - t.col_off) == (overlap // 2, overlap // 2)
        assert w.row_off + w.height <= t.row_off + t.height and w.col_off + w.width <= t.col_off + t.width
        rs, cs = grid.core_slices(r, c)
        assert (rs.stop - rs.start, cs.stop - cs.start) == (w.height, w.width)


def test_tile_grid_cores_partition_the_raster_by_nearest_centre():
    grid = TileGrid(100, 130, tile_size=40, overlap=10)
    owner = np.full((100, 130), -1)
    for k, (r, c) in enumerate(grid):
        w = grid.core_window(r, c)
        sl = (slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
        assert (owner[sl] == -1).all()
        owner[sl] = k
        t = grid.tile_window(r, c)
        assert t.row_off <= w.row_off and w.row_off + w.height <= t.row_off + t.height
    assert (owner >= 0).all()
    # the owner is the tile whose centre is nearest (Chebyshev distance, ties to the lower index)
    for rr, cc in [(0, 0), (34, 29), (35, 30), (99, 129), (64, 65)]:
        centres = [(grid.tile_window(r, c).row_off + 20 - 0.5, grid.tile_window(r, c).col_off + 20 - 0.5)
                   for r, c in grid]
        d = [max(abs(rr - a), abs(cc - b)) for a, b in centres]
        assert d[owner[rr, cc]] == min(d)


def test_overlap_zero_tiles_are_their_cores():
    grid = TileGrid(50, 70, 20, 0)
    assert grid.stride == 20 and grid.pad_before == 0
    for r, c in grid:
        t, w = grid.tile_window(r, c), grid.core_window(r, c)
        assert (t.row_off, t.col_off) == (w.row_off, w.col_off)
    assert grid.core_window(2, 3).height == 10 and grid.core_window(2, 3).width == 10  # clipped at the edge


def test_grid_rejects_an_overlap_wider_than_half_the_tile():
    with pytest.raises(ValueError):
        TileGrid(100, 100, 32, 17)


@pytest.mark.parametrize("block_tiles", [1, 2, 3])
def test_blocks_hold_the_raster_grids_tiles_and_partition_its_cores(block_tiles):
    grid = TileGrid(101, 77, 32, 8)
    blocks = TileBlocks(grid, block_tiles)
    owner = np.full((101, 77), -1)
    tiles = []
    for k, block in enumerate(blocks):
        sub = blocks.block_grid(block)
        w = sub.window
        assert (owner[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width] == -1).all()
        owner[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width] = k
        r0, c0 = blocks.first_tile(block)
        for r, c in sub:
            assert sub.tile_window(r, c) == grid.tile_window(r0 + r, c0 + c)
            assert sub.core_window(r, c) == grid.core_window(r0 + r, c0 + c)
            tiles.append((r0 + r, c0 + c))
    assert (owner >= 0).all()
    assert sorted(tiles) == sorted(grid)  # every tile in exactly one block
    assert TileBlocks.of_size(grid, 50).block_tiles == 2 and TileBlocks.of_size(grid, 5).block_tiles == 1


def test_resolve_tiling_fills_in_tile_size_and_overlap():
    t = resolve_tiling(None, chip_size=100, tile_multiple=16)
    assert (t.tile_size, t.overlap) == (96, 24)  # chip size rounded to the multiple, a quarter of it
    assert resolve_tiling(None, None, 1).tile_size == TilingConfig.FALLBACK_TILE_SIZE
    t = resolve_tiling(TilingConfig(batch_size=2), 64, 16, tile_size=128, overlap=None, merge_iou=0.7)
    assert (t.tile_size, t.overlap, t.batch_size, t.merge_iou) == (128, 32, 2, 0.7)
    with pytest.raises(InputMismatchError, match="multiple of 32"):
        resolve_tiling(None, None, 32, tile_size=60)
    with pytest.raises(ArgumentError, match="2 \\* overlap"):
        resolve_tiling(None, None, 1, tile_size=64, overlap=40)
    with pytest.raises(ArgumentError, match="tile_sise"):
        resolve_tiling({"tile_sise": 64}, None, 1)


# --------------------------------------------------------------------------- TileReader
@pytest.fixture
def small_raster(tmp_path):
    """A 3-band uint16 raster (no-data 0) and a float raster with NaN pixels, 30 x 40."""
    data = np.random.default_rng(0).integers(1, 500, size=(3, 30, 40)).astype("uint16")
    data[:, 0:5, 0:6] = 0      # no data in every band
    data[1, 10:12, 10:12] = 0  # no data in one band only: no data too
    path = tmp_path / "small.tif"
    profile = dict(driver="GTiff", width=40, height=30, count=3, dtype="uint16", crs="EPSG:32632",
                   transform=from_origin(0, 30, 1, 1), nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    fdata = data.astype("float32")
    fdata[:, 20:22, 30:33] = np.nan
    fdata[0, 27, 37] = np.nan  # NaN in one band only
    fpath = tmp_path / "float.tif"
    with rasterio.open(fpath, "w", **{**profile, "dtype": "float32", "nodata": None}) as dst:
        dst.write(fdata)
    return path, fpath, data


def test_reader_is_boundless_at_the_edges(small_raster):
    path, _, data = small_raster
    with rasterio.open(path) as src:
        reader = TileReader(src, [3, 1])
        tile, valid = reader.read(rasterio.windows.Window(30, -4, 16, 16))  # past the top and right edges
    assert tile.shape == (2, 16, 16) and tile.dtype == np.uint16 and valid.shape == (16, 16)
    np.testing.assert_array_equal(tile[:, 4:, :10], data[[2, 0], 0:12, 30:40])  # bands in the asked order
    assert not valid[:4].any() and not valid[:, 10:].any()  # outside the raster: invalid
    assert (tile[:, :4] == 0).all() and (tile[:, :, 10:] == 0).all()  # ... and filled with the no-data value
    assert valid[4:, :10].all()


def test_reader_marks_no_data_invalid(small_raster):
    path, fpath, _ = small_raster
    with rasterio.open(path) as src:
        _, valid = TileReader(src, [1, 2, 3]).read(rasterio.windows.Window(0, 0, 20, 20))
    assert not valid[0:5, 0:6].any()       # no data in every band
    assert not valid[10:12, 10:12].any()   # no data in a single band is no data
    assert valid.sum() == 20 * 20 - 5 * 6 - 2 * 2
    with rasterio.open(fpath) as src:
        _, valid = TileReader(src, [1, 2, 3]).read(rasterio.windows.Window(25, 15, 15, 15))
        _, valid_23 = TileReader(src, [2, 3]).read(rasterio.windows.Window(25, 15, 15, 15))
    assert not valid[5:7, 5:8].any() and not valid[12, 12] and valid.sum() == 15 * 15 - 6 - 1  # NaN in any band
    assert valid_23[12, 12] and valid_23.sum() == 15 * 15 - 6  # only the bands read count
    with rasterio.open(path) as src:
        _, valid = TileReader(src, [1]).read(rasterio.windows.Window(100, 100, 8, 8))  # wholly outside
    assert not valid.any()
