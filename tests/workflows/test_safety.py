"""Nothing a user has is lost: inputs are never outputs, overwrite replaces geomax's own outputs only,
publishing survives a crash at any step, and every training run has its own checkpoints."""
import json
import os
import shutil

import pytest
import torch

from geomax import MaXDeepLab
from geomax.cli import main
from geomax.errors import ArgumentError, ModelError, OutputExistsError
from geomax.publish import MARKER, output_kind
from geomax.workflows.predict import predict_raster
from geomax.workflows.train import checkpoint_folder_of


@pytest.fixture
def export_copy(synthetic_export, tmp_path):
    """A private copy of the shared export (tests may try to damage it)."""
    return shutil.copytree(synthetic_export.out_folder, tmp_path / "chips")


@pytest.fixture
def model_copy(trained_model_folder, tmp_path):
    return shutil.copytree(trained_model_folder, tmp_path / "model")


# ---- inputs are never outputs --------------------------------------------------------------------

@pytest.mark.parametrize("out", ["chips", "chips/models/m", "."])
def test_train_never_writes_over_or_into_its_export(snapshot, export_copy, tmp_path, capsys, out):
    before = snapshot(tmp_path)
    rc = main(["train", str(export_copy), "--out", str(tmp_path / out), "--overwrite", "--epochs", "1",
               "--backbone", "max_deeplab_tiny"])
    assert rc == 2 and "never writes over or into its own inputs" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_evaluate_json_may_not_be_the_raster_it_evaluates(snapshot, trained_model, synthetic_scene, tmp_path, capsys):
    pred = tmp_path / "pred.tif"
    predict_raster(trained_model, synthetic_scene.raster, pred, progress=False)
    before = snapshot(tmp_path)
    rc = main(["evaluate", str(pred), str(synthetic_scene.labels), "--json", str(pred), "--overwrite"])
    assert rc == 2 and "is the prediction" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_predict_output_may_not_be_the_input_or_inside_the_model(snapshot, model_copy, synthetic_scene, tmp_path):
    shutil.copy(synthetic_scene.raster, tmp_path / "scene.tif")
    before = snapshot(tmp_path)
    with pytest.raises(ArgumentError, match="is the input raster"):
        predict_raster(model_copy, tmp_path / "scene.tif", tmp_path / "scene.tif", overwrite=True)
    with pytest.raises(ArgumentError, match="is inside the model"):
        predict_raster(model_copy, tmp_path / "scene.tif", model_copy / "out.tif", progress=False)
    assert snapshot(tmp_path) == before


# ---- overwrite replaces geomax's own outputs only -------------------------------------------------

def test_save_does_not_overwrite_by_default_and_never_a_user_folder(trained_model, tmp_path):
    user = tmp_path / "my_project"
    user.mkdir()
    (user / "survey.gpkg").write_bytes(b"the user's work")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a folder geomax wrote"):
            trained_model.save(user, overwrite=overwrite, compute_metrics=False)
    assert (user / "survey.gpkg").read_bytes() == b"the user's work"
    first = trained_model.save(tmp_path / "m", compute_metrics=False)
    assert output_kind(first) == "model" and (first / MARKER).exists()
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        trained_model.save(tmp_path / "m", compute_metrics=False)
    trained_model.save(tmp_path / "m", overwrite=True, compute_metrics=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "my_project"]  # no scratch left
    with pytest.raises(ArgumentError, match="give the model a name"):
        trained_model.save(".", compute_metrics=False)


def test_export_overwrite_replaces_an_export_only_and_keeps_trained_models(snapshot, synthetic_scene, export_copy, tmp_path):
    from geomax.data.export import export_training_data
    from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES

    kwargs = dict(class_field=CLASS_FIELD, class_table=SYNTHETIC_CLASSES, tile_size=64, progress=False)
    assert output_kind(export_copy) == "export"  # an export of this geomax: its marker
    info = export_training_data(synthetic_scene.raster, synthetic_scene.labels, export_copy, overwrite=True,
                                stride=32, **kwargs)
    assert info.n_chips > 0 and output_kind(export_copy) == "export"
    (export_copy / "models" / "city").mkdir(parents=True)
    (export_copy / "models" / "city" / "city.pth").write_bytes(b"weights")
    before = snapshot(export_copy)
    with pytest.raises(OutputExistsError, match="holds trained models"):
        export_training_data(synthetic_scene.raster, synthetic_scene.labels, export_copy, overwrite=True, **kwargs)
    assert snapshot(export_copy) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    with pytest.raises(OutputExistsError, match="not a folder geomax wrote"):
        export_training_data(synthetic_scene.raster, synthetic_scene.labels, tmp_path / "notes", overwrite=True,
                             **kwargs)
    assert (tmp_path / "notes" / "a.txt").read_text() == "a"


