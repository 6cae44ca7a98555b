"""Tests of the ``geomax`` command: every subcommand end to end on tiny data, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geomax.cli import build_parser, main
from geomax.data.synthetic import CLASS_FIELD

SUBCOMMANDS = ("export", "train", "predict", "evaluate", "info", "demo")


@pytest.fixture(scope="module")
def scene(synthetic_scene):
    """The shared synthetic scene (tests/conftest.py)."""
    return synthetic_scene


@pytest.fixture(scope="module")
def chips(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_chips") / "chips"
    rc = main(["export", str(scene.raster), str(scene.labels), str(out), "--classes", "synthetic",
               "--tile-size", "128", "--stride", "64"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def trained_model(chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_model") / "tiny_model"
    rc = main(["train", str(chips), "--out", str(out), "--backbone", "max_deeplab_tiny", "--epochs", "1",
               "--lr", "1e-3", "--batch-size", "4", "--val-split", "0.2"])
    assert rc == 0
    return out


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("geomax: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"geomax {command}" in out


def test_bad_arguments_give_one_line_and_exit_2(scene, tmp_path, capsys):
    assert "required" in _one_line_error(capsys, main(["train"]))
    assert "--tile-size" in _one_line_error(capsys, main(["export", "a", "b", "c", "--tile-size", "zero"]))
    assert "invalid choice" in _one_line_error(capsys, main(["frobnicate"]))
    err = _one_line_error(capsys, main(["export", str(tmp_path / "missing.tif"), str(scene.labels), str(tmp_path / "o")]))
    assert "missing.tif" in err
    err = _one_line_error(capsys, main(["export", str(scene.raster), str(scene.labels), str(tmp_path / "o"),
                                        "--class-field", "no_such_field", "--things", "building"]))
    assert "no_such_field" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("keep me")
    err = _one_line_error(capsys, main(["demo", "--out", str(tmp_path / "busy")]))
    assert "not a folder geomax wrote" in err and (tmp_path / "busy" / "file.txt").read_text() == "keep me"
    assert "--minutes" in _one_line_error(capsys, main(["demo", "--out", str(tmp_path / "d"), "--minutes", "-1"]))
    assert "does not exist" in _one_line_error(capsys, main(["info", str(tmp_path / "nothing")]))
    assert "does not exist" in _one_line_error(capsys, main(["predict", str(tmp_path / "nomodel"), str(scene.raster),
                                                             str(tmp_path / "p.tif")]))


def test_console_script_reports_user_error_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("geomax")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "geomax.cli"]
    proc = subprocess.run(cmd + ["evaluate", str(tmp_path / "nope.tif"), str(tmp_path / "nope.gpkg")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("geomax: error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_export_and_info_of_export(chips, capsys):
    lines = (chips / "map.txt").read_text().splitlines()
    assert len(lines) == len(list((chips / "images").glob("*.tif"))) > 0
    assert (chips / "labels2" / "building").is_dir()
    capsys.readouterr()
    assert main(["info", str(chips)]) == 0
    out = capsys.readouterr().out
    assert f"chips: {len(lines)}" in out and "building (thing)" in out and "road (stuff)" in out


def test_evaluate_perfect_raster_and_json(scene, tmp_path, capsys):
    import geopandas as gpd

    from geomax.data.rasterize import rasterize_labels
    from geomax.data.synthetic import SYNTHETIC_CLASSES

    gdf = gpd.read_file(scene.labels)
    cm, im = rasterize_labels(gdf, CLASS_FIELD, SYNTHETIC_CLASSES, scene.transform, (scene.size, scene.size))
    pred = tmp_path / "perfect.tif"
    with rasterio.open(pred, "w", driver="GTiff", width=scene.size, height=scene.size, count=3, dtype="int32",
                       crs=scene.crs, transform=scene.transform) as dst:
        dst.write(np.stack([cm, im, np.full_like(cm, 100)]).astype(np.int32))
    capsys.readouterr()
    rc = main(["evaluate", str(pred), str(scene.labels), "--classes", "synthetic", "--image", str(scene.raster),
               "--json", str(tmp_path / "pq.json"), "--quiet"])
    assert rc == 0
    assert "building" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "pq.json").read_text())
    assert metrics["all"]["pq"] == pytest.approx(1.0)
    # the JSON is not overwritten without --overwrite
    rc = main(["evaluate", str(pred), str(scene.labels), "--classes", "synthetic", "--json", str(tmp_path / "pq.json")])
    assert "exists. Choose another name, or pass --overwrite" in _one_line_error(capsys, rc)


def test_train_predict_evaluate_info_with_a_tiny_model(trained_model, scene, tmp_path, capsys):
    assert len(list(trained_model.glob("*.emd"))) == 1 and len(list(trained_model.glob("*.dlpk"))) == 1
    capsys.readouterr()
    assert main(["info", str(trained_model)]) == 0
    out = capsys.readouterr().out
    assert "max_deeplab_tiny" in out and "vehicle (thing)" in out
    out_tif, out_gpkg = tmp_path / "pred.tif", tmp_path / "pred.gpkg"
    rc = main(["predict", str(trained_model), str(scene.raster), str(out_tif), "--features", str(out_gpkg),
               "--tile-size", "128", "--overlap", "32", "--quiet"])
    assert rc == 0
    with rasterio.open(out_tif) as src, rasterio.open(scene.raster) as ref:
        assert src.count == 3 and src.crs == ref.crs and src.transform.almost_equals(ref.transform)
        classes = src.read(1)
    assert set(np.unique(classes)) <= {0, 1, 2, 3, 4, 5, 6, 7}
    assert out_gpkg.exists()
    # deeplab2's one instance per mask slot on request: never more objects than the default split
    out_keep = tmp_path / "pred_keep.tif"
    assert main(["predict", str(trained_model), str(scene.raster), str(out_keep), "--tile-size", "128",
                 "--overlap", "32", "--keep-disconnected", "--quiet"]) == 0
    with rasterio.open(out_keep) as a, rasterio.open(out_tif) as b:
        assert np.array_equal(a.read(1) > 0, b.read(1) > 0)  # the same pixels are labelled
    # predicting again onto existing outputs needs --overwrite
    capsys.readouterr()  # the message of this call only
    rc = main(["predict", str(trained_model), str(scene.raster), str(out_tif)])
    assert "exists. Choose another name, or pass --overwrite" in _one_line_error(capsys, rc)
    capsys.readouterr()
    assert main(["evaluate", str(out_tif), str(scene.labels), "--image", str(scene.raster), "--quiet",
                 "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m) >= {"all", "things", "stuff", "per_class"}
    assert m["all"]["pq"] is None or 0.0 <= m["all"]["pq"] <= 1.0
    assert main(["evaluate", str(scene.raster), str(scene.labels), "--model", str(trained_model),
                 "--tile-size", "128", "--quiet"]) == 0
    assert "PQ" in capsys.readouterr().out
    assert main(["info", str(out_tif)]) == 0
    assert "panoptic raster" in capsys.readouterr().out


def test_train_refuses_a_non_empty_model_folder_before_training(chips, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("x")
    rc = main(["train", str(chips), "--out", str(out), "--backbone", "max_deeplab_tiny", "--epochs", "1"])
    assert "not a folder geomax wrote" in _one_line_error(capsys, rc)
    rc = main(["train", str(chips), "--out", str(tmp_path / "m2"), "--epochs", "1", "--minutes", "1"])
    assert "either --epochs or --minutes" in _one_line_error(capsys, rc)
    rc = main(["train", str(chips), "--out", str(tmp_path / "m3"), "--backbone", "max_deeplab_huge"])
    assert "max_deeplab_huge" in _one_line_error(capsys, rc)


def test_parser_has_all_subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)


def test_warnings_are_one_line_messages_not_python_source_lines(capsys):
    import warnings

    from geomax.workflows.tools import one_line_warnings

    with one_line_warnings("geomax"):
        warnings.warn("The prediction of 'a.tif' is void\n   everywhere.", UserWarning)
    assert capsys.readouterr().err == "geomax: warning: The prediction of 'a.tif' is void everywhere.\n"
