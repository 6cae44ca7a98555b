"""Tests of geomax.inference.vectorize: the background class is left out by default; features taken while the
blocks come equal the features at the end; batches appended by FeatureWriter equal one write."""
import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from inference_scene import CLASSES, CRS, H, W, assert_same_features, ground_truth, label_frame
from inference_scene import TRANSFORM as SCENE_TRANSFORM
from rasterio.transform import from_origin

from geomax.data.classes import BACKGROUND_NAME, ClassInfo, ClassTable
from geomax.inference import vectorize
from geomax.inference.vectorize import FEATURE_COLUMNS, FeatureWriter, PanopticVectorizer, write_features

TABLE = ClassTable([ClassInfo(1, "building", (200, 0, 0), True), ClassInfo(2, BACKGROUND_NAME, (190, 190, 190), False),
                    ClassInfo(3, "water", (0, 0, 200), False)])


def _features(**kwargs):
    cls = np.full((20, 20), 2, np.int32)
    inst = np.zeros((20, 20), np.int32)
    cls[2:6, 2:6], inst[2:6, 2:6] = 1, 1
    cls[10:14, 10:16], inst[10:14, 10:16] = 1, 2
    cls[16:, :] = 3
    vec = PanopticVectorizer(TABLE, from_origin(0, 20, 1, 1), 20, **kwargs)
    vec.add_block(0, 0, cls, inst, np.full((20, 20), 90, np.uint8))
    return vec.to_geodataframe(crs="EPSG:32633")


def test_background_is_left_out_of_the_features_by_default():
    gdf = _features()
    assert sorted(gdf["class_name"]) == ["building", "building", "water"]


def test_every_class_when_asked():
    gdf = _features(skip_values=[])
    assert sorted(gdf["class_name"]) == [BACKGROUND_NAME, "building", "building", "water"]
    bg = gdf[gdf["class_name"] == BACKGROUND_NAME].geometry.iloc[0]
    assert bg.area == 20 * 16 - 16 - 24  # the complement of the buildings above the water


# --------------------------------------------------------------------------- features taken while the blocks come
@pytest.fixture(scope="module")
def maps():
    """Class, instance and confidence maps of the inference scene (objects crossing many small blocks)."""
    cls, inst = ground_truth(label_frame())
    conf = np.random.default_rng(0).integers(1, 101, cls.shape).astype(np.uint8)
    return cls, inst, conf


def _blocks(side: int, *maps: np.ndarray):
    """``(row_off, col_off, end_of_row, block of each map)`` in raster order."""
    h, w = maps[0].shape
    for r0 in range(0, h, side):
        for c0 in range(0, w, side):
            yield r0, c0, c0 + side >= w, [m[r0:r0 + side, c0:c0 + side] for m in maps]


def _last_rows(inst: np.ndarray) -> np.ndarray:
    last = np.full(int(inst.max()) + 1, -1)
    np.maximum.at(last, inst.ravel(), np.indices(inst.shape)[0].ravel())
    last[0] = -1
    return last


def _bottom_rows(gdf) -> np.ndarray:
    """The pixel row under each feature's lowest pixel."""
    return np.rint((SCENE_TRANSFORM.f - gdf.bounds["miny"].to_numpy()) / -SCENE_TRANSFORM.e).astype(int)


