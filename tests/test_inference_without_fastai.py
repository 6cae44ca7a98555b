"""Inference without fastai: a saved model predicts with torch, rasterio and geopandas alone.

A user's inference server, a Dask worker image or ArcGIS Pro's own torch may lack fastai (and its
fastcore / fastprogress). ``geomax.predict_raster`` on a model path and the predictor of
``geomax.workflows.load_predictor`` must then still work: the network, the post-processor and the
model loader import no fastai. One test runs them in a subprocess where those imports fail and
compares its outputs with the same runs in this process; one checks the import statements of every
module the inference entry points can reach.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

import geomax
from geomax.workflows.predict import load_predictor, predict_raster

sys.path.insert(0, str(Path(__file__).parent))
from test_import_graph import geomax_modules, import_graph  # noqa: E402  (the one import-graph reader)

ROOT = Path(geomax.__file__).parent
#: fastai and the packages that come with it; none may be needed to predict.
BLOCKED = ("fastai", "fastcore", "fastprogress")
#: Thresholds of 0 keep every slot and every pixel: the outputs cannot come out all void.
POSTPROCESS = dict(class_threshold=0.0, mask_threshold=0.0)
RASTER_OPTIONS = dict(tile_size=64, overlap=16, **POSTPROCESS)

#: Run in a fresh interpreter: fastai, fastcore and fastprogress fail to import (as where they are not
#: installed), every attempt is recorded, then a saved model predicts a raster and an array.
SCRIPT = '''
import importlib.abc
import sys

BLOCKED = ("fastai", "fastcore", "fastprogress")
attempts = []


class BlockFastai(importlib.abc.MetaPathFinder):
    """Every import of fastai, fastcore or fastprogress raises ImportError, and is recorded."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, BlockFastai())

import json

import numpy as np
import torch

try:
    import fastai  # noqa: F401
except ImportError:
    blocker_works = True
else:
    blocker_works = False
attempts.clear()

import geomax
from geomax.workflows import load_predictor

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
result = geomax.predict_raster(args["model"], args["raster"], args["out_raster"], args["out_features"],
                               progress=True, **args["raster_options"])
predictor = load_predictor(args["dlpk"])
panoptic = predictor.predict(np.load(args["array"]), **args["postprocess"])
np.save(args["class_map"], panoptic.class_map)
with open(args["report"], "w") as f:
    json.dump({"blocker_works": blocker_works, "attempts": attempts,
               "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
               "geomax_file": geomax.__file__, "cuda": torch.cuda.is_available(),
               "n_instances": result.n_instances, "n_features": result.n_features}, f)
