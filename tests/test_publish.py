"""Tests of geomax.publish: inputs never outputs, overwrite only of geomax's own outputs, crash-safe publishing."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from geomax.errors import ArgumentError, OutputExistsError
from geomax.publish import (
    MARKER,
    check_outputs_apart,
    check_replaceable,
    output_kind,
    publish_files,
    publish_folder,
    recover,
    scratch_folder,
    write_marker,
)


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out, how", [("data", "is"), (".", "contains"), ("data/models/m", "is inside")])
def test_an_output_may_not_be_contain_or_sit_inside_an_input(tmp_path, out, how):
    (tmp_path / "data").mkdir()
    with pytest.raises(ArgumentError, match=f"{how} the training data"):
        check_outputs_apart({"training data": tmp_path / "data"}, {"--out": tmp_path / out})
    check_outputs_apart({"training data": tmp_path / "data"}, {"--out": tmp_path / "model", "other": None})


def test_a_symlink_to_an_input_is_the_input(tmp_path):
    (tmp_path / "scene.tif").write_bytes(b"x")
    os.symlink(tmp_path / "scene.tif", tmp_path / "link.tif")
    with pytest.raises(ArgumentError, match="is the input raster"):
        check_outputs_apart({"input raster": tmp_path / "scene.tif"}, {"output raster": tmp_path / "link.tif"})


def test_overwrite_replaces_only_a_geomax_folder_of_the_kind(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="not a folder geomax wrote .*notes.txt"):
            check_replaceable(user, overwrite, "model", "model folder")
    export = tmp_path / "chips"
    export.mkdir()
    write_marker(export, "export")
    with pytest.raises(OutputExistsError, match="is a geomax export folder"):
        check_replaceable(export, True, "model", "model folder")
    model = tmp_path / "model"
    model.mkdir()
    write_marker(model, "model")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_replaceable(model, False, "model")
    assert check_replaceable(model, True, "model") == model and output_kind(model) == "model"
    (tmp_path / "empty").mkdir()
    assert check_replaceable(tmp_path / "empty", False, "model") == tmp_path / "empty"
    assert (user / "notes.txt").read_text() == "keep me"


def test_files_and_folders_are_not_confused(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ArgumentError, match="is a file; give a folder"):
        check_replaceable(tmp_path / "f.txt", True, "model")
    with pytest.raises(ArgumentError, match="is a folder; give a file name"):
        check_replaceable(tmp_path, True)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_replaceable(tmp_path / "f.txt", False)


def test_scratch_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        tmp = scratch_folder(tmp_path / "out")
    finally:
        os.umask(old)
    assert tmp.stat().st_mode & 0o777 == 0o755 and tmp.name.startswith(".out.geomax-new-")


def test_publish_folder_replaces_the_old_one_and_leaves_no_trace(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    write_marker(final, "model")
    (final / "old.pth").write_text("old")
    tmp = scratch_folder(final)
    (tmp / "new.pth").write_text("new")
    publish_folder(tmp, final, "model")
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "new.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_puts_back_an_old_folder_left_aside(tmp_path):
    final = tmp_path / "model"
    aside = tmp_path / ".model.geomax-old-0123abcd"  # killed between the two renames
    aside.mkdir()
    (aside / "m.pth").write_text("old")
    tmp = scratch_folder(final)
    (tmp / ".geomax-owner.json").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename}))
    recover(final)
    assert (final / "m.pth").read_text() == "old" and not aside.exists() and not tmp.exists()


def test_recover_keeps_the_scratch_of_a_live_run_and_other_outputs(tmp_path):
    live = scratch_folder(tmp_path / "model")  # owned by this (running) process
    other = tmp_path / ".model2.geomax-old-0123abcd"
    other.mkdir()
    recover(tmp_path / "model")
    assert live.exists() and other.exists() and not (tmp_path / "model").exists()


def _publish_set(tmp_path, text):
    tmp = scratch_folder(tmp_path / "scene_panoptic.tif")
    moves = []
    for name in ("scene_panoptic.tif", "scene.gpkg"):
        (tmp / name).write_text(f"{text} {name}")
        moves.append((tmp / name, tmp_path / name))
    publish_files(moves)
    shutil.rmtree(tmp)


def test_publish_files_replaces_the_set(tmp_path):
    _publish_set(tmp_path, "old")
    _publish_set(tmp_path, "new")
    assert (tmp_path / "scene.gpkg").read_text() == "new scene.gpkg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.gpkg", "scene_panoptic.tif"]


_KILL = """
import os, sys
from pathlib import Path
import geomax.publish as pub
real, calls, limit = os.replace, [0], int(sys.argv[2])
def dying_replace(a, b):
    if calls[0] == limit:
        os._exit(9)
    calls[0] += 1
    real(a, b)
os.replace = dying_replace
root = Path(sys.argv[1])
tmp = pub.scratch_folder(root / "scene_panoptic.tif")
moves = []
for name in ("scene_panoptic.tif", "scene.gpkg"):
    (tmp / name).write_text("new " + name)
    moves.append((tmp / name, root / name))
pub.publish_files(moves)
"""


@pytest.mark.parametrize("kill_at", range(6))
def test_a_kill_at_any_move_of_a_file_set_is_rolled_back_by_the_next_run(tmp_path, kill_at):
    _publish_set(tmp_path, "old")
    before = _snapshot(tmp_path)
    run = subprocess.run([sys.executable, "-c", _KILL, str(tmp_path), str(kill_at)], capture_output=True)
    if run.returncode == 0:  # the kill point lies beyond the publish: it completed
        assert (tmp_path / "scene.gpkg").read_text() == "new scene.gpkg"
        return
    assert run.returncode == 9, run.stderr.decode()
    recover(tmp_path / "scene_panoptic.tif")
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.gpkg", "scene_panoptic.tif"]
