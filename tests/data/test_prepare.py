import json
import shutil
from collections import Counter

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geomax.common import GT_CLASSES, GT_IS_THING, GT_MASKS, GT_SEGMENT_INDEX, GT_SEMANTIC, GT_VALID
from geomax.data.prepare import PanopticDataLoaders, panoptic_from_target, prepare_data, target_from_panoptic
from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
from geomax.errors import ArgumentError, DataError

WARN = "ignore::UserWarning"


def _segments(class_map, instance_map, table):
    """Multiset of (class Value, is_thing, area): one per thing instance, one per stuff class."""
    out = Counter()
    for c in table:
        sel = class_map == c.value
        if not sel.any():
            continue
        if c.is_thing:
            for i in np.unique(instance_map[sel]):
                out[(c.value, True, int((sel & (instance_map == i)).sum()))] += 1
        else:
            out[(c.value, False, int(sel.sum()))] += 1
    return out


@pytest.mark.parametrize("which", ["3band_uint8", "4band_uint16"])
def test_round_trip_batches_reproduce_rasterized_labels(which, request):
    scene = request.getfixturevalue("scene3" if which == "3band_uint8" else "scene4")
    export = request.getfixturevalue("export3" if which == "3band_uint8" else "export4")
    data = prepare_data(export.out_folder, batch_size=3, val_split_pct=0.0, transforms=False)
    assert isinstance(data, PanopticDataLoaders)
    assert data.dataset_type == "Panoptic_Segmentation"
    assert data.n_bands == (3 if which == "3band_uint8" else 4) and data.chip_size == 128
    assert data.class_table.to_dict() == SYNTHETIC_CLASSES.to_dict()
    gdf = gpd.read_file(scene.labels)
    ds = data.train.dataset
    checked = 0
    with rasterio.open(scene.raster) as src:
        for start in range(0, len(ds), 3):
            idx = list(range(start, min(start + 3, len(ds))))
            items = [ds[i] for i in idx]
            image = torch.stack([it[0] for it in items])
            target = {k: torch.stack([it[1][k] for it in items]) for k in items[0][1]}
            assert image.dtype == torch.float32 and image.shape == (len(idx), data.n_bands, 128, 128)
            assert target[GT_MASKS].shape == (len(idx), data.n_masks, 128, 128)
            assert target[GT_MASKS].dtype == torch.bool and target[GT_CLASSES].dtype == torch.int64
            assert target[GT_SEMANTIC].dtype == torch.int64 and target[GT_VALID].dtype == torch.bool
            for b, i in enumerate(idx):
                chip = ds.chips[i]
                with rasterio.open(chip.image) as im:
                    t, raw = im.transform, im.read().astype(np.float64)
                gt_c, gt_i = rasterize_labels(gdf, CLASS_FIELD, SYNTHETIC_CLASSES, t, (128, 128))
                valid = ~(raw == src.nodata).all(0)
                gt_c[~valid], gt_i[~valid] = 0, 0
                cm, ins = panoptic_from_target(target, b, data.class_table)
                np.testing.assert_array_equal(cm, gt_c)
                assert _segments(cm, ins, SYNTHETIC_CLASSES) == _segments(gt_c, gt_i, SYNTHETIC_CLASSES)
                np.testing.assert_array_equal(target[GT_VALID][b].numpy(), valid)
                np.testing.assert_array_equal(target[GT_SEMANTIC][b].numpy(),
                                              SYNTHETIC_CLASSES.index_lut()[gt_c])
                m = target[GT_MASKS][b]
                assert m.sum(0).max() <= 1  # non-overlapping
                cls = target[GT_CLASSES][b]
                assert ((cls > 0) == m.flatten(1).any(1)).all()  # padding entries are empty
                assert (target[GT_IS_THING][b] == torch.from_numpy(SYNTHETIC_CLASSES.is_thing_index())[cls]).all()
                expect = (raw - data.band_stats.mean[:, None, None]) / data.band_stats.std[:, None, None]
                np.testing.assert_allclose(image[b].numpy()[:, valid], expect[:, valid], rtol=1e-4, atol=1e-4)
                assert (image[b].numpy()[:, ~valid] == 0).all()
                checked += 1
    assert checked == export.n_chips
    # the fastai loader yields the same format
    xb, yb = data.one_batch()
    assert xb.shape == (3, data.n_bands, 128, 128) and set(yb) == {GT_SEMANTIC, GT_MASKS, GT_CLASSES, GT_IS_THING,
                                                                   GT_VALID, GT_SEGMENT_INDEX}
    seg = yb[GT_SEGMENT_INDEX]  # the mask holding each pixel, -1 for none
    masks = yb[GT_MASKS]
    assert all(bool(((seg == k) == masks[:, k]).all()) for k in range(masks.shape[1]))
    assert bool(((seg == -1) == ~masks.any(1)).all())


