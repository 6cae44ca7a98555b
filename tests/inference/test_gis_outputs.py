"""What GIS software reads from predict_raster's outputs (geomax/inference/vectorize.py, writer.py).

The outputs are read as ``ogrinfo`` / ``gdalinfo`` would: the layer's declared geometry
type and field names with ``pyogrio.read_info``, band 1's raster attribute table and
colour table from the GDAL PAM sidecar (``<raster>.aux.xml``, parsed as XML) and through
rasterio, and through GDAL's own bindings when they are installed -- never with geomax's
readers.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from inference_scene import CLASSES
from rasterio.transform import from_origin

from geomax.data.classes import ClassInfo, ClassTable
from geomax.errors import ArgumentError
from geomax.inference.predict_raster import predict_raster
from geomax.inference.predictor import OracleTilePredictor
from geomax.inference.vectorize import (
    FEATURE_COLUMNS,
    SHAPEFILE_FIELDS,
    PanopticVectorizer,
    vectorize_raster,
    write_features,
)

#: The documented field names (README, vectorize.py), written out here on purpose.
FIELDS = ["instance_id", "class_value", "class_name", "is_thing", "confidence", "area"]
SHAPEFILE_NAMES = ["instanceid", "classvalue", "class_name", "is_thing", "confidence", "area"]
#: gdal.h: GDALRATFieldType (GFT_Integer, GFT_String) and GDALRATFieldUsage codes.
GFT_INTEGER, GFT_STRING = 0, 2
GFU_GENERIC, GFU_NAME, GFU_MINMAX, GFU_RED, GFU_GREEN, GFU_BLUE = 0, 2, 5, 6, 7, 8


def _oracle(scene, class_table=CLASSES):
    return OracleTilePredictor((scene.class_map, scene.instance_map), class_table)


def _expected_rat(class_table) -> list[list[str]]:
    """The attribute table rows a class table should give, as text: Value, name, is_thing, R, G, B."""
    return [[str(c.value), c.name, str(int(c.is_thing)), *(str(int(x)) for x in c.color[:3])]
            for c in sorted(class_table, key=lambda c: c.value)]


def _band1_pam(raster) -> ET.Element:
    """``<PAMRasterBand band="1">`` of the raster's ``.aux.xml``."""
    root = ET.parse(f"{raster}.aux.xml").getroot()
    assert root.tag == "PAMDataset"
    bands = [b for b in root.findall("PAMRasterBand") if b.get("band") == "1"]
    assert len(bands) == 1
    return bands[0]


def _rat(band: ET.Element) -> tuple[list[tuple[str, int, int]], list[list[str]]]:
    """(columns as (name, type, usage), rows as text) of a PAM band's raster attribute table."""
    rat = band.find("GDALRasterAttributeTable")
    assert rat is not None, "band 1 has no raster attribute table"
    defs = sorted(rat.findall("FieldDefn"), key=lambda f: int(f.get("index")))
    columns = [(f.findtext("Name"), int(f.findtext("Type")), int(f.findtext("Usage"))) for f in defs]
    rows = sorted(rat.findall("Row"), key=lambda r: int(r.get("index")))
    return columns, [[(f.text or "") for f in r.findall("F")] for r in rows]


def _vectorizer_features(block: np.ndarray, instances: np.ndarray):
    vec = PanopticVectorizer(CLASSES, from_origin(600000.0, 5700000.0, 0.5, 0.5), block.shape[1])
    vec.add_block(0, 0, block, instances, np.full(block.shape, 80, np.uint8))
    return vec.to_geodataframe(crs="EPSG:32632")


# --------------------------------------------------------------------------- vector layer
def test_geopackage_layer_declares_multipolygon_and_every_feature_is_one(scene, tmp_path):
    res = predict_raster(_oracle(scene), scene.image, tmp_path / "out.tif", tmp_path / "out.gpkg", tile_size=64,
                         overlap=16, progress=False)
    info = pyogrio.read_info(res.out_features)
    assert info["geometry_type"] == "MultiPolygon"  # not "Unknown", not "Polygon"
    assert info["layer_name"] == "out" and info["features"] == res.n_features > 0
    assert list(info["fields"]) == FIELDS == FEATURE_COLUMNS
    assert [tuple(layer) for layer in pyogrio.list_layers(res.out_features)] == [("out", "MultiPolygon")]
    gdf = pyogrio.read_dataframe(res.out_features)
    assert (gdf.geometry.geom_type == "MultiPolygon").all() and gdf.geometry.is_valid.all()
    things = gdf[gdf["instance_id"] > 0]
    parts = things.geometry.count_geometries()
    # the two-part tree is one feature of two parts; the ring building keeps its hole
    assert (parts > 1).sum() == 1 and things[parts > 1].iloc[0]["class_name"] == "tree"
    assert parts[parts > 1].iloc[0] == 2
    assert max(len(p.interiors) for g in things.geometry for p in g.geoms) >= 1


