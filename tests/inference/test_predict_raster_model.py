"""predict_raster end to end with a real (tiny, briefly trained) MaXDeepLab model."""
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.data.synthetic import SYNTHETIC_CLASSES, make_scene
from geomax.errors import InputMismatchError, OutputExistsError


@pytest.fixture(scope="module")
def model_and_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_raster")
    make_scene(root / "train.tif", root / "train.gpkg", size=256, seed=5)
    export_training_data(root / "train.tif", root / "train.gpkg", root / "chips", class_table=SYNTHETIC_CLASSES,
                         tile_size=64, progress=False)
    data = prepare_data(root / "chips", batch_size=4, val_split_pct=0.0, transforms=False)
    torch.manual_seed(0)
    model = MaXDeepLab(data, backbone="max_deeplab_tiny")
    model.fit(1, lr=3e-3, checkpoint=False, monitor="train_loss")
    # a scene larger than one tile, with a no-data border
    make_scene(root / "test.tif", root / "test.gpkg", size=200, seed=9, nodata_border=12)
    return model, root


def test_real_model_writes_a_valid_cog_and_geopackage(model_and_scene, tmp_path):
    model, root = model_and_scene
    res = model.predict_raster(root / "test.tif", tmp_path / "pred.tif", out_features=tmp_path / "pred.gpkg",
                               tile_size=96, overlap=16, progress=False, class_threshold=0.0, mask_threshold=0.0,
                               min_thing_area=4)
    assert res.n_tiles > 1
    with rasterio.open(res.out_raster) as src, rasterio.open(root / "test.tif") as img:
        assert src.crs == img.crs and src.transform == img.transform and src.shape == img.shape
        assert src.count == 3 and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        cls, inst, conf = src.read()
        valid = img.dataset_mask() > 0
    assert (cls[~valid] == 0).all()  # input no-data stays no-data
    assert set(np.unique(cls)) <= {0, *SYNTHETIC_CLASSES.values}
    assert (cls[valid] > 0).any() and conf.max() <= 100
    thing_values = SYNTHETIC_CLASSES.thing_values
    assert (inst[~np.isin(cls, thing_values)] == 0).all()  # instance ids only on things
    gdf = gpd.read_file(res.out_features)
    assert gdf.crs == rasterio.crs.CRS.from_epsg(32633)
    assert {"instance_id", "class_value", "class_name", "is_thing", "confidence", "area"} <= set(gdf.columns)
    # every thing instance of the raster is one feature, with the raster's area
    px_area = abs(src.transform.a * src.transform.e)
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    things = gdf[gdf["is_thing"].astype(bool)].set_index("instance_id")
    assert sorted(things.index) == sorted(ids.tolist())
    np.testing.assert_allclose(things.loc[ids, "area"].to_numpy(), counts * px_area, rtol=1e-6)


def test_real_model_refuses_bad_band_count_and_existing_output(model_and_scene, tmp_path):
    model, root = model_and_scene
    make_scene(tmp_path / "rgb.tif", tmp_path / "rgb.gpkg", size=64, seed=1, bands=3)
    with pytest.raises(InputMismatchError):
        model.predict_raster(tmp_path / "rgb.tif", tmp_path / "out.tif", tile_size=64, overlap=16, progress=False)
    assert not (tmp_path / "out.tif").exists()
    (tmp_path / "taken.tif").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        model.predict_raster(root / "test.tif", tmp_path / "taken.tif", tile_size=64, overlap=16, progress=False)
    assert (tmp_path / "taken.tif").read_bytes() == b"keep me"
