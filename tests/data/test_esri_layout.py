"""Tests of geomax.data.esri_layout: reading the Panoptic_Segmentation export layout."""
import json
import shutil

import pytest

from geomax.data.esri_layout import EMD_FILE, MAP_FILE, read_export
from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.errors import DataError


def test_read_export_of_the_shared_export(synthetic_export):
    layout = read_export(synthetic_export.out_folder)
    assert layout.class_table.to_dict() == SYNTHETIC_CLASSES.to_dict()
    assert len(layout.chips) == synthetic_export.n_chips > 0
    assert layout.band_names == ["red", "green", "blue", "nir"] and layout.band_stats.n_bands == 4
    assert layout.image_size == (64, 64)
    assert set(layout.instance_dirs) <= set(SYNTHETIC_CLASSES.thing_values)
    for chip in layout.chips:
        assert chip.image.exists() and chip.label.exists() and chip.image.stem == chip.id
        assert set(chip.instances) <= set(layout.instance_dirs)
    assert any(chip.instances for chip in layout.chips)


def test_map_paths_from_another_machine_resolve_inside_the_folder(synthetic_export, tmp_path):
    root = shutil.copytree(synthetic_export.out_folder, tmp_path / "chips")
    original = read_export(root)
    lines = [f"C:\\Users\\someone\\exports\\images\\{c.image.name} C:\\Users\\someone\\exports\\labels\\{c.label.name}"
             for c in original.chips]
    (root / MAP_FILE).write_text("\n".join(lines) + "\n\n")
    moved = read_export(root)
    assert [c.image for c in moved.chips] == [c.image for c in original.chips]
    assert [c.label for c in moved.chips] == [c.label for c in original.chips]


def test_broken_exports_raise_data_errors(synthetic_export, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_export(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a training-data export"):
        read_export(tmp_path / "empty")
    root = shutil.copytree(synthetic_export.out_folder, tmp_path / "chips")
    (root / MAP_FILE).write_text("just_one_path.tif\n")
    with pytest.raises(DataError, match="line 1"):
        read_export(root)
    (root / MAP_FILE).unlink()
    emd = json.loads((root / EMD_FILE).read_text())
    (root / EMD_FILE).write_text(json.dumps({**emd, "MetaDataMode": "Classified_Tiles"}))
    with pytest.raises(DataError, match="Classified_Tiles"):
        read_export(root)
    (root / EMD_FILE).write_text("{ not json")
    with pytest.raises(DataError, match="not readable JSON"):
        read_export(root)
    (root / EMD_FILE).write_text(json.dumps(emd))
    (root / "labels2" / "road").mkdir(parents=True)
    with pytest.raises(DataError, match="not a thing class"):
        read_export(root)
