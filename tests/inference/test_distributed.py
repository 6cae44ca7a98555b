"""predict_raster_distributed on a LocalCluster of 2 worker processes equals the single-process predict_raster."""
from __future__ import annotations

import shutil
from functools import partial

import geopandas as gpd
import numpy as np
import pytest
import rasterio

distributed = pytest.importorskip("distributed")

from inference_scene import CLASSES, assert_same_features, write_image  # noqa: E402

from geomax.errors import DataError, InputMismatchError, OutputExistsError  # noqa: E402
from geomax.inference import distributed as dist_module  # noqa: E402
from geomax.inference.distributed import local_cluster, predict_raster_distributed  # noqa: E402
from geomax.inference.predict_raster import predict_raster  # noqa: E402
from geomax.inference.predictor import OracleTilePredictor  # noqa: E402
from geomax.inference.tiling import TileGrid  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = local_cluster(n_workers=2, threads_per_worker=1)  # LocalCluster, processes=True
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def read_bands(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


def assert_same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> None:
    """Instance maps equal up to renumbering: same labelled pixels, ids correspond one to one."""
    assert np.array_equal(a > 0, b > 0)
    m = a > 0
    pairs = np.unique(np.stack([a[m], b[m]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def assert_same_outputs(single_tif, dist_tif, single_gpkg=None, dist_gpkg=None) -> None:
    (s, s_prof), (d, d_prof) = read_bands(single_tif), read_bands(dist_tif)
    assert s_prof["transform"] == d_prof["transform"] and s_prof["crs"] == d_prof["crs"]
    assert s_prof["dtype"] == d_prof["dtype"] and s_prof["nodata"] == d_prof["nodata"]
    np.testing.assert_array_equal(s[0], d[0])  # class Values
    np.testing.assert_array_equal(s[2], d[2])  # confidence
    assert_same_up_to_renumbering(s[1], d[1])
    assert s[1].max() == d[1].max()  # ids 1..n in both
    if single_gpkg is None:
        return
    fs, fd = gpd.read_file(single_gpkg), gpd.read_file(dist_gpkg)
    assert len(fs) == len(fd) and fs.crs == fd.crs
    m = s[1] > 0
    lut = dict(zip(*np.unique(np.stack([s[1][m], d[1][m]]), axis=1).tolist()))
    things_s, things_d = fs[fs.instance_id > 0], fd[fd.instance_id > 0].set_index("instance_id")
    assert len(things_s) == len(things_d)
    for _, row in things_s.iterrows():
        other = things_d.loc[lut[row.instance_id]]
        assert other.class_value == row.class_value and other.class_name == row.class_name
        assert other.confidence == pytest.approx(row.confidence) and other.area == pytest.approx(row.area)
        assert other.geometry.geom_type == row.geometry.geom_type
        assert other.geometry.symmetric_difference(row.geometry).area == pytest.approx(0.0, abs=1e-9)
    stuff_s = fs[fs.instance_id == 0].reset_index(drop=True)
    stuff_d = fd[fd.instance_id == 0].reset_index(drop=True)
    assert len(stuff_s) == len(stuff_d)
    for (_, a), (_, b) in zip(stuff_s.iterrows(), stuff_d.iterrows()):
        assert a.class_value == b.class_value and a.area == pytest.approx(b.area)
        assert a.geometry.symmetric_difference(b.geometry).area == pytest.approx(0.0, abs=1e-9)


def instances_across_blocks(instance_map: np.ndarray, grid: TileGrid, block_tiles: int) -> int:
    """Thing instances whose pixels lie in the cores of more than one block."""
    block_px = grid.stride * block_tiles
    rows, cols = np.indices(instance_map.shape)
    block_id = (rows // block_px) * 1000 + cols // block_px
    m = instance_map > 0
    pairs = np.unique(np.stack([instance_map[m], block_id[m]]), axis=1)
    ids, n_blocks = np.unique(pairs[0], return_counts=True)
    return int((n_blocks > 1).sum())


@pytest.mark.parametrize("view,tile_size,overlap,block_size",
                         [("tile", 64, 16, 96), ("global", 96, 32, 128), ("tile", 64, 0, 128)])
def test_distributed_equals_single_process(scene, tmp_path, client, view, tile_size, overlap, block_size):
    labels = (scene.class_map, scene.instance_map)
    single = predict_raster(OracleTilePredictor(labels, CLASSES, view=view, tile_multiple=16), scene.image,
                            tmp_path / "single.tif", out_features=tmp_path / "single.gpkg", tile_size=tile_size,
                            overlap=overlap, batch_size=3, progress=False)
    # a factory: every worker builds (and keeps) its own predictor
    factory = partial(OracleTilePredictor, labels, CLASSES, view=view, tile_multiple=16, seed=7)
    [res] = predict_raster_distributed(factory, scene.image, tmp_path / "dist.tif",
                                       out_features=tmp_path / "dist.gpkg", client=client, tile_size=tile_size,
                                       overlap=overlap, batch_size=2, block_size=block_size, progress=False)
    assert res.out_raster == tmp_path / "dist.tif" and res.out_features == tmp_path / "dist.gpkg"
    assert (res.n_tiles, res.n_instances, res.n_features, res.n_merges) == \
        (single.n_tiles, single.n_instances, single.n_features, single.n_merges)
    assert_same_outputs(tmp_path / "single.tif", tmp_path / "dist.tif", tmp_path / "single.gpkg",
                        tmp_path / "dist.gpkg")
    # the test means something: several blocks, and objects cut by block borders came back whole
    grid = TileGrid(*scene.class_map.shape, tile_size, overlap)
    block_tiles = block_size // grid.stride
    assert -(-grid.n_rows // block_tiles) * -(-grid.n_cols // block_tiles) >= 4
    out_inst = read_bands(tmp_path / "dist.tif")[0][1]
    if overlap:
        assert instances_across_blocks(out_inst, grid, block_tiles) >= 3
    # no temporary files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.gpkg", "dist.tif", "dist.tif.aux.xml",
                                                          "single.gpkg", "single.tif", "single.tif.aux.xml"]


def test_features_written_by_rows_of_blocks_equal_the_features_written_at_the_end(scene, tmp_path, client,
                                                                                   monkeypatch):
    """Instances end where the last block core holding them ends: their features are written after that row."""
    from geomax.inference import job
    from geomax.inference.vectorize import vectorize_raster, write_features

    monkeypatch.setattr(job, "_REWRITE_BLOCK", 40)  # the client's rewrite: 6 rows of 7 blocks
    factory = partial(OracleTilePredictor, (scene.class_map, scene.instance_map), CLASSES, view="tile",
                      tile_multiple=16, seed=7)
    [res] = predict_raster_distributed(factory, scene.image, tmp_path / "dist.tif", out_features=tmp_path / "dist.gpkg",
                                       client=client, tile_size=64, overlap=16, batch_size=2, block_size=96,
                                       progress=False)
    at_end = vectorize_raster(res.out_raster, CLASSES, block_size=40)
    write_features(at_end, tmp_path / "at_end.gpkg", layer="dist")
    assert res.n_features == len(at_end) > 0
    assert_same_features(gpd.read_file(res.out_features), gpd.read_file(tmp_path / "at_end.gpkg"))


def test_many_rasters_one_job_with_a_scattered_predictor(scene, tmp_path, client):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(scene.image, folder / "a.tif")
    write_image(folder / "b.tif", seed=5)  # same grid and labels, other pixel values
    oracle = OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES, view="tile")
    results = predict_raster_distributed(oracle, folder, tmp_path / "out", out_features=".gpkg", client=client,
                                         tile_size=80, overlap=20, block_size=120, progress=False)
    assert [r.out_raster.name for r in results] == ["a_panoptic.tif", "b_panoptic.tif"]
    assert [r.out_features.name for r in results] == ["a_panoptic.gpkg", "b_panoptic.gpkg"]
    for name in ("a", "b"):
        single = tmp_path / f"single_{name}.tif"
        predict_raster(OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES, view="tile"),
                       folder / f"{name}.tif", single, out_features=single.with_suffix(".gpkg"), tile_size=80,
                       overlap=20, progress=False)
        assert_same_outputs(single, tmp_path / "out" / f"{name}_panoptic.tif", single.with_suffix(".gpkg"),
                            tmp_path / "out" / f"{name}_panoptic.gpkg")


def test_each_worker_loads_a_factory_model_once(scene, tmp_path, client):
    from dask.base import tokenize

    factory = partial(OracleTilePredictor, (scene.class_map, scene.instance_map), CLASSES, seed=11)
    predict_raster_distributed(factory, scene.image, tmp_path / "o.tif", client=client, tile_size=64, overlap=16,
                               block_size=48, progress=False)  # 30 one-tile blocks
    key = f"factory:{tokenize(factory)}"
    loads = client.run(lambda: dist_module.model_loads().get(key, 0))
    assert sum(loads.values()) >= 1
    assert all(n <= 1 for n in loads.values()), loads  # never twice on one worker


def test_bad_input_raises_before_any_output(scene, tmp_path, client):
    oracle = OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES, n_bands=4)
    with pytest.raises(InputMismatchError, match="3 bands but the model takes 4"):
        predict_raster_distributed(oracle, scene.image, tmp_path / "x.tif", client=client, progress=False)
    with pytest.raises(DataError, match="do not exist"):
        predict_raster_distributed(oracle, [scene.image, tmp_path / "missing.tif"], tmp_path / "out",
                                   client=client, progress=False)
    with pytest.raises(DataError, match="no GeoTIFF"):
        predict_raster_distributed(oracle, tmp_path, tmp_path / "out", client=client, progress=False)
    (tmp_path / "exists.tif").write_bytes(b"")
    ok = OracleTilePredictor((scene.class_map, scene.instance_map), CLASSES)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        predict_raster_distributed(ok, scene.image, tmp_path / "exists.tif", client=client, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.tif"]


def test_saved_model_path_loads_on_the_workers(tmp_path, client):
    """A real (tiny, untrained) MaXDeepLab saved to a folder: workers load it from the path."""
    from geomax import MaXDeepLab, export_training_data, prepare_data
    from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene
    from geomax.workflows.predict import predict_raster as predict_path
    from geomax.workflows.predict import predict_raster_distributed as predict_path_distributed

    make_scene(tmp_path / "scene.tif", tmp_path / "labels.gpkg", size=128, seed=1)
    export_training_data(tmp_path / "scene.tif", tmp_path / "labels.gpkg", tmp_path / "chips",
                         class_table=SYNTHETIC_CLASSES, tile_size=64, progress=False)
    import torch

    torch.manual_seed(0)
    model = MaXDeepLab(prepare_data(tmp_path / "chips", batch_size=2, val_split_pct=0.25), backbone="max_deeplab_tiny")
    with torch.no_grad():  # every slot says "building": the untrained network's segments are things
        model.model.class_head.logits.bias[model.class_table.index_of_name("building")] += 10.0
    folder = model.save(tmp_path / "tiny", compute_metrics=False)
    # a low class threshold so that the untrained network yields segments; one tile per batch on both paths
    kw = dict(tile_size=64, overlap=16, batch_size=1, progress=False, class_threshold=0.0, mask_threshold=0.0,
              min_thing_area=1, min_stuff_area=1)
    # model paths are loaded by the workflow layer (inference itself takes predictors only)
    predict_path(folder, tmp_path / "scene.tif", tmp_path / "single.tif", out_features=tmp_path / "single.gpkg", **kw)
    [res] = predict_path_distributed(folder / "tiny.emd", tmp_path / "scene.tif", tmp_path / "dist.tif",
                                       out_features=tmp_path / "dist.gpkg", client=client, block_size=96, **kw)
    classes, instances, _ = read_bands(tmp_path / "dist.tif")[0]
    # not a comparison of empty rasters: the (untrained) network labels the pixels, and its thing
    # segments, cut into one per tile, come back merged across tile and block borders
    assert (classes > 0).mean() > 0.5 and res.n_instances >= 1
    grid = TileGrid(*classes.shape, 64, 16)
    assert instances_across_blocks(instances, grid, 96 // grid.stride) >= 1
    assert_same_outputs(tmp_path / "single.tif", tmp_path / "dist.tif", tmp_path / "single.gpkg",
                        tmp_path / "dist.gpkg")
    # the workflow passes a loader of the path; each worker loads the model once and keeps it
    from dask.base import tokenize

    from geomax.models.loading import load_predictor

    key = "factory:" + tokenize(partial(load_predictor, str((folder / "tiny.emd").resolve())))
    loads = client.run(lambda: dist_module.model_loads().get(key, 0))
    assert sum(loads.values()) >= 1 and all(n <= 1 for n in loads.values())


class FailingPredictor(OracleTilePredictor):
    """Returns no result for tiles in the lower part of the raster: a malformed predictor that fails
    on the workers only, after other blocks went through."""

    def predict_tiles(self, tiles, valid, windows=None):
        if windows[0].row_off > 100:
            return []
        return super().predict_tiles(tiles, valid, windows=windows)


def test_worker_error_reaches_the_client_and_leaves_no_output(scene, tmp_path, client):
    import sys

    import cloudpickle

    from geomax.errors import ModelError

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    try:
        bad = FailingPredictor((scene.class_map, scene.instance_map), CLASSES)
        with pytest.raises(ModelError, match="returned 0 results"):
            predict_raster_distributed(bad, scene.image, tmp_path / "o.tif", out_features=tmp_path / "o.gpkg",
                                       client=client, tile_size=64, overlap=16, block_size=96, progress=False)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert list(tmp_path.iterdir()) == []  # no output, no partial file, no scratch folder