def test_features_vectorised_block_by_block_are_multipolygons_in_every_format(scene, tmp_path):
    res = predict_raster(_oracle(scene), scene.image, tmp_path / "out.tif", tile_size=64, overlap=16,
                         progress=False)
    gdf = vectorize_raster(res.out_raster, CLASSES, block_size=50)  # blocks cut objects: pieces are re-joined
    assert len(gdf) > 0 and (gdf.geometry.geom_type == "MultiPolygon").all()
    for name in ("again.gpkg", "again.fgb", "again.geojson"):
        write_features(gdf, tmp_path / name, layer="again")
        info = pyogrio.read_info(tmp_path / name)
        assert info["geometry_type"] == "MultiPolygon", name
        assert list(info["fields"]) == FIELDS, name
        assert (pyogrio.read_dataframe(tmp_path / name).geometry.geom_type == "MultiPolygon").all(), name


def test_one_part_features_are_written_as_multipolygons(tmp_path):
    cls = np.full((20, 20), 3, np.int32)  # grass
    inst = np.zeros((20, 20), np.int32)
    cls[2:6, 2:6], inst[2:6, 2:6] = 5, 1  # one square building: a single polygon
    gdf = _vectorizer_features(cls, inst)
    assert list(gdf.columns[:6]) == FIELDS
    assert list(gdf.geometry.geom_type) == ["MultiPolygon", "MultiPolygon"]
    # a caller's frame of plain Polygons is promoted on writing
    polys = gdf.set_geometry(gpd.GeoSeries([g.geoms[0] for g in gdf.geometry], index=gdf.index, crs=gdf.crs,
                                           name="geometry"))
    assert (polys.geometry.geom_type == "Polygon").all()
    write_features(polys, tmp_path / "polys.gpkg")
    assert pyogrio.read_info(tmp_path / "polys.gpkg")["geometry_type"] == "MultiPolygon"
    back = pyogrio.read_dataframe(tmp_path / "polys.gpkg")
    assert (back.geometry.geom_type == "MultiPolygon").all()
    assert np.allclose(back.geometry.area, gdf.geometry.area)


def test_an_empty_layer_still_declares_multipolygon_and_the_fields(tmp_path):
    void = np.zeros((16, 16), np.int32)
    gdf = _vectorizer_features(void, void)
    assert len(gdf) == 0
    write_features(gdf, tmp_path / "empty.gpkg", layer="empty")
    info = pyogrio.read_info(tmp_path / "empty.gpkg")
    assert info["geometry_type"] == "MultiPolygon" and info["features"] == 0
    assert list(info["fields"]) == FIELDS
    write_features(gdf, tmp_path / "empty.shp")
    assert list(pyogrio.read_info(tmp_path / "empty.shp")["fields"]) == SHAPEFILE_NAMES


def test_shapefile_gets_the_documented_short_field_names(scene, tmp_path):
    res = predict_raster(_oracle(scene), scene.image, tmp_path / "out.tif", tmp_path / "out.shp", tile_size=64,
                         overlap=16, progress=False)
    info = pyogrio.read_info(res.out_features)
    assert list(info["fields"]) == SHAPEFILE_NAMES == [SHAPEFILE_FIELDS[c] for c in FEATURE_COLUMNS]
    assert all(len(name) <= 10 for name in info["fields"])
    # a Shapefile has one polygon type, which holds multi-part polygons: never "Unknown"
    assert info["geometry_type"] in ("Polygon", "MultiPolygon") and info["features"] == res.n_features
    # the renamed fields hold the same values as the raster's own features
    shp = pyogrio.read_dataframe(res.out_features)
    ref = vectorize_raster(res.out_raster, CLASSES)
    assert sorted(shp["instanceid"]) == sorted(ref["instance_id"])
    assert sorted(shp["classvalue"]) == sorted(ref["class_value"])
    assert sorted(shp["class_name"]) == sorted(ref["class_name"])
    assert np.allclose(np.sort(shp["area"].to_numpy()), np.sort(ref["area"].to_numpy()))


def test_shapefile_refuses_a_long_field_name_and_points_to_geopackage(tmp_path):
    cls = np.full((12, 12), 3, np.int32)
    gdf = _vectorizer_features(cls, np.zeros((12, 12), np.int32))
    gdf["segment_score"] = 1.0  # 13 characters: a Shapefile cannot hold the name
    with pytest.raises(ArgumentError, match=r"\.gpkg"):
        write_features(gdf, tmp_path / "long.shp")
    assert not list(tmp_path.iterdir())  # refused before anything is written
    write_features(gdf, tmp_path / "long.gpkg")  # a GeoPackage keeps it
    assert list(pyogrio.read_info(tmp_path / "long.gpkg")["fields"]) == FIELDS + ["segment_score"]


