"""The tool table (geomax.workflows.tools): one set of names, defaults and checks for the toolbox, its scripts and `geomax`."""
import argparse
import inspect

import pytest

from geomax.cli import build_parser, main
from geomax.config import TilingConfig, TrainConfig, default_of
from geomax.data.export import export_training_data
from geomax.errors import ArgumentError, DataError
from geomax.evaluate import CLASS_FIELD_CANDIDATES, evaluate_raster
from geomax.workflows.tools import TOOLS, convert_values, label_class_field, parse_text, run_tool

COMMANDS = {"export": "ExportTrainingDataForDeepLearning", "train": "TrainDeepLearningModel",
            "predict": "PanopticSegmentationUsingDeepLearning", "evaluate": "ComputePanopticAccuracy"}

#: Flags of the `geomax` command before it was generated from the table: each must still exist.
LEGACY_FLAGS = {
    "export": {"--class-field", "--things", "--classes", "--tile-size", "--stride", "--format", "--bands",
               "--keep-empty", "--max-nodata", "--layer", "--overwrite"},
    "train": {"--out", "--backbone", "--epochs", "--minutes", "--lr", "--chip-size", "--batch-size", "--val-split",
              "--monitor", "--early-stopping", "--pretrained", "--seed", "--threads", "--overwrite"},
    "predict": {"--features", "--tile-size", "--overlap", "--batch-size", "--bands", "--class-threshold",
                "--mask-threshold", "--min-thing-area", "--min-stuff-area", "--keep-disconnected", "--simplify",
                "--overwrite", "--quiet"},
    "evaluate": {"--model", "--class-field", "--instances", "--image", "--classes", "--tile-size", "--window-size",
                 "--json", "--overwrite", "--quiet"},
}
LEGACY_POSITIONALS = {"export": ["raster", "labels", "out"], "train": ["data"], "predict": ["model", "raster", "out"],
                      "evaluate": ["prediction", "reference"]}


def _subparser(command) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command]


def test_every_tool_is_a_geomax_subcommand_with_one_flag_per_parameter():
    assert {t.command: name for name, t in TOOLS.items()} == COMMANDS
    for tool in TOOLS.values():
        flags = [p.flag for p in tool.params]
        assert len(flags) == len(set(flags)), tool.name
        positional = [p.name for p in tool.params if not p.flag.startswith("-")]
        assert sorted(tool.cli_order or positional) == sorted(positional)
        for p in tool.params:
            if p.kind == "bool":
                assert p.default is False and not p.required  # a flag, off unless given
            if p.check is not None:
                assert p.kind in ("int", "float")
            if p.default is not None and p.choices:
                assert p.default in p.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_geomax_subcommand_is_generated_from_the_table(command):
    tool = TOOLS[COMMANDS[command]]
    actions = {a.dest: a for a in _subparser(command)._actions}
    for p in tool.params:
        action = actions[p.name]
        assert action.help.replace("%%", "%") == p.help_text()  # the same help text as the toolbox
        assert action.default in (None, False)  # "not given": run_tool fills the table's default
        if p.flag.startswith("-"):
            assert p.flag in action.option_strings and action.required == p.required
        else:
            assert action.metavar == p.flag
    options = {s for a in actions.values() for s in a.option_strings}
    assert LEGACY_FLAGS[command] <= options
    positional = [a.metavar for a in _subparser(command)._actions if not a.option_strings]
    assert positional == LEGACY_POSITIONALS[command]


def test_defaults_come_from_where_they_are_defined():
    export, train = TOOLS["ExportTrainingDataForDeepLearning"], TOOLS["TrainDeepLearningModel"]
    library = inspect.signature(export_training_data).parameters
    for name in ("tile_size", "chip_format", "max_nodata_fraction"):
        assert export.param(name).default == library[name].default
    # the class field is detected when not given (the library's default is the first candidate)
    assert export.param("class_field").default is None and "Classvalue" in export.param("class_field").help
    assert CLASS_FIELD_CANDIDATES[0] == library["class_field"].default
    for name, setting in (("learning_rate", "lr"), ("batch_size", "batch_size"), ("val_split", "val_split"),
                          ("monitor", "monitor"), ("patience", "patience"), ("seed", "seed")):
        assert train.param(name).default == default_of(TrainConfig, setting)
    # defaults that depend on the model are left to it: nothing in the table overrides a saved setting
    predict = TOOLS["PanopticSegmentationUsingDeepLearning"]
    for name in ("tile_size", "overlap", "batch_size", "class_threshold", "mask_threshold", "min_thing_area",
                 "min_stuff_area"):
        assert predict.param(name).default is None
    assert str(default_of(TilingConfig, "batch_size")) in predict.param("batch_size").help
    accuracy = TOOLS["ComputePanopticAccuracy"]
    assert accuracy.param("window_size").default == inspect.signature(evaluate_raster).parameters["window_size"].default
    # no learning rate of their own: the recipe of an empty train call is TrainConfig's
    values = convert_values(train, {"in_folder": "chips", "out_model": "m"})
    assert values["learning_rate"] == TrainConfig().lr and values["max_epochs"] is None


