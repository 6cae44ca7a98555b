"""predict_raster with an oracle per-tile predictor: stitching, raster and vector outputs, errors."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from inference_scene import (
    CLASSES,
    CRS,
    NODATA_BOX,
    ONE_BAND_NODATA_BOX,
    TRANSFORM,
    H,
    W,
    assert_same_features,
    write_image,
)
from scipy import ndimage

from geomax.data.rasterize import rasterize_labels
from geomax.errors import ArgumentError, DataError, InputMismatchError, ModelError, OutputExistsError
from geomax.inference.predict_raster import predict_raster
from geomax.inference.predictor import OracleTilePredictor, TilePredictor
from geomax.inference.tiling import TileGrid

FOUR = ndimage.generate_binary_structure(2, 1)


def assert_same_instances(out: np.ndarray, truth: np.ndarray) -> None:
    """Instance maps equal up to renumbering: the same pixels carry an id, and ids correspond one to one."""
    assert np.array_equal(out > 0, truth > 0)
    m = truth > 0
    pairs = np.unique(np.stack([truth[m], out[m]]), axis=1)
    n = pairs.shape[1]
    assert len(np.unique(pairs[0])) == n, "one true object got several output ids (split at a tile border?)"
    assert len(np.unique(pairs[1])) == n, "one output id covers several true objects (wrong merge)"


def piecewise(instance_map: np.ndarray) -> np.ndarray:
    """Each 4-connected piece of each instance as its own instance."""
    out = np.zeros(instance_map.shape, np.int64)
    n_total = 0
    for i in np.unique(instance_map[instance_map > 0]):
        comp, n = ndimage.label(instance_map == i, structure=FOUR)
        out[comp > 0] = comp[comp > 0] + n_total
        n_total += n
    return out


def read_out(path):
    with rasterio.open(path) as src:
        return src.read()


def oracle(scene, **kw):
    return OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES, **kw)


def test_oracle_is_a_tile_predictor(scene):
    assert isinstance(oracle(scene), TilePredictor)


@pytest.mark.parametrize("tile_size,overlap", [(64, 16), (96, 32), (72, 10), (128, 64), (256, 32)])
@pytest.mark.parametrize("view", ["global", "tile"])
def test_stitched_raster_equals_ground_truth(scene, tmp_path, tile_size, overlap, view):
    res = predict_raster(oracle(scene, view=view), scene.image, tmp_path / "out.tif", tile_size=tile_size,
                         overlap=overlap, batch_size=3, progress=False)
    cls, inst, conf = read_out(res.out_raster)
    assert np.array_equal(cls, scene.class_map)
    truth = scene.instance_map if view == "global" else piecewise(scene.instance_map)
    assert_same_instances(inst, truth)
    assert res.n_instances == len(np.unique(truth[truth > 0])) == inst.max()
    assert ((conf > 0) == (cls > 0)).all() and conf.max() <= 100
    # a multi-tile grid really cut objects, and the merges repaired them
    assert res.n_tiles > 1 and res.n_merges > 0


def test_overlap_zero_leaves_cut_objects_split(scene, tmp_path):
    res = predict_raster(oracle(scene), scene.image, tmp_path / "out.tif", tile_size=64, overlap=0,
                         progress=False)
    _, inst, _ = read_out(res.out_raster)
    truth = scene.instance_map
    assert np.array_equal(inst > 0, truth > 0)
    assert res.n_instances > len(np.unique(truth[truth > 0]))  # documented: no overlap, no merging


def test_raster_georeference_nodata_and_cog_layout(scene, tmp_path):
    labels = rasterize_labels(scene.labels, "class_name", CLASSES, TRANSFORM, (H, W))  # no-data not cut out
    res = predict_raster(OracleTilePredictor(labels, CLASSES), scene.image, tmp_path / "out.tif", tile_size=64,
                         overlap=16, progress=False)
    with rasterio.open(res.out_raster) as src, rasterio.open(scene.image) as img:
        assert src.crs == img.crs and src.transform == img.transform and src.shape == img.shape
        assert src.count == 3 and src.nodata == 0 and src.dtypes[0] == "uint8"
        assert src.descriptions == ("class", "instance_id", "confidence")
        assert src.profile["tiled"] and src.profile.get("compress", "").lower() == "deflate"
        assert src.overviews(1) == [2]
        cmap = src.colormap(1)
        assert cmap[5][:3] == (220, 50, 50) and cmap[0][3] == 0
        cls = src.read(1)
        valid = img.dataset_mask() > 0
    r0, c0, r1, c1 = NODATA_BOX
    assert (cls[r0:r1, c0:c1] == 0).all() and not valid[r0:r1, c0:c1].any()
    r0, c0, r1, c1 = ONE_BAND_NODATA_BOX
    assert (cls[r0:r1, c0:c1] == 0).all() and valid[r0:r1, c0:c1].all()  # no data in one band is no data
    assert (cls[r1:r1 + 5, c0:c1] > 0).all()  # ... the labelled pixels around it are predicted
    # nothing but the two outputs is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.tif.aux.xml"]


def test_vector_features_match_the_raster(scene, tmp_path):
    res = predict_raster(oracle(scene, view="global"), scene.image, tmp_path / "out.tif", tmp_path / "out.gpkg",
                         tile_size=64, overlap=16, progress=False)
    cls, inst, conf = read_out(res.out_raster)
    gdf = gpd.read_file(res.out_features)
    assert gdf.crs == rasterio.crs.CRS.from_string(CRS)
    assert list(gdf.columns[:6]) == ["instance_id", "class_value", "class_name", "is_thing", "confidence", "area"]
    px = abs(TRANSFORM.a * TRANSFORM.e)
    things = gdf[gdf.instance_id > 0]
    assert sorted(things.instance_id) == list(range(1, inst.max() + 1))
    for row in things.itertuples():
        m = inst == row.instance_id
        assert row.area == pytest.approx(m.sum() * px)
        assert row.geometry.area == pytest.approx(row.area)
        assert row.class_value == np.unique(cls[m]).item() and row.is_thing
        assert row.class_name == CLASSES.by_value(row.class_value).name
        assert row.confidence == pytest.approx(conf[m].mean())
    stuff = gdf[gdf.instance_id == 0]
    expected_regions = 0
    for value in CLASSES.stuff_values:
        comp, n = ndimage.label((cls == value) & (inst == 0), structure=FOUR)
        expected_regions += n
        areas = sorted(np.bincount(comp.ravel())[1:] * px)
        assert sorted(stuff[stuff.class_value == value].area) == pytest.approx(areas)
    assert len(stuff) == expected_regions
    assert len(stuff) > 0 and np.allclose(stuff.geometry.area.to_numpy(), stuff.area.to_numpy())
    assert gdf.geometry.is_valid.all()
    # every feature is a MultiPolygon; the ring keeps its hole, the two-part tree is one feature of two parts
    assert (gdf.geometry.geom_type == "MultiPolygon").all()
    holes = [len(p.interiors) for g in things.geometry for p in g.geoms]
    assert max(holes) >= 1
    multi = things[things.geometry.count_geometries() > 1]
    assert len(multi) == 1 and multi.iloc[0].class_name == "tree" and len(multi.iloc[0].geometry.geoms) == 2
    # total area of all features = all labelled pixels
    assert gdf.area.sum() == pytest.approx((cls > 0).sum() * px)


def test_simplification_and_other_vector_formats(scene, tmp_path):
    res = predict_raster(oracle(scene), scene.image, tmp_path / "out.tif", tmp_path / "out.shp", tile_size=96,
                         overlap=32, simplify_tolerance=1.0, progress=False)
    gdf = gpd.read_file(res.out_features)
    assert len(gdf) == res.n_features and gdf.geometry.is_valid.all()
    assert not [p.name for p in tmp_path.iterdir() if not p.name.startswith("out.")]  # no partial files left
    full = predict_raster(oracle(scene), scene.image, tmp_path / "b.tif", tmp_path / "b.geojson", tile_size=96,
                          overlap=32, progress=False)
    g2 = gpd.read_file(full.out_features)
    n_vertices = lambda s: int(s.geometry.count_coordinates().sum())  # noqa: E731
    assert n_vertices(gdf) < n_vertices(g2)


def test_four_band_scene_with_band_names_and_order(scene, tmp_path):
    names = ["red", "green", "blue", "nir"]
    image = write_image(tmp_path / "four.tif", n_bands=4, dtype="uint16", names=names)
    ok = oracle(scene, n_bands=4, band_names=names)
    res = predict_raster(ok, image, tmp_path / "out.tif", tile_size=64, overlap=16, progress=False)
    cls, inst, _ = read_out(res.out_raster)
    assert np.array_equal(cls, scene.class_map)
    assert_same_instances(inst, scene.instance_map)
    reordered = oracle(scene, n_bands=4, band_names=["nir", "red", "green", "blue"])
    with pytest.raises(InputMismatchError, match=r"bands=\[4, 1, 2, 3\]"):
        predict_raster(reordered, image, tmp_path / "o2.tif", tile_size=64, overlap=16, progress=False)
    assert not (tmp_path / "o2.tif").exists()
    predict_raster(reordered, image, tmp_path / "o2.tif", tile_size=64, overlap=16, bands=[4, 1, 2, 3],
                   progress=False)
    three = oracle(scene, n_bands=3, band_names=["red", "green", "blue"])
    with pytest.raises(InputMismatchError, match=r"4 bands .* takes 3.*bands=\[1, 2, 3\]"):
        predict_raster(three, image, tmp_path / "o3.tif", tile_size=64, overlap=16, progress=False)


class _Recorder(TilePredictor):
    """Wraps a predictor and records the batches it receives."""

    def __init__(self, inner):
        self.inner = inner
        self.n_bands, self.class_table, self.band_names = inner.n_bands, inner.class_table, inner.band_names
        self.tile_multiple, self.chip_size = inner.tile_multiple, inner.chip_size
        self.batches = []

    def predict_tiles(self, tiles, valid, windows=None):
        self.batches.append((tiles.shape, tiles.dtype, valid.copy(), windows))
        return self.inner.predict_tiles(tiles, valid, windows=windows)


def test_predictor_gets_batched_raw_tiles_with_validity(scene, tmp_path):
    rec = _Recorder(oracle(scene))
    predict_raster(rec, scene.image, tmp_path / "out.tif", tile_size=64, overlap=16, batch_size=4, progress=False)
    shapes = [b[0] for b in rec.batches]
    assert all(s[1:] == (3, 64, 64) for s in shapes) and max(s[0] for s in shapes) == 4
    assert all(b[1] == np.uint8 for b in rec.batches)
    first_valid, first_window = rec.batches[0][2][0], rec.batches[0][3][0]
    assert first_window.row_off == -8 and first_window.col_off == -8  # boundless at the edge
    assert not first_valid[:8].any() and not first_valid[:, :8].any()  # outside the raster
    assert not first_valid[8:28, 8:38].any() and first_valid[30:58, 40:].all()  # the no-data corner
    assert not first_valid[58:, 58:].any() and first_valid[58:, 40:58].all()  # no data in one band (rows 50..)


def test_no_crs_warns_and_still_works(scene, tmp_path):
    image = write_image(tmp_path / "nocrs.tif", crs=None)
    with pytest.warns(UserWarning, match="no CRS"):
        res = predict_raster(oracle(scene), image, tmp_path / "out.tif", tmp_path / "out.gpkg", tile_size=64,
                             overlap=16, progress=False)
    with rasterio.open(res.out_raster) as src:
        assert src.crs is None and src.transform == TRANSFORM
    assert gpd.read_file(res.out_features).crs is None


def test_existing_output_is_kept_unless_overwrite(scene, tmp_path):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    rec = _Recorder(oracle(scene))
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        predict_raster(rec, scene.image, out, tile_size=64, overlap=16, progress=False)
    assert out.read_bytes() == b"precious" and rec.batches == []
    feats = tmp_path / "f.gpkg"
    feats.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        predict_raster(rec, scene.image, tmp_path / "new.tif", feats, tile_size=64, overlap=16, progress=False)
    assert rec.batches == [] and not (tmp_path / "new.tif").exists()
    predict_raster(rec, scene.image, out, feats, tile_size=64, overlap=16, overwrite=True, progress=False)
    assert np.array_equal(read_out(out)[0], scene.class_map) and len(gpd.read_file(feats)) > 0


class _Failing(_Recorder):
    def predict_tiles(self, tiles, valid, windows=None):
        if len(self.batches) == 3:
            raise RuntimeError("out of memory")
        return super().predict_tiles(tiles, valid, windows)


def test_interrupted_run_leaves_no_output(scene, tmp_path):
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_raster(_Failing(oracle(scene)), scene.image, tmp_path / "out.tif", tmp_path / "out.gpkg",
                       tile_size=64, overlap=16, batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(tile_size=60, overlap=16), InputMismatchError, "multiple of 32"),
    (dict(tile_size=64, overlap=40), ArgumentError, "2 \\* overlap"),
    (dict(tile_size=64, overlap=16, bands=[1, 2, 7]), ArgumentError, "not in 1..3"),
    (dict(tile_size=64, overlap=16, bands=[1, 2]), InputMismatchError, "takes 3"),
    (dict(tile_size=64, overlap=16, out_features="x.csv"), ArgumentError, "unknown extension"),
])
def test_bad_arguments_raise_before_work(scene, tmp_path, kwargs, error, pattern):
    rec = _Recorder(oracle(scene, tile_multiple=32))
    rec.tile_multiple = 32
    if "out_features" in kwargs:
        kwargs["out_features"] = tmp_path / kwargs["out_features"]
    with pytest.raises(error, match=pattern):
        predict_raster(rec, scene.image, tmp_path / "out.tif", progress=False, **kwargs)
    assert rec.batches == [] and list(tmp_path.iterdir()) == []


def test_bad_inputs_and_outputs(scene, tmp_path):
    orc = oracle(scene)
    with pytest.raises(DataError, match="does not exist"):
        predict_raster(orc, tmp_path / "missing.tif", tmp_path / "out.tif", progress=False)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(DataError, match="corrupt"):
        predict_raster(orc, corrupt, tmp_path / "out.tif", progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ArgumentError, match="writable"):
        predict_raster(orc, scene.image, blocker / "sub" / "out.tif", tile_size=64, overlap=16, progress=False)
    with pytest.raises(ArgumentError, match="is the input raster"):
        predict_raster(orc, scene.image, scene.image, tile_size=64, overlap=16, overwrite=True, progress=False)
    with pytest.raises(ModelError, match="not a per-tile predictor"):
        predict_raster(object(), scene.image, tmp_path / "out.tif", progress=False)
    with pytest.raises(ModelError, match="does not exist"):
        predict_raster(tmp_path / "no_model.emd", scene.image, tmp_path / "out.tif", progress=False)
    assert not (tmp_path / "out.tif").exists()


def test_malformed_predictor_results_raise_model_error(scene, tmp_path):
    class Shrinking(_Recorder):
        def predict_tiles(self, tiles, valid, windows=None):
            return super().predict_tiles(tiles[:, :, :32, :32], valid[:, :32, :32],
                                         [w.__class__(w.col_off, w.row_off, 32, 32) for w in windows])

    with pytest.raises(ModelError, match="tile's size"):
        predict_raster(Shrinking(oracle(scene)), scene.image, tmp_path / "out.tif", tile_size=64, overlap=16,
                       progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_counts_tiles(scene, tmp_path, capsys):
    predict_raster(oracle(scene), scene.image, tmp_path / "out.tif", tile_size=64, overlap=16, progress=True)
    out = capsys.readouterr().out
    assert "30/30" in out


def test_all_nodata_tiles_are_not_sent_to_the_predictor(scene, tmp_path):
    rec = _Recorder(oracle(scene))
    predict_raster(rec, scene.image, tmp_path / "out.tif", tile_size=20, overlap=4, batch_size=1, progress=False)
    grid = TileGrid(230, 270, 20, 4)
    # the first tile covers only outside pixels and the no-data corner
    assert rec.batches[0][3][0] != grid.tile_window(0, 0)
    assert sum(b[0][0] for b in rec.batches) == len(grid) - 1


def test_synthetic_scene_no_object_split(tmp_path):
    """A synthetic scene (touching buildings, tree clusters, cars) with vector labels rasterised per tile."""
    from geomax.data.rasterize import rasterize_labels
    from geomax.data.synthetic import make_scene

    info = make_scene(tmp_path / "scene.tif", tmp_path / "labels.gpkg", size=384, seed=1, bands=4,
                      nodata_border=5)
    labels = gpd.read_file(info.labels)
    orc = OracleTilePredictor(labels, info.class_table, n_bands=4, band_names=list(info.band_names),
                              transform=info.transform, class_field=info.class_field, view="tile")
    res = predict_raster(orc, info.raster, tmp_path / "out.tif", tmp_path / "out.gpkg", tile_size=128,
                         overlap=32, progress=False)
    cls_true, inst_true = rasterize_labels(labels, info.class_field, info.class_table, info.transform,
                                           (info.size, info.size))
    with rasterio.open(info.raster) as src:
        valid = src.dataset_mask() > 0
    cls_true[~valid] = 0
    inst_true[~valid] = 0
    cls, inst, _ = read_out(res.out_raster)
    assert np.array_equal(cls, cls_true)
    assert_same_instances(inst, piecewise(inst_true))
    gdf = gpd.read_file(res.out_features)
    assert (gdf.instance_id > 0).sum() == res.n_instances
    assert gdf.area.sum() == pytest.approx((cls > 0).sum() * abs(info.transform.a * info.transform.e))


def test_vectorize_raster_reads_back_the_same_features(scene, tmp_path):
    from geomax.inference.vectorize import vectorize_raster

    res = predict_raster(oracle(scene, view="tile"), scene.image, tmp_path / "out.tif", tmp_path / "out.gpkg",
                         tile_size=96, overlap=32, progress=False)
    again = vectorize_raster(res.out_raster, CLASSES, block_size=50)  # other block borders, same features
    first = gpd.read_file(res.out_features)
    key = ["instance_id", "class_value", "area"]
    assert len(again) == len(first)
    a = again.sort_values(key).reset_index(drop=True)
    b = first.sort_values(key).reset_index(drop=True)
    assert np.array_equal(a[key].to_numpy(), b[key].to_numpy())
    assert np.allclose(a.geometry.area, b.geometry.area)
    assert a.geometry.geom_equals(b.geometry).all()


@pytest.mark.parametrize("name", ["out.gpkg", "out.shp", "out.fgb"])
def test_features_written_by_rows_of_blocks_equal_the_features_written_at_the_end(scene, tmp_path, monkeypatch,
                                                                                   name):
    from geomax.inference import job
    from geomax.inference.vectorize import vectorize_raster, write_features

    monkeypatch.setattr(job, "_REWRITE_BLOCK", 40)  # 6 rows of 7 blocks: most objects cross a block border
    batches = []
    write = job.FeatureWriter.write
    monkeypatch.setattr(job.FeatureWriter, "write", lambda self, gdf: (batches.append(len(gdf)), write(self, gdf)))
    res = predict_raster(oracle(scene, view="tile"), scene.image, tmp_path / "out.tif", tmp_path / name,
                         tile_size=64, overlap=16, progress=False)
    assert len(batches) == 7 and sum(n > 0 for n in batches) >= 4  # written while the blocks came
    assert res.n_features == sum(batches)
    # all features kept to the end over the same blocks, written at once: what the job wrote before streaming
    at_end = vectorize_raster(res.out_raster, CLASSES, block_size=40)
    (tmp_path / "at_end").mkdir()
    write_features(at_end, tmp_path / "at_end" / name, layer="out")
    assert res.n_features == len(at_end)
    assert_same_features(gpd.read_file(res.out_features), gpd.read_file(tmp_path / "at_end" / name))
    assert not [p.name for p in tmp_path.iterdir() if not p.name.startswith("out.") and p.name != "at_end"]


def test_the_predictors_saved_tiling_is_the_base_unless_the_caller_gives_one(scene, tmp_path):
    from geomax.config import TilingConfig

    class WithSavedTiling(OracleTilePredictor):
        saved_tiling = TilingConfig(tile_size=48, overlap=8)

    predictor = WithSavedTiling((scene.class_map, scene.instance_map), CLASSES)
    res = predict_raster(predictor, scene.image, tmp_path / "a.tif", progress=False)
    assert (res.tiling.tile_size, res.tiling.overlap) == (48, 8)
    res = predict_raster(predictor, scene.image, tmp_path / "b.tif", overlap=4, progress=False)
    assert (res.tiling.tile_size, res.tiling.overlap) == (48, 4)  # an override replaces one field
    res = predict_raster(predictor, scene.image, tmp_path / "c.tif", tiling=TilingConfig(tile_size=64),
                         progress=False)
    assert res.tiling.tile_size == 64  # the caller's tiling wins