@pytest.mark.parametrize("side", [24, 50])
def test_features_taken_row_by_row_equal_the_features_written_at_the_end(maps, side):
    cls, inst, conf = maps
    at_end = PanopticVectorizer(CLASSES, SCENE_TRANSFORM, W)
    streamed = PanopticVectorizer(CLASSES, SCENE_TRANSFORM, W, thing_last_rows=_last_rows(inst))
    taken, rows_done = [], 0
    for r0, c0, end_of_row, block in _blocks(side, cls, inst, conf):
        at_end.add_block(r0, c0, *block)
        streamed.add_block(r0, c0, *block)
        if end_of_row:
            rows_done = r0 + block[0].shape[0]
            batch = streamed.take_complete(crs=CRS)
            # a feature is taken only once all its pixels have been added
            assert (_bottom_rows(batch) <= rows_done).all()
            taken.append(batch)
    last_band = rows_done - side if H % side == 0 else H - H % side
    rest = streamed.to_geodataframe(crs=CRS)
    # nothing complete was held to the end: what is left reaches the last row of blocks
    assert (_bottom_rows(rest) >= last_band).all()
    assert sum(len(b) for b in taken) > len(rest) > 0
    expected = at_end.to_geodataframe(crs=CRS)
    assert_same_features(pd.concat(taken + [rest], ignore_index=True), expected)
    # the test means something: things and stuff regions cut into pieces by the blocks came back whole
    pieces = {i: len({(r // side, c // side) for r, c in zip(*np.nonzero(inst == i))}) for i in range(1, inst.max() + 1)}
    assert sum(n > 1 for n in pieces.values()) >= 5
    stuff = expected[expected.instance_id == 0]
    assert ((stuff.bounds["maxy"] - stuff.bounds["miny"]) / -SCENE_TRANSFORM.e > side).sum() >= 3


def test_an_instance_in_two_parts_is_taken_after_its_last_part():
    cls = np.full((24, 8), 3, np.int32)  # water everywhere
    inst = np.zeros((24, 8), np.int32)
    cls[1:3, 1:3], inst[1:3, 1:3] = 1, 1  # one building in two parts, 16 rows apart
    cls[17:19, 1:3], inst[17:19, 1:3] = 1, 1
    cls[9:11, 5:7], inst[9:11, 5:7] = 1, 2  # another building in the middle
    vec = PanopticVectorizer(TABLE, from_origin(0, 24, 1, 1), 8, thing_last_rows=_last_rows(inst))
    ids_by_row = []
    for r0, c0, _, block in _blocks(8, cls, inst, np.full((24, 8), 90, np.uint8)):
        vec.add_block(r0, c0, *block)
        ids_by_row.append(sorted(vec.take_complete()["instance_id"]))
    assert ids_by_row[:2] == [[], [2]]  # instance 1 is held while its second part is to come
    rest = vec.to_geodataframe()
    assert ids_by_row[2] == [1] and len(rest) == 1 and rest.iloc[0]["class_name"] == "water"  # the open stuff
    assert vec.n_pending == 3  # held: the water's piece of each block, nothing else


def test_without_thing_last_rows_things_are_kept_to_the_end_and_stuff_is_taken():
    cls = np.full((16, 8), 3, np.int32)
    inst = np.zeros((16, 8), np.int32)
    cls[8:, :] = 2  # background below: water ends in the first row of blocks
    cls[1:3, 1:3], inst[1:3, 1:3] = 1, 1
    vec = PanopticVectorizer(TABLE, from_origin(0, 16, 1, 1), 8)
    vec.add_block(0, 0, cls[:8], inst[:8], np.full((8, 8), 90, np.uint8))
    assert list(vec.take_complete()["class_name"]) == []  # water touches the last row added
    vec.add_block(8, 0, cls[8:], inst[8:], np.full((8, 8), 90, np.uint8))
    assert list(vec.take_complete()["class_name"]) == ["water"]
    assert list(vec.to_geodataframe()["instance_id"]) == [1]


def test_an_instance_below_its_last_row_is_refused():
    cls = np.full((16, 8), 3, np.int32)
    inst = np.zeros((16, 8), np.int32)
    cls[10:12, 1:3], inst[10:12, 1:3] = 1, 1
    vec = PanopticVectorizer(TABLE, from_origin(0, 16, 1, 1), 8, thing_last_rows=np.array([-1, 5]))
    vec.add_block(0, 0, cls[:8], inst[:8], np.full((8, 8), 90, np.uint8))
    with pytest.raises(ValueError, match="Instance 1 has pixels from row 8"):
        vec.add_block(8, 0, cls[8:], inst[8:], np.full((8, 8), 90, np.uint8))


# --------------------------------------------------------------------------- FeatureWriter
@pytest.mark.parametrize("name,streams_arrow", [("f.gpkg", True), ("f.shp", True), ("f.fgb", True),
                                                ("f.geojson", True), ("f.fgb", False)])
def test_batches_appended_equal_one_write(maps, tmp_path, monkeypatch, name, streams_arrow):
    if not streams_arrow:  # pyogrio before 0.10 / GDAL before 3.8: FlatGeobuf batches are appended to the file
        monkeypatch.setattr(vectorize, "_streams_arrow", lambda: False)
    cls, inst, conf = maps
    vec = PanopticVectorizer(CLASSES, SCENE_TRANSFORM, W)
    for r0, c0, _, block in _blocks(50, cls, inst, conf):
        vec.add_block(r0, c0, *block)
    gdf = vec.to_geodataframe(crs=CRS)
    (tmp_path / "one").mkdir()
    write_features(gdf, tmp_path / "one" / name, layer="f")
    writer = FeatureWriter(tmp_path / name, layer="f")
    for part in (gdf.iloc[:5], gdf.iloc[:0], gdf.iloc[5:12], gdf.iloc[12:]):
        writer.write(part)
    assert writer.close() == len(gdf)
    info, one = pyogrio.read_info(tmp_path / name), pyogrio.read_info(tmp_path / "one" / name)
    for key in ("geometry_type", "fields", "dtypes", "crs", "layer_name", "features"):
        assert np.array_equal(info[key], one[key]), key
    assert_same_features(gpd.read_file(tmp_path / name), gpd.read_file(tmp_path / "one" / name))
    stem = name.split(".")[0]
    assert all(p.name.startswith(stem + ".") for p in tmp_path.iterdir() if p.is_file())  # no spool left


@pytest.mark.parametrize("name", ["empty.gpkg", "empty.fgb"])
def test_a_writer_given_only_empty_batches_writes_an_empty_layer(tmp_path, name):
    vec = PanopticVectorizer(TABLE, from_origin(0, 8, 1, 1), 8)
    vec.add_block(0, 0, np.zeros((8, 8), np.int32), np.zeros((8, 8), np.int32), np.zeros((8, 8), np.uint8))
    writer = FeatureWriter(tmp_path / name)
    writer.write(vec.take_complete(crs=CRS))
    writer.write(vec.to_geodataframe(crs=CRS))
    assert writer.close() == 0
    info = pyogrio.read_info(tmp_path / name)
    assert info["geometry_type"] == "MultiPolygon" and list(info["fields"]) == FEATURE_COLUMNS
    assert len(pyogrio.read_dataframe(tmp_path / name)) == 0