def test_checks_are_the_same_for_the_toolbox_and_geomax(capsys):
    tile = TOOLS["ExportTrainingDataForDeepLearning"].param("tile_size")
    with pytest.raises(ValueError, match="whole number"):
        parse_text(tile, "12.5")
    with pytest.raises(ValueError, match="> 0"):
        parse_text(tile, "0")
    assert parse_text(tile, "512.0") == 512
    with pytest.raises(ArgumentError, match=r"'Tile Size' \(tile_size\): expected a whole number > 0, got 0"):
        convert_values(TOOLS["ExportTrainingDataForDeepLearning"],
                       {"in_raster": "a", "in_labels": "b", "out_folder": "c", "tile_size": "0"})
    assert main(["export", "a", "b", "c", "--tile-size", "0"]) == 2
    assert "argument --tile-size: expected a whole number > 0, got 0" in capsys.readouterr().err
    assert main(["predict", "m", "r", "o.tif", "--class-threshold", "1.5"]) == 2
    assert "--class-threshold: expected a number between 0 and 1, got 1.5" in capsys.readouterr().err


def test_excluded_pairs_are_named_as_each_entry_point_names_them(tmp_path, capsys):
    train = TOOLS["TrainDeepLearningModel"]
    with pytest.raises(ArgumentError, match=r"either 'Max Epochs' \(max_epochs\) or 'Max Minutes' \(max_minutes\)"):
        convert_values(train, {"in_folder": "a", "out_model": "b", "max_epochs": "2", "max_minutes": "1"})
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "m"), "--epochs", "2", "--minutes", "1"]) == 2
    assert "Give either --epochs or --minutes, not both." in capsys.readouterr().err


def test_backbone_list_for_arcgis_comes_from_the_variants_registry():
    from geomax.models.maxdeeplab import list_variants

    assert list(TOOLS["TrainDeepLearningModel"].param("backbone").choices_of()) == list(list_variants())


def test_validation_share_is_a_fraction_or_a_percent():
    """ArcGIS Pro's Train Deep Learning Model takes "Validation %" (10); `geomax train --val-split` a fraction (0.1)."""
    validation = TOOLS["TrainDeepLearningModel"].param("val_split")
    assert validation.percent and validation.label == "Validation %"
    assert parse_text(validation, "0.1") == 0.1 and parse_text(validation, "10%") == 0.1
    assert parse_text(validation, " 25 % ") == 0.25 and parse_text(validation, "0%") == 0.0
    with pytest.raises(ValueError, match="between 0 and 1 or a percent such as 10%, got 10"):
        parse_text(validation, "10")  # a bare number is a fraction: never silently read as 10 %
    with pytest.raises(ValueError, match="percent from 0% to 100%"):
        parse_text(validation, "150%")
    with pytest.raises(ValueError, match="a number or a percent"):
        parse_text(validation, "ten%")
    sub = _subparser("train")
    assert sub.parse_args(["chips", "--out", "m", "--val-split", "20%"]).val_split == 0.2
    assert sub.parse_args(["chips", "--out", "m", "--val-split", "0.2"]).val_split == 0.2
    assert convert_values(TOOLS["TrainDeepLearningModel"],
                          {"in_folder": "chips", "out_model": "m", "val_split": "15%"})["val_split"] == 0.15


def test_export_detects_the_class_field_of_arcgis_pro_training_samples(synthetic_scene, tmp_path):
    """Pro's training samples hold Classname and Classvalue: found without naming a field, as evaluate finds it."""
    import geopandas as gpd
    import rasterio

    labels = gpd.read_file(synthetic_scene.labels)
    samples = gpd.GeoDataFrame({"Classvalue": labels["class_value"].astype("int64"), "Classname": labels["class_name"]},
                               geometry=labels.geometry, crs=labels.crs)
    samples.to_file(tmp_path / "samples.gpkg")
    samples.drop(columns="Classname").to_file(tmp_path / "values.gpkg")
    samples.drop(columns=["Classname", "Classvalue"]).assign(kind="x").to_file(tmp_path / "no_class.gpkg")
    assert label_class_field(tmp_path / "samples.gpkg") == "Classname"
    assert label_class_field(tmp_path / "values.gpkg") == "Classvalue"
    assert label_class_field(tmp_path / "values.gpkg", "mine") == "mine"  # given: used as it is
    with pytest.raises(DataError, match=r"Cannot tell which field.*kind"):
        label_class_field(tmp_path / "no_class.gpkg")

    def export(labels_path, out, **values):
        lines = []
        info = run_tool("ExportTrainingDataForDeepLearning", {"in_raster": str(synthetic_scene.raster),
                                                              "in_labels": str(labels_path), "out_folder": str(out),
                                                              "tile_size": 128, **values}, log=lines.append)
        return info, lines

    things = {"thing_classes": ["building", "vehicle"]}
    by_name, lines = export(tmp_path / "samples.gpkg", tmp_path / "by_name", **things)
    reference, _ = export(synthetic_scene.labels, tmp_path / "reference", **things)
    assert any("'Classname' (detected)" in line for line in lines)
    assert by_name.class_table.names == reference.class_table.names and by_name.n_chips == reference.n_chips
    # Values only, with the class table they refer to: the same label chips as from the names
    by_value, lines = export(tmp_path / "values.gpkg", tmp_path / "by_value", class_table_source="synthetic")
    from_names, _ = export(synthetic_scene.labels, tmp_path / "from_names", class_table_source="synthetic")
    assert any("'Classvalue' (detected)" in line for line in lines)
    chips = sorted(p.name for p in (tmp_path / "from_names" / "labels").iterdir())
    assert chips and sorted(p.name for p in (tmp_path / "by_value" / "labels").iterdir()) == chips
    for name in chips:
        with rasterio.open(tmp_path / "by_value" / "labels" / name) as a, \
                rasterio.open(tmp_path / "from_names" / "labels" / name) as b:
            assert (a.read() == b.read()).all()
