"""Shared pytest setup and session fixtures.

Keeps torch on few threads and skips ``gpu`` tests without CUDA. The session fixtures build, once
per test session, what most tests need and do not have to build themselves (torchgeo's
``tests/conftest.py``): one tiny seeded synthetic scene, its training-data export, the fastai
``DataLoaders`` of that export and one briefly trained ``max_deeplab_tiny`` model saved to a folder.
Everything is written under ``tmp_path_factory``.

They are shared: a test reads them and never changes them (no ``fit``, ``freeze``, ``save`` into the
shared folder, no files written into the export). A test that needs to change one builds its own
from these (``MaXDeepLab(synthetic_data, ...)``, ``shutil.copytree(trained_model_folder, tmp_path / ...)``).
A test that checks something about particular data (a dtype, a band order, an object layout) keeps
its own data.
"""
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

#: Side of the shared synthetic scene, in pixels, and the no-data border around it.
SCENE_SIZE = 256
SCENE_NODATA_BORDER = 8
#: Chip side of the shared export: 16 chips of 64 px.
CHIP_SIZE = 64
#: Epochs the shared model trains (three batches each).
TRAINED_EPOCHS = 3


def _file_bytes(root) -> dict:
    """Every file below ``root`` (relative path -> bytes): compare two of them to prove nothing changed."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(root)``: every file below ``root`` with its bytes."""
    return _file_bytes


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: gpu tests cannot run anyway
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory):
    """A seeded 256 px, 4-band uint8 synthetic scene (EPSG:32633, 50 cm) with an 8 px no-data border.

    A :class:`geomax.data.synthetic.SceneInfo`: ``raster`` (GeoTIFF), ``labels`` (GeoPackage with
    ``class_name``), ``transform``, ``crs``, ``size``, ``nodata``, ``band_names``.
    """
    from geomax.data.synthetic import make_scene

    folder = tmp_path_factory.mktemp("synthetic_scene")
    return make_scene(folder / "scene.tif", folder / "labels.gpkg", size=SCENE_SIZE, seed=3, bands=4,
                      dtype="uint8", nodata_border=SCENE_NODATA_BORDER)


@pytest.fixture(scope="session")
def synthetic_export(synthetic_scene, tmp_path_factory):
    """The shared scene exported in the ``Panoptic_Segmentation`` layout, 64 px chips without overlap.

    A :class:`geomax.data.export.ExportInfo`; the folder is ``.out_folder``.
    """
    from geomax.data.export import export_training_data
    from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES

    out = tmp_path_factory.mktemp("synthetic_export") / "chips"
    return export_training_data(synthetic_scene.raster, synthetic_scene.labels, out, class_field=CLASS_FIELD,
                                class_table=SYNTHETIC_CLASSES, tile_size=CHIP_SIZE, progress=False)


@pytest.fixture(scope="session")
def synthetic_data(synthetic_export):
    """``prepare_data`` of the shared export: batches of 4, a quarter held out, no augmentation, seed 0."""
    from geomax import prepare_data

    return prepare_data(synthetic_export.out_folder, batch_size=4, val_split_pct=0.25, transforms=False, seed=0)


@pytest.fixture(scope="session")
def _trained_and_saved(synthetic_data, tmp_path_factory):
    """One training for the session: (model, folder it was saved to)."""
    import torch

    from geomax import MaXDeepLab

    torch.manual_seed(0)
    model = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    model.learn.path = tmp_path_factory.mktemp("trained_model_work")  # anything fastai writes goes here
    model.fit(TRAINED_EPOCHS, lr=3e-3, checkpoint=False)
    folder = model.save(tmp_path_factory.mktemp("trained_model") / "tiny_model")
    return model, folder


@pytest.fixture(scope="session")
def trained_model(_trained_and_saved):
    """A ``max_deeplab_tiny`` MaXDeepLab trained three epochs at lr 3e-3 on ``synthetic_data``.

    Read it (predict, compute_metrics, its recorder); do not train, freeze or save it.
    """
    return _trained_and_saved[0]


@pytest.fixture(scope="session")
def trained_model_folder(_trained_and_saved):
    """The folder ``trained_model`` was saved to: ``tiny_model.{pth,emd,dlpk}`` and ``model_metrics.html``.

    Read only; copy it (``shutil.copytree``) to change it.
    """
    return _trained_and_saved[1]
