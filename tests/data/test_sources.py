"""Raster names: local paths stay paths, URLs become GDAL's /vsi names, GDAL names pass as they are."""
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geomax.data.sources import check_raster, is_gdal_name, local_path, open_raster, raster_source, raster_stem
from geomax.errors import ArgumentError, DataError


@pytest.mark.parametrize("given,expected", [
    ("https://example.com/a/scene.tif?sig=x", "/vsicurl/https://example.com/a/scene.tif?sig=x"),
    ("http://127.0.0.1:8000/scene.tif", "/vsicurl/http://127.0.0.1:8000/scene.tif"),
    ("s3://bucket/key/scene.tif", "/vsis3/bucket/key/scene.tif"),
    ("gs://bucket/scene.tif", "/vsigs/bucket/scene.tif"),
    ("az://container/scene.tif", "/vsiaz/container/scene.tif"),
    ("/vsizip//data/tiles.zip/a.tif", "/vsizip//data/tiles.zip/a.tif"),
    ("/vsicurl/https://example.com/scene.tif", "/vsicurl/https://example.com/scene.tif"),
    ('NETCDF:"/data/f.nc":temperature', 'NETCDF:"/data/f.nc":temperature'),
    ("HDF5:/data/f.h5://group/ds", "HDF5:/data/f.h5://group/ds"),
    ("GPKG:/data/f.gpkg:layer", "GPKG:/data/f.gpkg:layer"),
    ("zip+https://example.com/a.zip!b.tif", "zip+https://example.com/a.zip!b.tif"),
    (Path("https://example.com/a/scene.tif"), "/vsicurl/https://example.com/a/scene.tif"),  # pathlib's https:/
])
def test_gdal_names_are_given_to_rasterio_as_strings(given, expected):
    assert raster_source(given) == expected
    assert is_gdal_name(given) and local_path(given) is None


def test_local_paths_stay_paths(tmp_path, monkeypatch):
    assert raster_source("scene.tif") == Path("scene.tif")
    assert raster_source(tmp_path / "mosaic.vrt") == tmp_path / "mosaic.vrt"
    assert raster_source(f"file://{tmp_path}/scene.tif") == tmp_path / "scene.tif"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data:1.tif").write_bytes(b"")
    assert raster_source("data:1.tif") == Path("data:1.tif")  # a local file wins over a subdataset reading
    assert raster_source("NOFILE:1.tif") == "NOFILE:1.tif"
    assert local_path("scene.tif") == Path("scene.tif") and not is_gdal_name("scene.tif")


def test_unknown_schemes_and_types_are_refused():
    with pytest.raises(ArgumentError, match="not 'foo://'"):
        raster_source("foo://host/scene.tif")
    with pytest.raises(ArgumentError, match="path or a GDAL dataset name"):
        raster_source(42)


@pytest.mark.parametrize("given,stem", [
    ("https://example.com/a/scene.tif?sig=x", "scene"),
    ("s3://bucket/key/tile_07.tiff", "tile_07"),
    ("/vsizip//data/tiles.zip/inner/a.tif", "a"),
    ('NETCDF:"/data/f.nc":temperature', "f_temperature"),
    (Path("out/scene.tif"), "scene"),
])
def test_stems_name_outputs_after_the_last_segment(given, stem):
    assert raster_stem(given) == stem


def test_missing_and_unreadable_local_rasters_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"Input raster '.*missing.tif' does not exist\. Check the path"):
        check_raster(tmp_path / "missing.tif")
    with pytest.raises(DataError, match="Panoptic raster '.*missing.tif' does not exist"):
        open_raster(tmp_path / "missing.tif", "panoptic raster")
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(DataError, match="cannot be read .*corrupt.*valid raster"):
        open_raster(tmp_path / "text.tif")
    with pytest.raises(DataError, match="cannot be opened.*Check the archive"):
        check_raster(f"/vsizip/{tmp_path}/nothing.zip/a.tif")
    path = tmp_path / "ok.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=3, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(0, 3, 1, 1)) as dst:
        dst.write(np.ones((1, 3, 4), np.uint8))
    assert check_raster(str(path)) == path
    with open_raster(str(path)) as src:
        assert src.shape == (3, 4)