# ---- crash-safe publishing -------------------------------------------------------------------------

class _Killed(BaseException):
    """Stands for the process dying (not an Exception: no handler of geomax's catches it)."""


def _die_at(monkeypatch, module, n):
    """Make the n-th os.replace (from 0) in geomax.publish die (as a kill would), the earlier ones work."""
    real, calls = os.replace, [0]

    def replace(a, b):
        if calls[0] == n:
            raise _Killed()
        calls[0] += 1
        real(a, b)

    monkeypatch.setattr(module.os, "replace", replace)
    return calls


@pytest.mark.parametrize("kill_at", range(3))
def test_a_save_killed_at_any_step_leaves_the_old_model_and_a_rerun_works(trained_model, tmp_path, monkeypatch,
                                                                         kill_at):
    import geomax.publish as publish

    folder = trained_model.save(tmp_path / "m", compute_metrics=False)
    (folder / "m.pth").write_bytes(b"the old weights")  # tell the old model from the new one
    _die_at(monkeypatch, publish, kill_at)
    try:
        trained_model.save(tmp_path / "m", overwrite=True, compute_metrics=False)
        completed = True  # fewer steps than the kill point
    except _Killed:
        completed = False
    monkeypatch.undo()
    assert completed == (kill_at >= 2)  # a folder is published in two renames
    if completed:
        return
    publish.recover(tmp_path / "m")  # what the next geomax run on this output does first
    assert (tmp_path / "m" / "m.pth").read_bytes() == b"the old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    trained_model.save(tmp_path / "m", overwrite=True, compute_metrics=False)
    assert torch.load(tmp_path / "m" / "m.pth", weights_only=True).keys() == trained_model.learn.model.state_dict().keys()


@pytest.mark.parametrize("kill_at", range(4))
def test_a_prediction_killed_while_publishing_blocks_no_rerun(trained_model, synthetic_scene, tmp_path, monkeypatch,
                                                             kill_at):
    import geomax.publish as publish

    out_r, out_f = tmp_path / "pred.tif", tmp_path / "pred.gpkg"
    _die_at(monkeypatch, publish, kill_at)
    with pytest.raises(_Killed):
        predict_raster(trained_model, synthetic_scene.raster, out_r, out_f, progress=False)
    monkeypatch.undo()
    # the same command again, without overwrite: it cleans up after the killed run and succeeds
    result = predict_raster(trained_model, synthetic_scene.raster, out_r, out_f, progress=False)
    assert result.out_raster.exists() and out_f.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.gpkg", "pred.tif", "pred.tif.aux.xml"]


# ---- checkpoints: one place per run, checked before loading, geomax train --resume -----------------

def test_models_of_other_settings_on_one_export_do_not_share_checkpoints(synthetic_data):
    a = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    b = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny", num_slots=48)
    assert a.checkpoint_folder != b.checkpoint_folder
    assert a.checkpoint_folder == MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny").checkpoint_folder


def test_resume_refuses_a_checkpoint_of_another_model(synthetic_data, tmp_path):
    a = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny")
    a.checkpoint_dir = tmp_path / "ckpt"
    a.fit(1, lr=1e-3, checkpoint=True)
    meta = json.loads((tmp_path / "ckpt" / "geomax_last.json").read_text())
    assert meta["epochs_done"] == 1 and meta["fingerprint"] == a.state.fingerprint
    b = MaXDeepLab(synthetic_data, backbone="max_deeplab_tiny", num_slots=48)
    b.checkpoint_dir = tmp_path / "ckpt"
    with pytest.raises(ModelError, match="belongs to another model"):
        b.fit(2, lr=1e-3, resume=True)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("geomax_last*.pth")) == ["geomax_last-epoch1.pth"]
    (tmp_path / "ckpt" / "geomax_last-epoch1.pth").write_bytes(b"cut short")  # as a disk failure would leave it
    with pytest.raises(ModelError, match="cannot be loaded.*delete"):
        a.fit(2, lr=1e-3, resume=True)


