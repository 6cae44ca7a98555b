"""geomax.workflows.export: the export step of every entry point."""
import pytest

from geomax.data.synthetic import SYNTHETIC_CLASSES
from geomax.errors import DataError
from geomax.workflows.export import export


def test_export_without_things_says_every_class_is_stuff(synthetic_scene, tmp_path):
    lines = []
    info = export(synthetic_scene.raster, synthetic_scene.labels, tmp_path / "chips", tile_size=128, log=lines.append)
    assert lines[0].startswith("note: no thing classes given")
    assert "Classes with many separate features ('building'" in lines[0] and "pass --things building" in lines[0]
    assert info.class_table.thing_names == [] and info.n_chips > 0
    assert lines[-2].startswith(f"Exported {info.n_chips} chips of 128 px") and "things: none" in lines[-2]
    assert lines[-1].startswith("Background rule 'void': the labels cover 100% of the valid pixels with stuff classes")


def test_export_takes_the_class_table_from_a_source(synthetic_scene, tmp_path):
    lines = []
    info = export(synthetic_scene.raster, synthetic_scene.labels, tmp_path / "chips", class_table_source="synthetic",
                  tile_size=128, keep_empty=True, log=lines.append)
    assert info.class_table.values == SYNTHETIC_CLASSES.values
    assert info.class_table.thing_names == SYNTHETIC_CLASSES.thing_names
    assert not any(line.startswith("note:") for line in lines)
    assert info.n_chips == 4  # 256 px scene, 128 px chips, empty ones kept


def test_missing_input_is_refused_before_anything_is_written(synthetic_scene, tmp_path):
    with pytest.raises(DataError, match="missing.tif.*does not exist"):
        export(tmp_path / "missing.tif", synthetic_scene.labels, tmp_path / "chips", log=lambda line: None)
    with pytest.raises(DataError, match="Label file"):
        export(synthetic_scene.raster, tmp_path / "missing.gpkg", tmp_path / "chips", log=lambda line: None)
    assert not (tmp_path / "chips").exists()
