"""Tests of the geoprocessing tool scripts and of the ArcGIS Python toolbox (without ArcGIS).

The toolbox (``toolboxes/geomax.pyt``) runs geomax in a Python environment of its own through
``geomax.workflows.bridge``; here that environment is this test's Python (``GEOMAX_PYTHON``), and
arcpy is a fake that records parameters, messages and the progressor.
"""
import ast
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
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
            if p.percent:
                assert p.kind == "float"


def test_value_conversion_from_arcgis_text():
    tool = _toolspec.TOOLS["ExportTrainingDataForDeepLearning"]
    v = _toolspec.convert_values(tool, {"in_raster": "a.tif", "in_labels": "b.gpkg", "out_folder": "c",
                                        "thing_classes": "building;'tree'", "tile_size": "512", "bands": "1;2;3",
                                        "keep_empty": "true", "max_nodata_fraction": "0.25", "stride": "#"})
    assert v["thing_classes"] == ["building", "tree"] and v["bands"] == [1, 2, 3]
    assert v["tile_size"] == 512 and v["keep_empty"] is True and v["max_nodata_fraction"] == 0.25
    assert v["stride"] is None and v["class_field"] is None and v["overwrite"] is False  # class field: detected
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


@pytest.fixture(scope="module")
def pyt():
    """geomax.pyt loaded once for the module: it reads the tool description once, as in one ArcGIS Pro session."""
    return _load_pyt()


@pytest.fixture
def geomax_python(monkeypatch):
    """The toolbox's geomax environment: this test's Python."""
    monkeypatch.setenv("GEOMAX_PYTHON", sys.executable)
    return sys.executable


@pytest.fixture
def no_geomax_python(monkeypatch, pyt, tmp_path):
    """Neither GEOMAX_PYTHON nor geomax_python.txt (the file is looked for in an empty folder)."""
    monkeypatch.delenv("GEOMAX_PYTHON", raising=False)
    config = tmp_path / "toolbox" / "geomax_python.txt"
    config.parent.mkdir()
    monkeypatch.setattr(pyt, "_CONFIG_FILE", str(config))
    return config


class _FakeParameter:
    """Records what the toolbox asks of arcpy.Parameter; ``valueAsText`` as ArcGIS gives it."""

    def __init__(self, name, displayName, datatype, parameterType, direction, multiValue=False):
        self.name, self.displayName, self.datatype = name, displayName, datatype
        self.parameterType, self.direction, self.multiValue = parameterType, direction, multiValue
        self.value = None
        self.filter = types.SimpleNamespace(type=None, list=[])
        self.parameterDependencies = []
        self.description = ""
        self.errors = []

    @property
    def valueAsText(self):
        if self.value is None:
            return None
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, list):
            return ";".join(map(str, self.value))
        return str(self.value)

    def setErrorMessage(self, message):
        self.errors.append(message)


class _FakeExecuteError(Exception):
    pass


@pytest.fixture
def fake_arcpy(monkeypatch):
    """A fake arcpy: ``arcpy.progress`` records the progressor calls in order."""
    arcpy = types.ModuleType("arcpy")
    arcpy.Parameter = _FakeParameter
    arcpy.ExecuteError = _FakeExecuteError
    arcpy.env = types.SimpleNamespace(isCancelled=False)
    arcpy.progress = []
    arcpy.SetProgressor = lambda kind, message="", lo=0, hi=100, step=1: arcpy.progress.append(
        ("SetProgressor", kind, message, lo, hi, step))
    arcpy.SetProgressorPosition = lambda position=None: arcpy.progress.append(("position", position))
    arcpy.SetProgressorLabel = lambda label: arcpy.progress.append(("label", label))
    arcpy.ResetProgressor = lambda: arcpy.progress.append(("reset",))
    monkeypatch.setitem(sys.modules, "arcpy", arcpy)
    return arcpy