'''


def _bands(path, *indexes):
    with rasterio.open(path) as src:
        return src.read(list(indexes))


def test_a_saved_model_predicts_without_fastai(trained_model_folder, synthetic_scene, tmp_path):
    # the same runs in this process (fastai importable), on the CPU as in the subprocess below
    predictor = load_predictor(trained_model_folder)
    predictor.network.cpu()
    expected = predict_raster(predictor, synthetic_scene.raster, tmp_path / "expected.tif",
                              tmp_path / "expected.gpkg", progress=False, **RASTER_OPTIONS)
    with rasterio.open(synthetic_scene.raster) as src:
        array = src.read(window=Window(40, 40, 90, 70))  # inside the no-data border; sides not multiples of 16
    np.save(tmp_path / "array.npy", array)
    expected_map = predictor.predict(array, **POSTPROCESS).class_map
    assert (expected_map > 0).any()

    args = {"model": str(trained_model_folder), "dlpk": str(Path(trained_model_folder) / "tiny_model.dlpk"),
            "raster": str(synthetic_scene.raster), "out_raster": str(tmp_path / "no_fastai.tif"),
            "out_features": str(tmp_path / "no_fastai.gpkg"), "array": str(tmp_path / "array.npy"),
            "class_map": str(tmp_path / "class_map.npy"), "report": str(tmp_path / "report.json"),
            "raster_options": RASTER_OPTIONS, "postprocess": POSTPROCESS, "threads": torch.get_num_threads()}
    script = tmp_path / "predict_without_fastai.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="",  # the CPU, as the in-process runs above
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT.parent), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"prediction without fastai failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["blocker_works"] and not report["cuda"]
    assert Path(report["geomax_file"]).resolve() == Path(geomax.__file__).resolve()
    # nothing on the path even tried fastai / fastcore; only the guarded progress bar may try fastprogress
    assert {name.split(".")[0] for name in report["attempts"]} <= {"fastprogress"}, report["attempts"]
    assert report["loaded"] == []  # no fastai, fastcore or fastprogress in sys.modules at the end

    assert (tmp_path / "no_fastai.tif").exists() and (tmp_path / "no_fastai.gpkg").exists()
    got, want = _bands(tmp_path / "no_fastai.tif", 1, 2), _bands(tmp_path / "expected.tif", 1, 2)
    assert (want[0] > 0).any()
    assert np.array_equal(got[0], want[0])  # class Values
    assert np.array_equal(got[1], want[1])  # instance ids
    assert (report["n_instances"], report["n_features"]) == (expected.n_instances, expected.n_features)
    assert np.array_equal(np.load(tmp_path / "class_map.npy"), expected_map)


# --------------------------------------------------------------------------- the import statements
#: Where inference starts: predict_raster / load_predictor on a path, and the loader the Dask workers call.
INFERENCE_ROOTS = ("geomax.workflows.predict", "geomax.models.loading", "geomax.models.predictor")


def inference_modules() -> set[str]:
    """Every geomax module the inference entry points can import (their packages' ``__init__`` too)."""
    graph = import_graph()
    seen: set[str] = set()
    todo = list(INFERENCE_ROOTS)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a module runs its packages
        todo.extend(graph[name])
    return seen


def fastai_imports(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """``(line, module, guarded)`` of each import of fastai / fastcore / fastprogress in a module.

    ``guarded``: inside a ``try`` whose handlers catch ``ImportError`` (or ``ModuleNotFoundError``).
    """
    found = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            caught = {n.id for h in node.handlers if h.type is not None for n in ast.walk(h.type)
                      if isinstance(n, ast.Name)}
            for child in node.body:
                visit(child, guarded or bool(caught & {"ImportError", "ModuleNotFoundError"}))
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            names = []
        found.extend((node.lineno, n, guarded) for n in names if n.split(".")[0] in BLOCKED)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def test_the_import_checker_sees_fastai_imports():
    source = ("import fastai.vision\n"
              "def f():\n    from fastcore.basics import store_attr\n"
              "def g():\n    try:\n        from fastprogress.fastprogress import progress_bar\n"
              "    except ImportError:\n        pass\n")
    assert fastai_imports(ast.parse(source)) == [(1, "fastai.vision", False), (3, "fastcore.basics", False),
                                                 (6, "fastprogress.fastprogress", True)]


def test_inference_modules_import_no_fastai():
    modules = inference_modules()
    # the network, the post-processor, the loader, the package reader and the tile loop are all reached
    assert {"geomax.models.maxdeeplab.network", "geomax.models.postprocess", "geomax.models.package",
            "geomax.models.state", "geomax.inference.tile_loop", "geomax.inference.predict_raster",
            "geomax.inference.worker", "geomax.data.image_io", "geomax"} <= modules
    assert "geomax.models.learner" not in modules and "geomax.data.prepare" not in modules
    mods = geomax_modules()
    offending = {}
    for name in sorted(modules):
        bad = [(line, module) for line, module, guarded in fastai_imports(ast.parse(mods[name].read_text()))
               if not (guarded and module.split(".")[0] == "fastprogress")]
        if bad:
            offending[name] = bad
    assert offending == {}, ("modules on the inference path import fastai (only a guarded fastprogress import "
                             f"is allowed): {offending}")
