"""Tests of geomax.evaluate: PQ of a panoptic raster against vector or raster reference labels."""
import numpy as np
import pytest
import rasterio

from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
from geomax.errors import ArgumentError, DataError, InputMismatchError
from geomax.evaluate import evaluate_raster, format_metrics, load_class_table


@pytest.fixture(scope="module")
def scene(synthetic_scene):
    """The shared synthetic scene (tests/conftest.py) and its labels rasterised: a perfect prediction."""
    import geopandas as gpd

    info = synthetic_scene
    gdf = gpd.read_file(info.labels)
    class_map, instance_map = rasterize_labels(gdf, CLASS_FIELD, SYNTHETIC_CLASSES, info.transform,
                                               (info.size, info.size))
    return info, class_map, instance_map


def _write_panoptic(path, info, class_map, instance_map):
    profile = {"driver": "GTiff", "width": class_map.shape[1], "height": class_map.shape[0], "count": 3,
               "dtype": "int32", "crs": info.crs, "transform": info.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(class_map.astype(np.int32), 1)
        dst.write(instance_map.astype(np.int32), 2)
        dst.write(np.full(class_map.shape, 90, np.int32), 3)
    return path


def _building_ids(class_map, instance_map):
    ids = np.unique(instance_map[class_map == 5])
    return ids[ids > 0]


def test_perfect_prediction_scores_one(scene, tmp_path):
    info, cm, im = scene
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm, im)
    metrics = evaluate_raster(pred, info.labels, class_table="synthetic", progress=False)
    assert metrics["all"]["pq"] == pytest.approx(1.0)
    assert metrics["things"]["pq"] == pytest.approx(1.0)
    assert metrics["stuff"]["pq"] == pytest.approx(1.0)
    assert metrics["per_class"]["building"]["tp"] == len(_building_ids(cm, im))
    assert metrics["n_pixels"] == info.size ** 2
    # streaming by small windows gives the same perfect score
    small = evaluate_raster(pred, info.labels, class_table=SYNTHETIC_CLASSES, window_size=96, progress=False)
    assert small["all"]["pq"] == pytest.approx(1.0)
    assert "building" in format_metrics(metrics)


def test_missing_and_merged_instances_lower_pq(scene, tmp_path):
    info, cm, im = scene
    ids = _building_ids(cm, im)
    assert len(ids) >= 3
    cm2, im2 = cm.copy(), im.copy()
    # drop one building (predicted as void) -> exactly one false negative
    drop = (cm == 5) & (im == ids[0])
    cm2[drop] = 0
    im2[drop] = 0
    pred = _write_panoptic(tmp_path / "pred_drop.tif", info, cm2, im2)
    m = evaluate_raster(pred, info.labels, class_table="synthetic", progress=False)
    b = m["per_class"]["building"]
    assert (b["tp"], b["fp"], b["fn"]) == (len(ids) - 1, 0, 1)
    assert m["things"]["pq"] < 1.0
    assert m["stuff"]["pq"] == pytest.approx(1.0)
    # relabel every building as bare ground: buildings all missed, bare ground gets a bad segment
    cm3 = np.where(cm == 5, 4, cm)
    im3 = np.where(cm == 5, 0, im)
    pred = _write_panoptic(tmp_path / "pred_wrong.tif", info, cm3, im3)
    m = evaluate_raster(pred, info.labels, class_table="synthetic", progress=False)
    assert m["per_class"]["building"]["tp"] == 0
    assert m["per_class"]["building"]["fn"] == len(ids)
    assert m["all"]["pq"] < 0.95


def test_raster_reference_pair_matches_vector(scene, tmp_path):
    info, cm, im = scene
    cm2, im2 = cm.copy(), im.copy()
    ids = _building_ids(cm, im)
    drop = (cm == 5) & (im == ids[1])
    cm2[drop], im2[drop] = 0, 0
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm2, im2)
    by_vector = evaluate_raster(pred, info.labels, class_table="synthetic", progress=False)
    # two-band reference raster
    ref = _write_panoptic(tmp_path / "ref.tif", info, cm, im)
    by_raster = evaluate_raster(pred, ref, class_table="synthetic", progress=False)
    # class raster + separate instance raster
    profile = {"driver": "GTiff", "width": info.size, "height": info.size, "count": 1, "dtype": "int32",
               "crs": info.crs, "transform": info.transform}
    with rasterio.open(tmp_path / "ref_class.tif", "w", **profile) as dst:
        dst.write(cm.astype(np.int32), 1)
    with rasterio.open(tmp_path / "ref_inst.tif", "w", **profile) as dst:
        dst.write(im.astype(np.int32), 1)
    by_pair = evaluate_raster(pred, tmp_path / "ref_class.tif", class_table="synthetic",
                              reference_instances=tmp_path / "ref_inst.tif", progress=False)
    for other in (by_raster, by_pair):
        assert other["all"]["pq"] == pytest.approx(by_vector["all"]["pq"])
        assert other["per_class"]["building"] == by_vector["per_class"]["building"]