def _train_killed_after_first_checkpoint(monkeypatch, args):
    """Run ``geomax ARGS`` dying (as a kill would) right after the first epoch's checkpoint is written."""
    from geomax.models.callbacks import LastEpochCheckpoint

    real = LastEpochCheckpoint.after_epoch

    def dies_after_the_checkpoint(self):
        real(self)
        raise _Killed()

    monkeypatch.setattr(LastEpochCheckpoint, "after_epoch", dies_after_the_checkpoint)
    with pytest.raises(_Killed):
        main(args)
    monkeypatch.undo()


def test_geomax_train_resume_continues_an_interrupted_run(export_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model"
    args = ["train", str(export_copy), "--out", str(out), "--backbone", "max_deeplab_tiny", "--epochs", "2",
            "--batch-size", "4", "--val-split", "0.25"]
    assert main(args + ["--resume"]) == 2 and "no interrupted training" in capsys.readouterr().err
    _train_killed_after_first_checkpoint(monkeypatch, args)
    assert not out.exists() and json.loads((checkpoint_folder_of(out) / "geomax_last.json").read_text())[
        "epochs_done"] == 1
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert output_kind(out) == "model" and not checkpoint_folder_of(out).exists()
    emd = json.loads((out / "model.emd").read_text())
    assert len(emd["TrainingHistory"]) == 2  # the epoch before the kill and the one after


def test_geomax_train_resume_after_a_kill_past_the_last_epoch_saves_the_model(export_copy, tmp_path, capsys,
                                                                               monkeypatch):
    out = tmp_path / "model"
    args = ["train", str(export_copy), "--out", str(out), "--backbone", "max_deeplab_tiny", "--epochs", "1",
            "--batch-size", "4", "--val-split", "0.25"]
    _train_killed_after_first_checkpoint(monkeypatch, args)  # one epoch: the kill comes after the last one
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert output_kind(out) == "model" and not checkpoint_folder_of(out).exists()


# ---- the disk: full, or a folder that may not be written -----------------------------------------

def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_keeps_the_earlier_model(trained_model, tmp_path, monkeypatch, snapshot):
    from geomax.errors import OutputError
    from geomax.models import package

    trained_model.save(tmp_path / "m", compute_metrics=False)
    before = snapshot(tmp_path)
    monkeypatch.setattr(package.zipfile, "ZipFile", _no_space)
    with pytest.raises(OutputError, match="No space left on device.*Free some space"):
        trained_model.save(tmp_path / "m", overwrite=True, compute_metrics=False)
    assert snapshot(tmp_path) == before


def test_a_full_disk_while_exporting_leaves_nothing(synthetic_scene, tmp_path, monkeypatch):
    from geomax.data import export as export_module
    from geomax.data.synthetic import CLASS_FIELD, SYNTHETIC_CLASSES
    from geomax.errors import OutputError

    monkeypatch.setattr(export_module, "write_map", _no_space)
    with pytest.raises(OutputError, match="No space left on device.*Free some space"):
        export_module.export_training_data(synthetic_scene.raster, synthetic_scene.labels, tmp_path / "chips",
                                           class_field=CLASS_FIELD, class_table=SYNTHETIC_CLASSES, tile_size=64,
                                           progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_may_not_be_written_is_a_clear_error(trained_model, tmp_path, monkeypatch):
    import geomax.publish as publish
    from geomax.errors import OutputError

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(publish.tempfile, "mkdtemp", refused)  # as in a read-only folder (tests may run as root)
    with pytest.raises(OutputError, match="Permission denied.*writable"):
        trained_model.save(tmp_path / "m", compute_metrics=False)
    assert list(tmp_path.iterdir()) == []
