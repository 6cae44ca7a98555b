"""Tests of the geoprocessing tool scripts and of the ArcGIS Python toolbox (without ArcGIS)."""
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import rasterio

from geomax.errors import ArgumentError

TOOLBOX_DIR = Path(__file__).resolve().parents[1] / "toolboxes"
sys.path.insert(0, str(TOOLBOX_DIR))
import _toolspec  # noqa: E402

TOOL_NAMES = ["ExportTrainingDataForDeepLearning", "TrainDeepLearningModel",
              "PanopticSegmentationUsingDeepLearning", "ComputePanopticAccuracy"]


@pytest.fixture(scope="module")
def scene(synthetic_scene):
    """The shared synthetic scene (tests/conftest.py)."""
    return synthetic_scene


def _script(name, *args):
    return subprocess.run([sys.executable, str(TOOLBOX_DIR / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- the shared spec
def test_every_tool_has_a_script_and_consistent_parameters():
    assert list(_toolspec.TOOLS) == TOOL_NAMES
    for name, tool in _toolspec.TOOLS.items():
        assert (TOOLBOX_DIR / f"{name}.py").exists()
        names = [p.name for p in tool.params]
        assert len(names) == len(set(names))
        for p in tool.params:
            assert p.kind in ("path", "str", "int", "float", "bool")
            assert p.direction in ("Input", "Output")
            if p.depends_on:
                assert p.depends_on in names
            if p.default is not None and p.choices:
                assert p.default in p.choices


def test_value_conversion_from_arcgis_text():
    tool = _toolspec.TOOLS["ExportTrainingDataForDeepLearning"]
    v = _toolspec.convert_values(tool, {"in_raster": "a.tif", "in_labels": "b.gpkg", "out_folder": "c",
                                        "thing_classes": "building;'tree'", "tile_size": "512", "bands": "1;2;3",
                                        "keep_empty": "true", "max_nodata_fraction": "0.25", "stride": "#"})
    assert v["thing_classes"] == ["building", "tree"] and v["bands"] == [1, 2, 3]
    assert v["tile_size"] == 512 and v["keep_empty"] is True and v["max_nodata_fraction"] == 0.25
    assert v["stride"] is None and v["class_field"] == "class_name" and v["overwrite"] is False
    with pytest.raises(ArgumentError, match="Tile Size"):
        _toolspec.convert_values(tool, {"in_raster": "a", "in_labels": "b", "out_folder": "c", "tile_size": "big"})
    with pytest.raises(ArgumentError, match="required"):
        _toolspec.convert_values(tool, {"in_raster": "a", "in_labels": "b"})
    with pytest.raises(ArgumentError, match="one of"):
        _toolspec.convert_values(tool, {"in_raster": "a", "in_labels": "b", "out_folder": "c", "chip_format": "jpg"})
    with pytest.raises(ArgumentError, match="no parameter"):
        _toolspec.convert_values(tool, {"in_raster": "a", "in_labels": "b", "out_folder": "c", "colour": "red"})


# ----------------------------------------------------------------------------- the .pyt without ArcGIS
def _load_pyt():
    loader = importlib.machinery.SourceFileLoader("geomax_pyt", str(TOOLBOX_DIR / "geomax.pyt"))
    spec = importlib.util.spec_from_loader("geomax_pyt", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class _FakeParameter:
    """Records what the toolbox asks of arcpy.Parameter; ``valueAsText`` as ArcGIS gives it."""

    def __init__(self, name, displayName, datatype, parameterType, direction, multiValue=False):
        self.name, self.displayName, self.datatype = name, displayName, datatype
        self.parameterType, self.direction, self.multiValue = parameterType, direction, multiValue
        self.value = None
        self.filter = types.SimpleNamespace(type=None, list=[])
        self.parameterDependencies = []
        self.description = ""

    @property
    def valueAsText(self):
        if self.value is None:
            return None
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, list):
            return ";".join(map(str, self.value))
        return str(self.value)


class _FakeExecuteError(Exception):
    pass


@pytest.fixture
def fake_arcpy(monkeypatch):
    arcpy = types.ModuleType("arcpy")
    arcpy.Parameter = _FakeParameter
    arcpy.ExecuteError = _FakeExecuteError
    monkeypatch.setitem(sys.modules, "arcpy", arcpy)
    return arcpy


class _Messages:
    def __init__(self):
        self.info, self.errors = [], []

    def addMessage(self, m):
        self.info.append(m)

    def addErrorMessage(self, m):
        self.errors.append(m)


def test_pyt_loads_without_arcpy_and_lists_the_tools():
    assert "arcpy" not in sys.modules
    module = _load_pyt()
    box = module.Toolbox()
    assert [t.__name__ for t in box.tools] == TOOL_NAMES
    tool = box.tools[0]()
    assert tool.label.startswith("Export Training Data For Deep Learning")
    assert "arcpy" not in sys.modules


def test_pyt_parameters_follow_the_spec(fake_arcpy):
    module = _load_pyt()
    for cls in module.Toolbox().tools:
        spec = _toolspec.TOOLS[cls.__name__]
        params = cls().getParameterInfo()
        assert [p.name for p in params] == [p.name for p in spec.params]
        for p, s in zip(params, spec.params):
            assert p.parameterType == ("Required" if s.required else "Optional")
            assert p.direction == s.direction and p.multiValue == s.multivalue
            assert p.value == s.default
            if s.choices:
                assert p.filter.type == "ValueList" and p.filter.list == list(s.choices)
    export = module.ExportTrainingDataForDeepLearning().getParameterInfo()
    by_name = {p.name: p for p in export}
    assert by_name["class_field"].datatype == "Field"
    assert by_name["class_field"].parameterDependencies == ["in_labels"]
    assert by_name["out_folder"].datatype == "DEFolder" and by_name["out_folder"].direction == "Output"
    assert by_name["in_raster"].datatype == ["DERasterDataset", "GPRasterLayer"]
    # the backbone list comes from the variants registry when ArcGIS asks for the parameters
    from geomax.models.maxdeeplab import list_variants

    backbone = {p.name: p for p in module.TrainDeepLearningModel().getParameterInfo()}["backbone"]
    assert backbone.filter.type == "ValueList" and backbone.filter.list == list(list_variants())


def test_pyt_execute_runs_export_and_reports_errors(fake_arcpy, scene, tmp_path):
    module = _load_pyt()
    tool = module.ExportTrainingDataForDeepLearning()
    params = tool.getParameterInfo()
    by_name = {p.name: p for p in params}
    by_name["in_raster"].value = str(scene.raster)
    by_name["in_labels"].value = str(scene.labels)
    by_name["out_folder"].value = str(tmp_path / "chips")
    by_name["thing_classes"].value = ["building", "vehicle"]
    by_name["tile_size"].value = 128
    messages = _Messages()
    tool.execute(params, messages)
    assert (tmp_path / "chips" / "map.txt").exists()
    assert (tmp_path / "chips" / "labels2" / "building").is_dir()
    assert any("Exported" in m for m in messages.info)
    # a bad class field: the error goes to the geoprocessing messages and ExecuteError is raised
    by_name["out_folder"].value = str(tmp_path / "chips2")
    by_name["class_field"].value = "not_a_field"
    messages = _Messages()
    with pytest.raises(_FakeExecuteError):
        tool.execute(params, messages)
    assert messages.errors and "not_a_field" in messages.errors[0]


# ----------------------------------------------------------------------------- the scripts, end to end
def test_scripts_export_train_predict_accuracy(scene, tmp_path):
    chips = tmp_path / "chips"
    proc = _script("ExportTrainingDataForDeepLearning", scene.raster, scene.labels, chips,
                   "--thing_classes", "building", "vehicle", "--tile_size", "128", "--stride", "64")
    assert proc.returncode == 0, proc.stderr
    assert "Exported" in proc.stdout and (chips / "esri_model_definition.emd").exists()
    emd = json.loads((chips / "esri_model_definition.emd").read_text())
    assert {c["Name"] for c in emd["Panoptic_Segmentation_Instance_Classes"]} == {"building", "vehicle"}

    model = tmp_path / "model"
    assert _toolspec.script_main("TrainDeepLearningModel", [str(chips), str(model), "--backbone", "max_deeplab_tiny",
                                                            "--max_epochs", "1", "--learning_rate", "0.001",
                                                            "--batch_size", "4", "--val_split", "0.2"]) == 0
    assert list(model.glob("*.dlpk"))
    out = tmp_path / "pred.tif"
    assert _toolspec.script_main("PanopticSegmentationUsingDeepLearning",
                                 [str(scene.raster), str(model), str(out), "--out_features", str(tmp_path / "p.gpkg"),
                                  "--tile_size", "128", "--overlap", "32", "--keep_disconnected"]) == 0
    with rasterio.open(out) as src:
        assert src.count == 3 and (src.width, src.height) == (scene.size, scene.size)
    proc = _script("ComputePanopticAccuracy", out, scene.labels, "--in_image", scene.raster,
                   "--out_json", tmp_path / "pq.json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "pq.json").read_text())
    assert set(metrics) >= {"all", "things", "stuff", "per_class"}


def test_scripts_bad_input_one_line_exit_2(scene, tmp_path):
    proc = _script("ExportTrainingDataForDeepLearning", tmp_path / "missing.tif", scene.labels, tmp_path / "o")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("ExportTrainingDataForDeepLearning: error:") and len(err.splitlines()) == 1
    assert "Traceback" not in err
    proc = _script("ComputePanopticAccuracy", scene.raster)
    assert proc.returncode == 2 and "required" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _script("ExportTrainingDataForDeepLearning", scene.raster, scene.labels, tmp_path / "o",
                   "--tile_size", "huge")
    assert proc.returncode == 2 and "Tile Size" in proc.stderr
