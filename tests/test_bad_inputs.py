"""Bad input on every surface (API, ``geomax`` command, tool scripts): a geomax error naming the problem and
the fix, raised before anything is written; every file that was there is byte-identical afterwards."""
import re
import shutil

import numpy as np
import pytest

from geomax import MaXDeepLab, export_training_data, prepare_data
from geomax.cli import main
from geomax.errors import ArgumentError, DataError, GeomaxError, InputMismatchError, ModelError, OutputExistsError
from geomax.workflows.predict import predict_raster
from geomax.workflows.tools import script_main

#: Words by which a message tells the user what to do (or the valid range of a number).
FIX_WORDS = re.compile(r"\b(use|choose|give|pass|check|must be|define|run|delete|move|free|resume|export|save|set|"
                       r"train|rescale|one of|see|expected|did you mean|valid settings|at least|between|select|"
                       r"resample|load|name|make|remove|retry)\b", re.I)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synthetic_scene, synthetic_export, trained_model_folder, trained_model):
    """A workspace of user files: scene, labels, an export, a model, a prediction, a corrupt raster, a folder."""
    root = tmp_path_factory.mktemp("bad_inputs")
    shutil.copy(synthetic_scene.raster, root / "scene.tif")
    shutil.copy(synthetic_scene.labels, root / "labels.gpkg")
    shutil.copytree(synthetic_export.out_folder, root / "chips")
    shutil.copytree(trained_model_folder, root / "model")
    predict_raster(trained_model, root / "scene.tif", root / "pred.tif", progress=False)
    (root / "corrupt.tif").write_bytes(b"II*\x00 this is not a GeoTIFF")
    (root / "file.txt").write_text("a file, not a folder")
    (root / "notes").mkdir()
    (root / "notes" / "survey.txt").write_text("the user's own work")
    (root / "metrics.json").write_text("{}")
    return root




