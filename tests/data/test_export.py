import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geomax.data.classes import ClassTable
from geomax.data.esri_layout import read_export
from geomax.data.export import export_training_data
from geomax.data.rasterize import rasterize_labels
from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
from geomax.errors import ArgumentError, DataError, OutputExistsError


def test_export_writes_the_arcgis_layout(export3, scene3):
    root = export3.out_folder
    for name in ("images", "labels", "labels2", "map.txt", "esri_model_definition.emd", "esri_accumulated_stats.json"):
        assert (root / name).exists(), name
    assert sorted(p.name for p in (root / "labels2").iterdir()) == sorted(SYNTHETIC_CLASSES.thing_names)
    lines = (root / "map.txt").read_text().splitlines()
    assert len(lines) == export3.n_chips > 0
    assert lines[0] == "images/000000000.tif labels/000000000.tif"
    emd = json.loads((root / "esri_model_definition.emd").read_text())
    assert emd["ImageHeight"] == emd["ImageWidth"] == 128
    assert [c["Name"] for c in emd["Classes"]] == SYNTHETIC_CLASSES.names
    assert [c["Name"] for c in emd["Panoptic_Segmentation_Instance_Classes"]] == ["building", "tree", "vehicle"]
    assert emd["InputRastersProps"]["BandNames"] == ["red", "green", "blue"]
    assert len(emd["AllTilesStats"]) == 3 and emd["ExtractBands"] == [0, 1, 2]
    stats = json.loads((root / "esri_accumulated_stats.json").read_text())
    assert stats["MetaDataMode"] == "Panoptic_Segmentation" and stats["NumBands"] == 3
    assert read_export(root).class_table.to_dict() == SYNTHETIC_CLASSES.to_dict()


def test_chips_are_georeferenced_and_match_rasterized_labels(export3, scene3):
    root = export3.out_folder
    gdf = gpd.read_file(scene3.labels)
    with rasterio.open(scene3.raster) as src:
        for chip_id in ("000000000", f"{export3.n_chips - 1:09d}"):
            with rasterio.open(root / "images" / f"{chip_id}.tif") as im:
                assert im.crs == src.crs and im.nodata == src.nodata
                col, row = ~src.transform * (im.transform.c, im.transform.f)
                win = Window(round(col), round(row), 128, 128)
                assert im.transform == window_transform(win, src.transform)
                np.testing.assert_array_equal(im.read(), src.read(window=win))
                valid = ~(im.read() == src.nodata).any(0)  # valid only if valid in every band
            cm, ins = rasterize_labels(gdf, CLASS_FIELD, SYNTHETIC_CLASSES, window_transform(win, src.transform),
                                       (128, 128))
            cm[~valid] = 0
            ins[~valid] = 0
            with rasterio.open(root / "labels" / f"{chip_id}.tif") as lab:
                np.testing.assert_array_equal(lab.read(1), cm)
            for c in SYNTHETIC_CLASSES:
                if not c.is_thing:
                    continue
                with rasterio.open(root / "labels2" / c.name / f"{chip_id}.tif") as li:
                    ids = li.read(1)
                sel = (cm == c.value) & (ins > 0)
                assert (ids > 0).sum() == sel.sum()
                # same partition: per-class 1..k numbering of the same instances
                assert sorted(np.bincount(ids[ids > 0])[1:].tolist()) == sorted(
                    np.bincount(ins[sel])[np.unique(ins[sel])].tolist())


def test_png_chips_and_band_selection(scene4, tmp_path):
    info = export_training_data(scene4.raster, scene4.labels, tmp_path / "png", class_field=CLASS_FIELD,
                                class_table=SYNTHETIC_CLASSES, tile_size=128, chip_format="png", bands=[4, 1],
                                progress=False)
    assert info.band_names == ["nir", "red"]
    first = tmp_path / "png" / "images" / "000000000.png"
    with rasterio.open(first) as ds:
        assert ds.count == 2 and ds.dtypes[0] == "uint16"
        assert ds.transform.a == 0.5  # world file keeps the georeferencing
    emd = json.loads((tmp_path / "png" / "esri_model_definition.emd").read_text())
    assert emd["ExtractBands"] == [3, 0]