def test_valid_raster_excludes_nodata(scene, tmp_path):
    info, cm, im = scene
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm, im)
    m = evaluate_raster(pred, info.labels, class_table="synthetic", valid_raster=info.raster, progress=False)
    with rasterio.open(info.raster) as src:
        n_valid = int((src.dataset_mask() > 0).sum())
    assert 0 < n_valid < info.size ** 2  # the scene has a no-data border
    assert m["n_pixels"] == n_valid
    assert m["all"]["pq"] == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors(scene, tmp_path):
    info, cm, im = scene
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm, im)
    with pytest.raises(DataError, match="no field 'nope'"):
        evaluate_raster(pred, info.labels, class_table="synthetic", class_field="nope", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        evaluate_raster(tmp_path / "missing.tif", info.labels, class_table="synthetic", progress=False)
    with pytest.raises(DataError, match="do not exist"):
        evaluate_raster(pred, tmp_path / "missing.gpkg", class_table="synthetic", progress=False)
    with pytest.raises(ArgumentError, match="class_table"):
        evaluate_raster(pred, info.labels, progress=False)
    # a reference raster on another grid
    profile = {"driver": "GTiff", "width": 128, "height": 128, "count": 1, "dtype": "int32",
               "crs": info.crs, "transform": info.transform}
    with rasterio.open(tmp_path / "small.tif", "w", **profile) as dst:
        dst.write(np.zeros((128, 128), np.int32), 1)
    with pytest.raises(InputMismatchError, match="grid"):
        evaluate_raster(pred, tmp_path / "small.tif", class_table="synthetic", progress=False)
    # labels far away from the raster
    import geopandas as gpd
    from shapely.affinity import translate

    gdf = gpd.read_file(info.labels)
    gdf["geometry"] = gdf.geometry.apply(lambda g: translate(g, 1e5, 0))
    with pytest.raises(DataError, match="overlaps"):
        evaluate_raster(pred, gdf, class_table="synthetic", progress=False)
    # a class the class table does not know
    gdf = gpd.read_file(info.labels)
    gdf.loc[0, CLASS_FIELD] = "spaceship"
    with pytest.raises(DataError, match="spaceship"):
        evaluate_raster(pred, gdf, class_table="synthetic", progress=False)
    # a one-band raster is not a panoptic prediction
    with pytest.raises(DataError, match="band 2 instance id"):
        evaluate_raster(tmp_path / "small.tif", info.labels, class_table="synthetic", progress=False)


def test_class_table_read_from_prediction_tags(scene, tmp_path):
    info, cm, im = scene
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm, im)
    with rasterio.open(pred, "r+") as dst:  # the tags predict_raster writes
        dst.update_tags(1, **{f"CLASS_{c.value}": c.name for c in SYNTHETIC_CLASSES})
        dst.update_tags(1, THING_CLASSES=",".join(str(v) for v in SYNTHETIC_CLASSES.thing_values))
    m = evaluate_raster(pred, info.labels, progress=False)
    assert m["all"]["pq"] == pytest.approx(1.0)
    assert m["things"]["n"] == 3 and set(m["per_class"]) == set(SYNTHETIC_CLASSES.names)


def test_load_class_table_from_export_emd(tmp_path):
    import json

    (tmp_path / "esri_model_definition.emd").write_text(json.dumps(SYNTHETIC_CLASSES.to_emd()))
    table = load_class_table(tmp_path)
    assert table.names == SYNTHETIC_CLASSES.names
    assert table.thing_names == ["building", "tree", "vehicle"]
    with pytest.raises(DataError):
        load_class_table(tmp_path / "nothing_here")


def test_reference_vectors_with_invalid_and_null_geometries_are_repaired_with_a_warning(scene, tmp_path):
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Polygon

    info, cm, im = scene
    gdf = gpd.read_file(info.labels)
    row = gdf.index[gdf[CLASS_FIELD] == "building"][0]
    ring = list(gdf.geometry[row].exterior.coords)
    spike = (ring[0][0] + 0.3, ring[0][1] + 0.3)
    gdf.loc[row, "geometry"] = Polygon([ring[0], spike] + ring[:-1])  # out and back: a self-intersecting ring
    assert not gdf.geometry[row].is_valid
    gdf = pd.concat([gdf, gpd.GeoDataFrame({CLASS_FIELD: ["building"]}, geometry=[None], crs=gdf.crs)],
                    ignore_index=True)
    pred = _write_panoptic(tmp_path / "pred.tif", info, cm, im)
    with pytest.warns(UserWarning, match="1 feature had invalid geometries, repaired with make_valid; "
                                         "1 null/empty geometry dropped"):
        metrics = evaluate_raster(pred, gdf, class_table="synthetic", progress=False)
    assert metrics["all"]["pq"] == pytest.approx(1.0)  # the repaired building is scored as drawn