@pytest.mark.filterwarnings(WARN)
def test_default_transforms_keep_image_and_masks_together(export3):
    data = prepare_data(export3.out_folder, chip_size=96, batch_size=4, val_split_pct=0.2, seed=1)
    assert data.valid.dataset.n_chips >= 1 and data.train.dataset.n_chips + data.valid.dataset.n_chips == export3.n_chips
    # 128 px chips, 96 px crops: 2 x 2 crops tile a chip, so an epoch draws 4 per chip
    assert len(data.train.dataset) == 4 * data.train.dataset.n_chips
    for _ in range(2):
        xb, yb = data.one_batch()
        assert xb.shape[-2:] == (96, 96)
        for b in range(xb.shape[0]):
            m, cls, sem, valid = yb[GT_MASKS][b], yb[GT_CLASSES][b], yb[GT_SEMANTIC][b], yb[GT_VALID][b]
            assert m.sum(0).max() <= 1
            painted = (m.float() * cls[:, None, None]).sum(0).long()
            assert torch.equal(painted, sem)  # every labelled pixel in exactly one mask of its class
            assert (sem[~valid] == 0).all() and (xb[b][:, ~valid] == 0).all()


def test_n_masks_given_and_overflow_becomes_void():
    cls = np.array([[1, 1, 5, 5], [1, 1, 5, 6], [2, 2, 6, 6], [2, 2, 7, 7]])
    ins = np.array([[0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 2, 2], [0, 0, 3, 3]])
    t = target_from_panoptic(cls, ins, None, SYNTHETIC_CLASSES, n_masks=8)
    assert t[GT_CLASSES].tolist() == [1, 2, 5, 6, 7, 0, 0, 0]
    assert t[GT_IS_THING].tolist() == [False, False, True, True, True, False, False, False]
    values = SYNTHETIC_CLASSES.value_lut()[cls]
    cm, im = panoptic_from_target(t, SYNTHETIC_CLASSES)
    np.testing.assert_array_equal(cm, values)
    with pytest.warns(UserWarning, match="n_masks"):
        small = target_from_panoptic(cls, ins, None, SYNTHETIC_CLASSES, n_masks=3)
    assert small[GT_MASKS].shape[0] == 3 and small[GT_CLASSES].tolist() == [1, 2, 5]
    assert (small[GT_SEMANTIC] == 0).sum() == 5  # the 3-px tree and 2-px vehicle (smallest) become void


def test_bands_and_rgb_bands(export4):
    data = prepare_data(export4.out_folder, bands=["nir", "blue", "green", "red"], transforms=False, val_split_pct=0)
    assert data.band_names == ["nir", "blue", "green", "red"] and data.n_bands == 4
    assert data.rgb_bands == [3, 2, 1]
    assert data.one_batch()[0].shape[1] == 4
    data2 = prepare_data(export4.out_folder, extract_bands=[0, 1, 2], transforms=False, val_split_pct=0,
                         class_mapping={5: "house"})
    assert "house" in data2.classes and data2.band_names == ["red", "green", "blue"]


# ---- an export written by hand the way ArcGIS Pro writes it ---------------------------------------
def _write(path, array, dtype, transform=from_origin(500000, 4500000, 0.5, 0.5), nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    prof = dict(driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0], dtype=dtype,
                crs="EPSG:3857", transform=transform)
    if nodata is not None:
        prof["nodata"] = nodata
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(array.astype(dtype))