def test_class_table_from_labels_and_thing_classes(scene4, tmp_path):
    info = export_training_data(scene4.raster, scene4.labels, tmp_path / "auto", class_field=CLASS_FIELD,
                                thing_classes=["building", "vehicle"], tile_size=128, progress=False)
    table = info.class_table
    assert table.names == sorted(table.names)
    assert set(table.thing_names) == {"building", "vehicle"}


def test_overwrite_replaces_an_earlier_export_only(scene4, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "something.txt").write_text("x")
    kw = dict(class_field=CLASS_FIELD, class_table=SYNTHETIC_CLASSES, tile_size=128, progress=False)
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a folder geomax wrote"):
            export_training_data(scene4.raster, scene4.labels, out, overwrite=overwrite, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["something.txt"]
    first = export_training_data(scene4.raster, scene4.labels, tmp_path / "chips", **kw)
    with pytest.raises(OutputExistsError, match="earlier geomax export"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "chips", **kw)
    info = export_training_data(scene4.raster, scene4.labels, tmp_path / "chips", overwrite=True, stride=64, **kw)
    assert (tmp_path / "chips" / "map.txt").exists() and info.n_chips > first.n_chips
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips", "o"]  # no scratch left beside


# ---- bad input: one test each, nothing written -------------------------------------------------
def _kw():
    return dict(class_field=CLASS_FIELD, class_table=SYNTHETIC_CLASSES, tile_size=128, progress=False)


def test_labels_without_crs(scene4, tmp_path):
    gdf = gpd.read_file(scene4.labels)
    gdf = gdf.set_crs(None, allow_override=True)
    with pytest.raises(DataError, match="no coordinate reference system"):
        export_training_data(scene4.raster, gdf, tmp_path / "o", **_kw())
    assert not (tmp_path / "o").exists()


def test_labels_outside_raster(scene4, tmp_path):
    gdf = gpd.read_file(scene4.labels)
    gdf["geometry"] = gdf.geometry.translate(10000, 0)
    with pytest.raises(DataError, match="do not overlap"):
        export_training_data(scene4.raster, gdf, tmp_path / "o", **_kw())
    assert not (tmp_path / "o").exists()


def test_labels_reprojected(scene4, tmp_path):
    gdf = gpd.read_file(scene4.labels).to_crs("EPSG:4326")
    info = export_training_data(scene4.raster, gdf, tmp_path / "o", **_kw())
    assert info.n_chips > 0


def test_class_field_missing(scene4, tmp_path):
    with pytest.raises(DataError, match="no field 'Classname'"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "o", **{**_kw(), "class_field": "Classname"})
    assert not (tmp_path / "o").exists()


def test_label_class_not_in_table(scene4, tmp_path):
    table = ClassTable([c for c in SYNTHETIC_CLASSES if c.name != "vehicle"])
    with pytest.raises(DataError, match="'vehicle'"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "o", **{**_kw(), "class_table": table})


def test_corrupt_raster(scene4, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 50)
    with pytest.raises(DataError, match="cannot be read"):
        export_training_data(bad, scene4.labels, tmp_path / "o", **_kw())


def test_tile_larger_than_raster(scene4, tmp_path):
    with pytest.raises(ArgumentError, match="larger than the raster"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "o", **{**_kw(), "tile_size": 512})


def test_bad_bands_and_format(scene4, tmp_path):
    with pytest.raises(ArgumentError, match="band numbers"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "o", **{**_kw(), "bands": [0]})
    with pytest.raises(ArgumentError, match="chip_format"):
        export_training_data(scene4.raster, scene4.labels, tmp_path / "o", **{**_kw(), "chip_format": "jpg"})


# ---- the background rule: labels that cover only the things ---------------------------------------
def _footprints(scene, tmp_path, values=None):
    """The scene's buildings only, as a footprint layer (optionally with other integer Values)."""
    gdf = gpd.read_file(scene.labels)
    gdf = gdf[gdf[CLASS_FIELD] == "building"].copy()
    path = tmp_path / "footprints.gpkg"
    gdf.to_file(path)
    return path


def test_footprints_only_get_a_background_class_where_nothing_is_labelled(scene3, tmp_path):
    info = export_training_data(scene3.raster, _footprints(scene3, tmp_path), tmp_path / "chips",
                                class_field=CLASS_FIELD, thing_classes=["building"], tile_size=128, progress=False)
    assert info.class_table.names == ["building", "background"]
    bg = info.class_table.by_value(info.background_value)
    assert bg.name == "background" and not bg.is_thing and info.background_value == 2
    assert "every labelled class is a thing (building)" in info.background
    layout = read_export(tmp_path / "chips")
    assert layout.class_table.names == ["building", "background"]  # in the .emd: prepare_data reads it
    for chip in layout.chips[:4]:
        with rasterio.open(chip.image) as img, rasterio.open(chip.label) as lab:
            valid, labels = img.dataset_mask() > 0, lab.read(1)
        assert set(np.unique(labels[valid])) <= {1, 2} and (labels[valid] == 2).any()
        assert (labels[~valid] == 0).all()  # no-data stays void
    emd = json.loads((tmp_path / "chips" / "esri_model_definition.emd").read_text())
    assert emd["BackgroundClassValue"] == 2


def test_background_void_on_request_and_when_stuff_is_labelled(scene3, tmp_path):
    kw = dict(class_field=CLASS_FIELD, tile_size=128, progress=False)
    info = export_training_data(scene3.raster, _footprints(scene3, tmp_path), tmp_path / "a", thing_classes=["building"],
                                background="void", **kw)
    assert info.class_table.names == ["building"] and info.background_value is None and "'void' (asked)" in info.background
    info = export_training_data(scene3.raster, scene3.labels, tmp_path / "b", class_table=SYNTHETIC_CLASSES, **kw)
    assert info.background_value is None and "the labels cover 100% of the valid pixels with stuff" in info.background
    assert info.class_table.names == SYNTHETIC_CLASSES.names
    with pytest.raises(ArgumentError, match="background='sky' is not a rule"):
        export_training_data(scene3.raster, scene3.labels, tmp_path / "c", background="sky", **kw)


def test_stuff_labels_that_do_not_cover_the_image_get_a_background_class(scene3, tmp_path):
    """A footprint layer exported without thing classes (its class is stuff) covers a small share of the
    image: under "auto" the rest is background, not void (the model must see where buildings are not);
    "void" still leaves it void."""
    from geomax.data.export import LABELS_COVER

    kw = dict(class_field=CLASS_FIELD, tile_size=128, progress=False)
    info = export_training_data(scene3.raster, _footprints(scene3, tmp_path), tmp_path / "a", **kw)
    assert info.class_table.thing_names == [] and info.class_table.names == ["building", "background"]
    share = float(info.background.split("cover only ")[1].split("%")[0]) / 100
    assert 0 < share < LABELS_COVER and "pass background='void'" in info.background
    layout = read_export(tmp_path / "a")
    with rasterio.open(layout.chips[0].image) as img, rasterio.open(layout.chips[0].label) as lab:
        valid, labels = img.dataset_mask() > 0, lab.read(1)
    assert set(np.unique(labels[valid])) <= {1, 2} and (labels[valid] == 2).any()
    info = export_training_data(scene3.raster, _footprints(scene3, tmp_path), tmp_path / "b", background="void", **kw)
    assert info.background_value is None and info.class_table.names == ["building"]


def test_the_background_value_does_not_clash_with_non_contiguous_values(scene3, tmp_path):
    from geomax.data.classes import ClassInfo

    table = ClassTable([ClassInfo(7, "building", (200, 0, 0), True)])
    info = export_training_data(scene3.raster, _footprints(scene3, tmp_path), tmp_path / "chips",
                                class_field=CLASS_FIELD, class_table=table, tile_size=128, progress=False)
    assert info.class_table.values == [7, 8] and info.background_value == 8