class _Messages:
    def __init__(self):
        self.info, self.warnings, self.errors = [], [], []

    def addMessage(self, m):
        self.info.append(m)

    def addWarningMessage(self, m):
        self.warnings.append(m)

    def addErrorMessage(self, m):
        self.errors.append(m)


def test_pyt_imports_only_the_standard_library_and_arcpy():
    tree = ast.parse((TOOLBOX_DIR / "geomax.pyt").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module
            imported.add(node.module.split(".")[0])
    assert "arcpy" in imported
    assert imported - {"arcpy"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    at_module_level = {a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    assert "arcpy" not in at_module_level  # only inside the methods ArcGIS calls


_LOAD_WITH_GEOMAX_BLOCKED = textwrap.dedent("""
    import importlib.abc, importlib.machinery, importlib.util, json, sys, types

    BLOCKED = {"geomax", "_toolspec", "torch", "fastai", "numpy", "rasterio", "geopandas"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(name + " is blocked: the toolbox must not import it")
            return None

    sys.meta_path.insert(0, Block())

    class Parameter:
        def __init__(self, name, displayName, datatype, parameterType, direction, multiValue=False):
            self.name, self.datatype, self.value, self.description = name, datatype, None, ""
            self.filter = types.SimpleNamespace(type=None, list=[])
            self.parameterDependencies = []

    sys.modules["arcpy"] = types.SimpleNamespace(Parameter=Parameter)
    loader = importlib.machinery.SourceFileLoader("geomax_pyt", sys.argv[1])
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("geomax_pyt", loader))
    loader.exec_module(module)
    tools = {}
    for cls in module.Toolbox().tools:
        tool = cls()
        tools[cls.__name__] = {"label": tool.label, "params": [p.name for p in tool.getParameterInfo()]}
    print(json.dumps({"tools": tools, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
""")


def test_pyt_loads_and_lists_the_tools_where_geomax_cannot_be_imported():
    """As in ArcGIS Pro's Python: geomax, torch and fastai 2 are not there; the tools still come from geomax."""
    env = {**os.environ, "GEOMAX_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITH_GEOMAX_BLOCKED, str(TOOLBOX_DIR / "geomax.pyt")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert list(result["tools"]) == TOOL_NAMES
    for name, tool in _toolspec.TOOLS.items():
        assert result["tools"][name] == {"label": tool.label, "params": [p.name for p in tool.params]}


def test_pyt_loads_without_arcpy_and_lists_the_tools(pyt, no_geomax_python):
    assert "arcpy" not in sys.modules
    box = pyt.Toolbox()
    assert [t.__name__ for t in box.tools] == TOOL_NAMES
    tool = box.tools[0]()
    assert tool.label.startswith("Export Training Data For Deep Learning")
    assert "arcpy" not in sys.modules


def test_pyt_parameters_follow_the_table(fake_arcpy, pyt, geomax_python):
    for cls in pyt.Toolbox().tools:
        spec = _toolspec.TOOLS[cls.__name__]
        tool = cls()
        assert (tool.label, tool.description, tool.category) == (spec.label, spec.description, spec.category)
        params = tool.getParameterInfo()
        assert [p.name for p in params] == [p.name for p in spec.params]
        for p, s in zip(params, spec.params):
            assert p.displayName == s.label and p.description == s.help
            assert p.parameterType == ("Required" if s.required else "Optional")
            assert p.direction == s.direction and p.multiValue == s.multivalue
            assert p.value == (100 * s.default if s.percent else s.default)
            if s.choices:
                assert p.filter.type == "ValueList" and p.filter.list == list(s.choices)
    export = pyt.ExportTrainingDataForDeepLearning().getParameterInfo()
    by_name = {p.name: p for p in export}
    assert by_name["class_field"].datatype == "Field" and by_name["class_field"].value is None  # detected
    assert by_name["class_field"].parameterDependencies == ["in_labels"]
    assert by_name["out_folder"].datatype == "DEFolder" and by_name["out_folder"].direction == "Output"
    assert by_name["in_raster"].datatype == ["DERasterDataset", "GPRasterLayer"]
    # the backbone list comes from the variants registry of geomax's environment
    from geomax.models.maxdeeplab import list_variants

    backbone = {p.name: p for p in pyt.TrainDeepLearningModel().getParameterInfo()}["backbone"]
    assert backbone.filter.type == "ValueList" and backbone.filter.list == list(list_variants())


def test_pyt_validation_is_a_percent_as_in_arcgis_pro(fake_arcpy, pyt, geomax_python):
    params = pyt.TrainDeepLearningModel().getParameterInfo()
    by_name = {p.name: p for p in params}
    validation = by_name["val_split"]
    assert validation.displayName == "Validation %" and validation.value == 10  # TrainConfig's 0.1
    assert validation.filter.type == "Range" and validation.filter.list == [0, 100]
    by_name["in_folder"].value, by_name["out_model"].value = "chips", "model"
    described = pyt.tool_description("TrainDeepLearningModel")["params"]
    train = _toolspec.TOOLS["TrainDeepLearningModel"]
    values = pyt.values_for_geomax(fake_arcpy, described, params)
    assert values["val_split"] == "10.0%" and values["learning_rate"] == train.param("learning_rate").default
    assert _toolspec.convert_values(train, values)["val_split"] == 0.1
    validation.value = 25  # what a Pro user types for a quarter
    assert _toolspec.convert_values(train, pyt.values_for_geomax(fake_arcpy, described, params))["val_split"] == 0.25


def _export_inputs(scene, out):
    return {"in_raster": str(scene.raster), "in_labels": str(scene.labels), "out_folder": str(out),
            "thing_classes": ["building", "vehicle"], "tile_size": 128}


def _set(params, values):
    by_name = {p.name: p for p in params}
    for name, value in values.items():
        by_name[name].value = value
    return by_name


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_pyt_execute_runs_export_in_geomax_and_reports_errors(fake_arcpy, pyt, geomax_python, scene, tmp_path):
    tool = pyt.ExportTrainingDataForDeepLearning()
    params = tool.getParameterInfo()
    by_name = _set(params, _export_inputs(scene, tmp_path / "chips"))
    messages = _Messages()
    tool.execute(params, messages)
    assert any("Exported" in m for m in messages.info) and not messages.errors
    assert (tmp_path / "chips" / "labels2" / "building").is_dir()
    # the same chips as a direct run of the tool
    _toolspec.run_tool("ExportTrainingDataForDeepLearning", _export_inputs(scene, tmp_path / "direct"),
                       log=lambda m: None)
    via_pyt, direct = tmp_path / "chips", tmp_path / "direct"
    assert _files(via_pyt) == _files(direct)
    assert (via_pyt / "map.txt").read_text() == (direct / "map.txt").read_text()
    for name in _files(via_pyt):
        if name.endswith(".tif"):
            with rasterio.open(via_pyt / name) as a, rasterio.open(direct / name) as b:
                assert (a.read() == b.read()).all(), name
    # a bad class field: geomax's error goes to the geoprocessing messages and ExecuteError is raised
    by_name["out_folder"].value = str(tmp_path / "chips2")
    by_name["class_field"].value = "not_a_field"
    messages = _Messages()
    with pytest.raises(_FakeExecuteError, match="not_a_field"):
        tool.execute(params, messages)
    assert len(messages.errors) == 1 and "not_a_field" in messages.errors[0]
    assert "Traceback" not in "".join(messages.info) and not (tmp_path / "chips2").exists()


def test_pyt_prediction_shows_progress(fake_arcpy, pyt, geomax_python, scene, trained_model_folder, tmp_path):
    tool = pyt.PanopticSegmentationUsingDeepLearning()
    params = tool.getParameterInfo()
    _set(params, {"in_raster": str(scene.raster), "in_model": str(trained_model_folder),
                  "out_raster": str(tmp_path / "pred.tif"), "tile_size": 128, "overlap": 32})
    messages = _Messages()
    tool.execute(params, messages)
    assert any(m.startswith("Wrote") for m in messages.info) and not messages.errors
    with rasterio.open(tmp_path / "pred.tif") as src:
        assert src.count == 3
    starts = [call for call in fake_arcpy.progress if call[0] == "SetProgressor"]
    positions = [call[1] for call in fake_arcpy.progress if call[0] == "position"]
    assert len(starts) == 1 and starts[0][1:3] == ("step", "tiles")
    total = starts[0][4]
    assert total > 1 and positions == sorted(positions) and positions[0] == 0 and positions[-1] == total
    assert ("label", f"tiles {total}/{total}") in fake_arcpy.progress
    assert fake_arcpy.progress[-1] == ("reset",)


def test_pyt_cancel_stops_the_geomax_process(fake_arcpy, pyt, geomax_python, scene, tmp_path):
    tool = pyt.ExportTrainingDataForDeepLearning()
    params = tool.getParameterInfo()
    _set(params, _export_inputs(scene, tmp_path / "chips"))
    fake_arcpy.env.isCancelled = True
    messages = _Messages()
    with pytest.raises(_FakeExecuteError, match="Cancelled"):
        tool.execute(params, messages)
    assert not (tmp_path / "chips").exists()


def test_pyt_without_geomax_environment_says_how_to_set_it_up(fake_arcpy, pyt, no_geomax_python, tmp_path,
                                                               monkeypatch):
    tool = pyt.ExportTrainingDataForDeepLearning()
    assert tool.label == "Export Training Data For Deep Learning" and "GEOMAX_PYTHON" in tool.description
    params = tool.getParameterInfo()
    assert [p.name for p in params] == ["geomax_setup"]
    tool.updateMessages(params)
    message = params[0].errors[0]
    for part in ("GEOMAX_PYTHON", str(no_geomax_python), "pip install geomax", "conda create", "fastai 1"):
        assert part in message
    messages = _Messages()
    with pytest.raises(_FakeExecuteError):
        tool.execute(params, messages)
    assert "GEOMAX_PYTHON" in messages.errors[0] and str(no_geomax_python) in messages.errors[0]
    # a configured interpreter that is not there is named, with where it was configured
    missing = tmp_path / "nope" / "python.exe"
    monkeypatch.setenv("GEOMAX_PYTHON", str(missing))
    with pytest.raises(pyt.SetupError, match="GEOMAX_PYTHON.*does not exist") as error:
        pyt.find_interpreter()
    assert str(missing) in str(error.value)
    # an interpreter without geomax: the message says to install geomax into that environment
    no_geomax = tmp_path / "bare" / "python"
    no_geomax.parent.mkdir()
    no_geomax.write_text("#!/bin/sh\necho 'No module named geomax' >&2\nexit 1\n")
    no_geomax.chmod(0o755)
    if os.name != "nt":
        with pytest.raises(pyt.SetupError, match="No module named geomax") as error:
            pyt.describe(str(no_geomax))
        assert "pip install geomax" in str(error.value)


def test_pyt_finds_geomax_python_in_the_text_file(pyt, no_geomax_python, monkeypatch):
    env = no_geomax_python.parent / "env"
    env.mkdir()
    python = env / "python.exe"
    python.write_text("")
    no_geomax_python.write_text(f"# geomax's environment\n\n  \"{python}\"  \nignored\n", encoding="utf-8")
    assert pyt.find_interpreter() == str(python)
    no_geomax_python.write_text("env/python.exe\n")  # relative to the toolbox folder
    assert pyt.find_interpreter() == str(python)
    no_geomax_python.write_text(f"{env}\n")  # the environment's folder
    assert pyt.find_interpreter() == str(python)
    no_geomax_python.write_text("# only a comment\n")
    with pytest.raises(pyt.SetupError, match="names no interpreter"):
        pyt.find_interpreter()
    monkeypatch.setenv("GEOMAX_PYTHON", str(python))  # the variable comes first
    assert pyt.find_interpreter() == str(python)


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
                                                            "--batch_size", "4", "--val_split", "20%"]) == 0
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