@pytest.fixture
def arcgis_export(tmp_path):
    root = tmp_path / "arcgis"
    rng = np.random.default_rng(0)
    labels = np.full((64, 64), 10, np.uint8)      # grass (stuff, Value 10)
    labels[5:20, 5:15] = 20                        # two touching houses (thing, Value 20)
    labels[5:20, 15:25] = 20
    labels[40:50, 40:45] = 30                      # two separate cars (thing, Value 30, no labels2 folder)
    labels[40:50, 50:55] = 30
    labels[60:, :] = 0                             # unlabeled strip
    houses = np.zeros((64, 64), np.uint8)
    houses[5:20, 5:15] = 1
    houses[5:20, 15:25] = 2
    for i in range(3):
        _write(root / "images" / f"{i:09d}.tif", rng.integers(1, 255, (3, 64, 64)), "uint8")
        _write(root / "labels" / f"{i:09d}.tif", labels, "uint8")
        _write(root / "labels2" / "House" / f"{i:09d}.tif", houses, "uint8")
    (root / "map.txt").write_text("".join(f"images\\{i:09d}.tif labels\\{i:09d}.tif\r\n" for i in range(3)))
    emd = {
        "Framework": "", "ModelConfiguration": "", "MetaDataMode": "Panoptic_Segmentation",
        "ImageHeight": 64, "ImageWidth": 64, "ImageSpaceUsed": "MAP_SPACE",
        "Classes": [{"Value": 10, "Name": "Grass", "Color": [0, 200, 0]},
                    {"Value": 20, "Name": "House", "Color": [230, 0, 0]},
                    {"Value": 30, "Name": "Car", "Color": [0, 0, 255]}],
        "Panoptic_Segmentation_Instance_Classes": [{"Value": 20, "Name": "House"}, {"Value": 30, "Name": "Car"}],
    }
    (root / "esri_model_definition.emd").write_text(json.dumps(emd, indent=4))
    return root


def test_arcgis_style_export_loads(arcgis_export):
    data = prepare_data(arcgis_export, batch_size=2, val_split_pct=0, transforms=False)
    assert data.class_table.names == ["Grass", "House", "Car"]
    assert data.class_table.by_value(20).color == (230, 0, 0) and data.thing_classes == ["House", "Car"]
    assert data.band_names == ["band_1", "band_2", "band_3"] and data.band_stats.n_bands == 3
    image, target = data.train.dataset[0]
    cm, im = panoptic_from_target(target, data.class_table)
    # houses from labels2, cars (no labels2 folder) from connected components
    assert sorted(np.unique(im[cm == 20], return_counts=True)[1].tolist()) == [150, 150]
    assert sorted(np.unique(im[cm == 30], return_counts=True)[1].tolist()) == [50, 50]
    assert len(set(np.unique(im[cm == 20])) | set(np.unique(im[cm == 30]))) == 4
    assert (cm[60:] == 0).all() and (target[GT_CLASSES] > 0).sum() == 5


# ---- bad input: one test each ---------------------------------------------------------------
def test_folder_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(tmp_path / "nope")


