"""VRT mosaics of tiles: the same pixels, grid and no-data as the raster they were cut from; clear errors."""
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from geomax.data.mosaic import Mosaic, mosaic_inputs, write_mosaic_vrt
from geomax.errors import ArgumentError, DataError, OutputExistsError

TRANSFORM = from_origin(600000.0, 5700000.0, 0.5, 0.5)
H, W = 40, 50


def _write(path: Path, data: np.ndarray, transform=TRANSFORM, nodata=0, crs="EPSG:32632", names=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return path


def _tiles(folder: Path, data: np.ndarray, nodata=0, skip=(), **kw) -> list[Path]:
    """``data`` cut in 2 x 2 files (rows 0-17 / 17-40, columns 0-23 / 23-50), leaving out those in ``skip``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (r0, r1) in enumerate(((0, 17), (17, H))):
        for j, (c0, c1) in enumerate(((0, 23), (23, W))):
            if (i, j) in skip:
                continue
            window = Window(c0, r0, c1 - c0, r1 - r0)
            paths.append(_write(folder / f"t{i}{j}.tif", data[:, r0:r1, c0:c1],
                                rasterio.windows.transform(window, TRANSFORM), nodata, **kw))
    return paths


@pytest.fixture
def image() -> np.ndarray:
    data = np.random.default_rng(1).integers(1, 255, size=(3, H, W)).astype(np.uint8)
    data[:, :5, :7] = 0  # no data in a corner
    return data


def test_the_mosaic_of_a_folder_is_the_raster_it_was_cut_from(image, tmp_path):
    _tiles(tmp_path / "tiles", image, names=["red", "green", "blue"])
    vrt = write_mosaic_vrt(tmp_path / "tiles", tmp_path / "mosaic.vrt")
    with rasterio.open(vrt) as src:
        assert (src.width, src.height, src.count) == (W, H, 3)
        assert src.transform.almost_equals(TRANSFORM) and src.crs == rasterio.crs.CRS.from_epsg(32632)
        assert src.nodatavals == (0.0, 0.0, 0.0) and src.descriptions == ("red", "green", "blue")
        np.testing.assert_array_equal(src.read(), image)
        np.testing.assert_array_equal(src.read(window=Window(20, 15, 8, 6)), image[:, 15:21, 20:28])
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == ["t00.tif", "t01.tif", "t10.tif", "t11.tif"]


def test_pixels_no_file_covers_are_no_data_even_without_a_no_data_value(image, tmp_path):
    paths = _tiles(tmp_path / "tiles", image, nodata=None, skip={(1, 1)})
    mosaic = Mosaic.of(list(reversed(paths)))
    assert mosaic.masked and (mosaic.width, mosaic.height) == (W, H)
    vrt = mosaic.write_vrt(tmp_path / "gap.vrt")
    with rasterio.open(vrt) as src:
        mask = src.read_masks(1)
        data = src.read()
    assert (mask[17:, 23:] == 0).all() and (mask[:17] > 0).all() and (mask[17:, :23] > 0).all()
    np.testing.assert_array_equal(data[:, :17], image[:, :17])


def test_rasters_that_do_not_fit_together_are_refused(image, tmp_path):
    a = _write(tmp_path / "a.tif", image)
    right = from_origin(600000.0 + 0.5 * W, 5700000.0, 0.5, 0.5)
    with pytest.raises(DataError, match="differ in CRS"):
        Mosaic.of([a, _write(tmp_path / "crs.tif", image, right, crs="EPSG:32633")])
    with pytest.raises(DataError, match="differ in band count"):
        Mosaic.of([a, _write(tmp_path / "bands.tif", image[:2], right)])
    with pytest.raises(DataError, match="differ in data types"):
        Mosaic.of([a, _write(tmp_path / "dtype.tif", image.astype(np.uint16), right)])
    with pytest.raises(DataError, match="differ in pixel size"):
        Mosaic.of([a, _write(tmp_path / "res.tif", image, from_origin(600025.0, 5700000.0, 1.0, 1.0))])
    with pytest.raises(DataError, match="not on the pixel grid"):
        Mosaic.of([a, _write(tmp_path / "shift.tif", image, from_origin(600025.2, 5700000.0, 0.5, 0.5))])
    with pytest.raises(DataError, match="different no-data values"):
        Mosaic.of([a, _write(tmp_path / "nodata.tif", image, right, nodata=255)])
    with pytest.raises(DataError, match="missing.tif' does not exist"):
        Mosaic.of([a, tmp_path / "missing.tif"])


def test_inputs_of_a_mosaic(image, tmp_path):
    paths = _tiles(tmp_path / "tiles", image)
    (tmp_path / "tiles" / "notes.txt").write_text("not a raster")
    assert mosaic_inputs(tmp_path / "tiles") == paths  # the GeoTIFFs, in name order
    assert mosaic_inputs(paths[0]) is None and mosaic_inputs("https://example.com/a.tif") is None
    assert mosaic_inputs([str(p) for p in paths]) == paths
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no GeoTIFF"):
        mosaic_inputs(tmp_path / "empty")
    with pytest.raises(ArgumentError, match="empty"):
        mosaic_inputs([])
    with pytest.raises(ArgumentError, match="inside the input folder"):
        write_mosaic_vrt(tmp_path / "tiles", tmp_path / "tiles" / "mosaic.vrt")
    write_mosaic_vrt(paths, tmp_path / "m.vrt")
    with pytest.raises(OutputExistsError, match="exists"):
        write_mosaic_vrt(paths, tmp_path / "m.vrt")