# (id, argv with {ws} for the workspace, regex the one-line message must match)
CLI_CASES = [
    ("export-missing-raster", "export {ws}/nope.tif {ws}/labels.gpkg {ws}/o --classes synthetic", r"nope\.tif.*not exist"),
    ("export-corrupt-raster", "export {ws}/corrupt.tif {ws}/labels.gpkg {ws}/o --classes synthetic",
     r"corrupt\.tif.*cannot be read"),
    ("export-missing-labels", "export {ws}/scene.tif {ws}/nope.gpkg {ws}/o --classes synthetic", r"nope\.gpkg"),
    ("export-tile-0", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --tile-size 0", r"--tile-size.*> 0, got 0"),
    ("export-tile-8", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --tile-size 8", r"tile_size=8"),
    ("export-stride-neg", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --stride -4", r"stride"),
    ("export-out-file", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/file.txt --classes synthetic",
     r"file\.txt.*is a file"),
    ("export-out-user-folder", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/notes --classes synthetic --overwrite",
     r"not a folder geomax wrote"),
    ("export-out-is-model", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/model --classes synthetic --overwrite",
     r"geomax model folder"),
    ("export-out-contains-raster", "export {ws}/scene.tif {ws}/labels.gpkg {ws} --classes synthetic --overwrite",
     r"contains the input raster"),
    ("export-bad-format", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --format jpg", r"jpg"),
    ("export-band-out-of-range", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --classes synthetic --bands 9",
     r"9"),
    ("export-nodata-fraction", "export {ws}/scene.tif {ws}/labels.gpkg {ws}/o --max-nodata 2", r"--max-nodata.*between 0 and 1"),
    ("train-missing-data", "train {ws}/nope --out {ws}/m", r"nope.*not exist"),
    ("train-data-is-file", "train {ws}/file.txt --out {ws}/m", r"is a file"),
    ("train-out-is-data", "train {ws}/chips --out {ws}/chips --overwrite", r"is the training data"),
    ("train-out-inside-data", "train {ws}/chips --out {ws}/chips/models/m", r"is inside the training data"),
    ("train-out-user-folder", "train {ws}/chips --out {ws}/notes --overwrite", r"not a folder geomax wrote"),
    ("train-out-model-no-overwrite", "train {ws}/chips --out {ws}/model", r"earlier geomax model"),
    ("train-lr-0", "train {ws}/chips --out {ws}/m --lr 0", r"--lr.*> 0, got 0"),
    ("train-lr-neg", "train {ws}/chips --out {ws}/m --lr -1", r"lr"),
    ("train-lr-nan", "train {ws}/chips --out {ws}/m --lr nan", r"--lr.*got nan"),
    ("train-lr-huge", "train {ws}/chips --out {ws}/m --lr 1e9", r"lr must be <= 1"),
    ("train-epochs-0", "train {ws}/chips --out {ws}/m --epochs 0", r"epochs"),
    ("train-epochs-float", "train {ws}/chips --out {ws}/m --epochs 2.5", r"epochs"),
    ("train-minutes-0", "train {ws}/chips --out {ws}/m --minutes 0", r"minutes"),
    ("train-epochs-and-minutes", "train {ws}/chips --out {ws}/m --epochs 2 --minutes 1", r"not both"),
    ("train-batch-0", "train {ws}/chips --out {ws}/m --batch-size 0", r"--batch-size.*got 0"),
    ("train-val-split", "train {ws}/chips --out {ws}/m --val-split 1.5", r"--val-split.*between 0 and 1"),
    ("train-backbone", "train {ws}/chips --out {ws}/m --backbone nope", r"nope"),
    ("train-resume-nothing", "train {ws}/chips --out {ws}/m --resume", r"no interrupted training"),
    ("train-pretrained-missing", "train {ws}/chips --out {ws}/m --pretrained {ws}/nope.pth", r"nope\.pth"),
    ("train-chip-size", "train {ws}/chips --out {ws}/m --chip-size 7", r"chip_size"),
    ("predict-missing-model", "predict {ws}/nope {ws}/scene.tif {ws}/p.tif", r"nope"),
    ("predict-model-user-folder", "predict {ws}/notes {ws}/scene.tif {ws}/p.tif", r"notes"),
    ("predict-missing-raster", "predict {ws}/model {ws}/nope.tif {ws}/p.tif", r"nope\.tif.*not exist"),
    ("predict-corrupt-raster", "predict {ws}/model {ws}/corrupt.tif {ws}/p.tif", r"corrupt\.tif"),
    ("predict-out-is-input", "predict {ws}/model {ws}/scene.tif {ws}/scene.tif --overwrite", r"is the input raster"),
    ("predict-out-in-model", "predict {ws}/model {ws}/scene.tif {ws}/model/p.tif", r"is inside the model"),
    ("predict-out-exists", "predict {ws}/model {ws}/scene.tif {ws}/pred.tif", r"pred\.tif.*exists"),
    ("predict-out-folder", "predict {ws}/model {ws}/scene.tif {ws}/notes.tif --features {ws}/notes",
     r"notes"),
    ("predict-tile-0", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --tile-size 0", r"--tile-size.*got 0"),
    ("predict-overlap-neg", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --overlap -1", r"overlap"),
    ("predict-batch-0", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --batch-size 0", r"--batch-size.*got 0"),
    ("predict-threshold", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --class-threshold 1.5", r"--class-threshold.*between 0 and 1"),
    ("predict-band-count", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --bands 1 2", r"bands"),
    ("predict-band-range", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --bands 9 9 9 9", r"9"),
    ("predict-features-ext", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --features {ws}/p.xyz", r"\.xyz"),
    ("predict-raster-ext", "predict {ws}/model {ws}/scene.tif {ws}/p.png", r"GeoTIFF"),
    ("predict-features-is-raster", "predict {ws}/model {ws}/scene.tif {ws}/p.tif --features {ws}/p.tif",
     r"p\.tif"),
    ("evaluate-missing-prediction", "evaluate {ws}/nope.tif {ws}/labels.gpkg", r"nope\.tif.*not exist"),
    ("evaluate-missing-reference", "evaluate {ws}/pred.tif {ws}/nope.gpkg", r"nope\.gpkg.*not exist"),
    ("evaluate-json-is-prediction", "evaluate {ws}/pred.tif {ws}/labels.gpkg --json {ws}/pred.tif --overwrite",
     r"is the prediction"),
    ("evaluate-json-exists", "evaluate {ws}/pred.tif {ws}/labels.gpkg --json {ws}/metrics.json", r"metrics\.json"),
    ("evaluate-corrupt", "evaluate {ws}/corrupt.tif {ws}/labels.gpkg", r"corrupt\.tif"),
    ("evaluate-window-0", "evaluate {ws}/pred.tif {ws}/labels.gpkg --window-size 0", r"window"),
    ("info-missing", "info {ws}/nope", r"nope"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(snapshot, ws, capsys, case):
    _, argv, pattern = case
    before = snapshot(ws)
    rc = main(argv.format(ws=ws).split())
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("geomax: error:"), err
    assert re.search(pattern, err), err
    assert FIX_WORDS.search(err), f"names no fix: {err}"
    assert snapshot(ws) == before


SCRIPT_CASES = [
    ("ExportTrainingDataForDeepLearning", "{ws}/nope.tif {ws}/labels.gpkg {ws}/o", r"nope\.tif"),
    ("ExportTrainingDataForDeepLearning", "{ws}/scene.tif {ws}/labels.gpkg {ws}/notes --overwrite",
     r"not a folder geomax wrote"),
    ("TrainDeepLearningModel", "{ws}/chips {ws}/chips --overwrite", r"is the training data"),
    ("TrainDeepLearningModel", "{ws}/chips {ws}/m --learning_rate 0", r"Learning Rate.*> 0"),
    ("PanopticSegmentationUsingDeepLearning", "{ws}/scene.tif {ws}/model {ws}/p.tif --tile_size big", r"Tile Size"),
    ("PanopticSegmentationUsingDeepLearning", "{ws}/scene.tif {ws}/model {ws}/scene.tif --overwrite",
     r"is the input raster"),
    ("ComputePanopticAccuracy", "{ws}/pred.tif {ws}/labels.gpkg --out_json {ws}/pred.tif --overwrite",
     r"is the prediction"),
]


@pytest.mark.parametrize("case", SCRIPT_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SCRIPT_CASES)])
def test_tool_script_bad_input(snapshot, ws, capsys, case):
    tool, argv, pattern = case
    before = snapshot(ws)
    rc = script_main(tool, argv.format(ws=ws).split())
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"{tool}: error:"), err
    assert re.search(pattern, err) and FIX_WORDS.search(err), err
    assert snapshot(ws) == before


def _api_cases(ws, data, model):
    """(id, callable, error class, regex) of the Python API."""
    return [
        ("learner-no-data", lambda: MaXDeepLab(None), ArgumentError, r"needs training data"),
        ("learner-backbone", lambda: MaXDeepLab(data, backbone="nope"), ArgumentError, r"nope"),
        ("learner-unknown-option", lambda: MaXDeepLab(data, backbone="max_deeplab_tiny", num_slot=8), ArgumentError,
         r"num_slot.*did you mean"),
        ("fit-lr-0", lambda: model.fit(1, lr=0), ArgumentError, r"lr must be > 0"),
        ("fit-epochs-float", lambda: model.fit(2.5), ArgumentError, r"epochs must be a whole number"),
        ("fit-epochs-and-minutes", lambda: model.fit(1, minutes=1), ArgumentError, r"not both"),
        ("fit-unknown", lambda: model.fit(1, learning_rate=1e-3), ArgumentError, r"learning_rate"),
        ("from-model-typo", lambda: MaXDeepLab.from_model(ws / "model", class_treshold=0.5), ArgumentError,
         r"class_treshold.*did you mean"),
        ("from-model-network", lambda: MaXDeepLab.from_model(ws / "model", num_slots=10), ArgumentError,
         r"num_slots"),
        ("from-model-missing", lambda: MaXDeepLab.from_model(ws / "nope"), ModelError, r"nope.*does not exist"),
        ("save-user-folder", lambda: model.save(ws / "notes", overwrite=True), OutputExistsError,
         r"not a folder geomax wrote"),
        ("save-dot", lambda: model.save("."), ArgumentError, r"give the model a name"),
        ("save-over-export", lambda: model.save(ws / "chips", overwrite=True), OutputExistsError,
         r"geomax export folder"),
        ("predict-array-bands", lambda: model.predict(np.zeros((2, 32, 32), np.uint8)), GeomaxError, r"band"),
        ("predict-missing-file", lambda: model.predict(ws / "nope.tif"), GeomaxError, r"nope\.tif"),
        ("predict-raster-tile-0", lambda: model.predict_raster(ws / "scene.tif", ws / "p.tif", tile_size=0),
         ArgumentError, r"tile_size"),
        ("predict-raster-out-is-in", lambda: model.predict_raster(ws / "scene.tif", ws / "scene.tif", overwrite=True),
         ArgumentError, r"is the input raster"),
        ("prepare-missing", lambda: prepare_data(ws / "nope"), DataError, r"nope"),
        ("prepare-file", lambda: prepare_data(ws / "file.txt"), DataError, r"file\.txt"),
        ("export-tile-0", lambda: export_training_data(ws / "scene.tif", ws / "labels.gpkg", ws / "o", tile_size=0),
         ArgumentError, r"tile_size"),
        ("export-out-user", lambda: export_training_data(ws / "scene.tif", ws / "labels.gpkg", ws / "notes",
                                                         class_field="class_name", overwrite=True),
         OutputExistsError, r"not a folder geomax wrote"),
        ("predict-raster-bands", lambda: model.predict_raster(ws / "scene.tif", ws / "p.tif", bands=[1, 2]),
         InputMismatchError, r"bands"),
    ]


API_IDS = [c[0] for c in _api_cases(None, None, None)]


@pytest.fixture(scope="module")
def fresh_model(synthetic_data):
    return MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")


@pytest.mark.parametrize("case_id", API_IDS)
def test_api_bad_input(snapshot, ws, synthetic_data, fresh_model, case_id):
    case = dict((c[0], c[1:]) for c in _api_cases(ws, synthetic_data, fresh_model))[case_id]
    call, error, pattern = case
    before = snapshot(ws)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert re.search(pattern, message), message
    assert FIX_WORDS.search(message), f"names no fix: {message}"
    assert snapshot(ws) == before


def test_the_suite_is_wide():
    assert len(CLI_CASES) + len(SCRIPT_CASES) + len(API_IDS) >= 60