def test_not_an_export(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a training-data export"):
        prepare_data(tmp_path)


def test_wrong_metadata_mode(arcgis_export):
    (arcgis_export / "esri_accumulated_stats.json").write_text(json.dumps({"MetaDataMode": "Classified_Tiles"}))
    with pytest.raises(DataError, match="Classified_Tiles"):
        prepare_data(arcgis_export)


def test_emd_missing(arcgis_export):
    (arcgis_export / "esri_model_definition.emd").unlink()
    with pytest.raises(DataError, match="esri_model_definition.emd is missing"):
        prepare_data(arcgis_export)


def test_emd_without_classes(arcgis_export):
    emd_path = arcgis_export / "esri_model_definition.emd"
    emd = json.loads(emd_path.read_text())
    emd["Classes"] = []
    emd_path.write_text(json.dumps(emd))
    with pytest.raises(DataError, match="no 'Classes'"):
        prepare_data(arcgis_export)


def test_image_without_label(arcgis_export):
    (arcgis_export / "labels" / "000000001.tif").unlink()
    with pytest.raises(DataError, match="has no label chip"):
        prepare_data(arcgis_export)


def test_sizes_disagree(arcgis_export):
    _write(arcgis_export / "labels" / "000000002.tif", np.ones((32, 32)), "uint8")
    with pytest.raises(DataError, match="000000002.tif is 32 x 32"):
        prepare_data(arcgis_export)


def test_label_values_not_in_class_table(arcgis_export):
    lab = np.full((64, 64), 10, np.uint8)
    lab[:4, :4] = 99
    _write(arcgis_export / "labels" / "000000001.tif", lab, "uint8")
    with pytest.raises(DataError, match=r"Values \[99\]"):
        prepare_data(arcgis_export)


def test_labels2_folder_for_stuff_class(arcgis_export):
    shutil.copytree(arcgis_export / "labels2" / "House", arcgis_export / "labels2" / "Grass")
    with pytest.raises(DataError, match="'Grass', which is not a thing class"):
        prepare_data(arcgis_export)


def test_corrupt_tiff(arcgis_export):
    (arcgis_export / "labels" / "000000000.tif").write_bytes(b"II*\x00" + b"\x01broken" * 40)
    with pytest.raises(DataError, match="cannot be read"):
        prepare_data(arcgis_export)


def test_chip_size_larger_than_chips(arcgis_export):
    with pytest.raises(ArgumentError, match="larger than the exported chips"):
        prepare_data(arcgis_export, chip_size=128)


def test_unknown_argument(arcgis_export):
    with pytest.raises(ArgumentError, match="Unknown arguments"):
        prepare_data(arcgis_export, chipsize=64)


def test_several_folders(export4, arcgis_export):
    data = prepare_data([export4.out_folder, export4.out_folder], transforms=False, val_split_pct=0.25)
    assert len(data.train.dataset) + len(data.valid.dataset) == 2 * export4.n_chips
    with pytest.raises(DataError, match="same class table"):
        prepare_data([export4.out_folder, arcgis_export])


def test_a_footprint_export_gets_a_background_class_at_load_time(synthetic_scene, tmp_path):
    """An export of thing footprints with unlabelled pixels left 0 (as ArcGIS Pro writes it)."""
    import geopandas as gpd

    from geomax.data.export import export_training_data
    from geomax.data.synthetic import CLASS_FIELD

    gdf = gpd.read_file(synthetic_scene.labels)
    gdf[gdf[CLASS_FIELD] == "building"].to_file(tmp_path / "buildings.gpkg")
    export_training_data(synthetic_scene.raster, tmp_path / "buildings.gpkg", tmp_path / "chips",
                         class_field=CLASS_FIELD, thing_classes=["building"], tile_size=64, background="void",
                         progress=False)
    data = prepare_data(tmp_path / "chips", batch_size=2, val_split_pct=0.0, transforms=False)
    assert data.class_table.names == ["building", "background"] and "every labelled class is a thing" in data.background
    sample = data.train_ds.load_sample(0)
    assert (sample.class_index[sample.valid] == 2).any() and (sample.class_index[sample.valid] > 0).all()
    assert (sample.class_index[~sample.valid] == 0).all()
    void = prepare_data(tmp_path / "chips", batch_size=2, val_split_pct=0.0, transforms=False, background="void")
    assert void.class_table.names == ["building"]
    assert (void.train_ds.load_sample(0).class_index == 0).any()


def test_an_export_with_a_background_class_gets_no_second_one(synthetic_scene, tmp_path):
    import geopandas as gpd

    from geomax.data.export import export_training_data
    from geomax.data.synthetic import CLASS_FIELD

    gdf = gpd.read_file(synthetic_scene.labels)
    gdf[gdf[CLASS_FIELD] == "building"].to_file(tmp_path / "buildings.gpkg")
    export_training_data(synthetic_scene.raster, tmp_path / "buildings.gpkg", tmp_path / "chips",
                         class_field=CLASS_FIELD, thing_classes=["building"], tile_size=64, progress=False)
    data = prepare_data(tmp_path / "chips", batch_size=2, val_split_pct=0.0, transforms=False)
    assert data.class_table.names == ["building", "background"] and "'void'" in data.background


def test_source_bands_compose_extract_bands_with_the_chip_selection_and_warn_when_exports_differ():
    """Chip band b of an export of ExtractBands [1, 2] is source band 1 + b; exports cut from different
    source bands get one warning naming each export's bands (the first export's are used)."""
    import types
    import warnings as _warnings

    from geomax.data.prepare import source_bands

    a = types.SimpleNamespace(root="a", extract_bands=[1, 2])
    b = types.SimpleNamespace(root="b", extract_bands=[0, 3])
    full = types.SimpleNamespace(root="c", extract_bands=None)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")  # the same bands on every export: no warning
        assert source_bands([a, a], 2, None) == [1, 2]
        assert source_bands([a], 2, [1]) == [2]
        assert source_bands([full], 3, [2, 0]) == [2, 0]
        mismatched = types.SimpleNamespace(root="d", extract_bands=[0, 1, 2])  # not the chips' band count
        assert source_bands([mismatched], 2, None) == [0, 1]
    with pytest.warns(UserWarning, match=r"different source bands \(a: \[1, 2\]; b: \[0, 3\]\)") as record:
        assert source_bands([a, b], 2, None) == [1, 2]
    assert len(record) == 1 and "Pass bands= to predict" in str(record[0].message)