# --------------------------------------------------------------------------- raster attribute table + palette
def test_band1_carries_a_raster_attribute_table_and_a_colour_table(scene, tmp_path):
    res = predict_raster(_oracle(scene), scene.image, tmp_path / "out.tif", tile_size=64, overlap=16,
                         progress=False)
    band = _band1_pam(res.out_raster)
    columns, rows = _rat(band)
    assert columns == [("Value", GFT_INTEGER, GFU_MINMAX), ("ClassName", GFT_STRING, GFU_NAME),
                       ("IsThing", GFT_INTEGER, GFU_GENERIC), ("Red", GFT_INTEGER, GFU_RED),
                       ("Green", GFT_INTEGER, GFU_GREEN), ("Blue", GFT_INTEGER, GFU_BLUE)]
    assert rows == _expected_rat(CLASSES)
    assert rows[3] == ["5", "building", "1", "220", "50", "50"]  # one row spelled out
    # the colour table in the sidecar: one entry per Value 0..max, 0 transparent
    entries = band.find("ColorTable").findall("Entry")
    assert len(entries) == max(CLASSES.values) + 1
    assert entries[0].get("c4") == "0"
    for c in CLASSES:
        e = entries[c.value]
        assert [int(e.get(k)) for k in ("c1", "c2", "c3", "c4")] == [*c.color, 255]
    # what GDAL makes of the file and its sidecar (rasterio reads through GDAL's PAM)
    with rasterio.open(res.out_raster) as src:
        cmap = src.colormap(1)
        for c in CLASSES:
            assert cmap[c.value] == (*c.color, 255)
        assert cmap[0][3] == 0
        tags = src.tags(1)  # the names also travel inside the TIFF
        assert {f"CLASS_{c.value}": c.name for c in CLASSES}.items() <= tags.items()
        assert src.descriptions == ("class", "instance_id", "confidence")


def test_gdal_reads_the_attribute_table(scene, tmp_path):
    gdal = pytest.importorskip("osgeo.gdal")
    res = predict_raster(_oracle(scene), scene.image, tmp_path / "out.tif", tile_size=64, overlap=16,
                         progress=False)
    ds = gdal.Open(str(res.out_raster))
    band = ds.GetRasterBand(1)
    rat = band.GetDefaultRAT()
    assert rat is not None and rat.GetColumnCount() == 6 and rat.GetRowCount() == len(CLASSES)
    assert [rat.GetNameOfCol(i) for i in range(6)] == ["Value", "ClassName", "IsThing", "Red", "Green", "Blue"]
    assert rat.GetUsageOfCol(0) == gdal.GFU_MinMax and rat.GetUsageOfCol(1) == gdal.GFU_Name
    assert [rat.GetUsageOfCol(i) for i in (3, 4, 5)] == [gdal.GFU_Red, gdal.GFU_Green, gdal.GFU_Blue]
    got = [[str(rat.GetValueAsInt(r, 0)), rat.GetValueAsString(r, 1)] + [str(rat.GetValueAsInt(r, i))
                                                                          for i in (2, 3, 4, 5)]
           for r in range(rat.GetRowCount())]
    assert got == _expected_rat(CLASSES)
    ct = band.GetColorTable()
    assert ct is not None and tuple(ct.GetColorEntry(5)) == (220, 50, 50, 255)
    ds = None


def test_a_new_run_replaces_the_sidecar_with_the_raster(scene, tmp_path):
    out = tmp_path / "out.tif"
    predict_raster(_oracle(scene), scene.image, out, tmp_path / "out.gpkg", tile_size=64, overlap=16,
                   progress=False)
    recoloured = ClassTable([ClassInfo(c.value, f"{c.name}_v2", (c.value, 2 * c.value, 3 * c.value), c.is_thing)
                             for c in CLASSES])
    predict_raster(_oracle(scene, recoloured), scene.image, out, tmp_path / "out.gpkg", tile_size=64, overlap=16,
                   overwrite=True, progress=False)
    assert _rat(_band1_pam(out))[1] == _expected_rat(recoloured)
    with rasterio.open(out) as src:
        assert src.colormap(1)[5] == (5, 10, 15, 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg", "out.tif", "out.tif.aux.xml"]


def test_a_trained_models_outputs_carry_its_class_table(trained_model, synthetic_scene, tmp_path):
    """The real path: a MaXDeepLab model's predict_raster; the RAT is the model's class table."""
    res = trained_model.predict_raster(synthetic_scene.raster, tmp_path / "pred.tif",
                                       out_features=tmp_path / "pred.gpkg", progress=False, class_threshold=0.0,
                                       mask_threshold=0.0)
    assert _rat(_band1_pam(res.out_raster))[1] == _expected_rat(trained_model.class_table)
    with rasterio.open(res.out_raster) as src:
        cmap = src.colormap(1)
    assert all(cmap[c.value] == (*c.color, 255) for c in trained_model.class_table)
    info = pyogrio.read_info(res.out_features)
    assert info["geometry_type"] == "MultiPolygon" and list(info["fields"]) == FIELDS
    assert info["features"] == res.n_features
    if res.n_features:
        assert (pyogrio.read_dataframe(res.out_features).geometry.geom_type == "MultiPolygon").all()
