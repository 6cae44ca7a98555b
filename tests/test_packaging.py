"""Packaging: every third-party package geomax imports is declared, the licence file matches the
declared licence, the type marker ships, pyproject.toml holds the build system and tool settings."""
import ast
import re
import sys
from pathlib import Path

import pytest

import geomax

ROOT = Path(geomax.__file__).parent
REPO = ROOT.parent
#: import name -> distribution name where they differ (distributed: the dask[distributed] extra)
DISTRIBUTION = {"distributed": "dask", "osgeo": "gdal", "PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
#: optional extras, imported only inside functions behind a clear error or a fallback
OPTIONAL = {"dask", "distributed", "accelerate", "osgeo"}


def _setup_requirements() -> tuple[set[str], set[str]]:
    """(install_requires, every extra) of setup.py, as lower-case distribution names."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}

    def names(node) -> set[str]:
        return {re.split(r"[<>=\[ ;]", ast.literal_eval(e))[0].lower() for e in node.elts}

    extras = set()
    for value in kw["extras_require"].values:
        extras |= names(value)
    return names(kw["install_requires"]), extras


def _imported_top_level() -> set[str]:
    found = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("geomax", "__future__")}


def test_every_imported_package_is_declared():
    required, extras = _setup_requirements()
    missing = []
    for module in sorted(_imported_top_level()):
        dist = DISTRIBUTION.get(module, module).lower()
        if dist in required or (module in OPTIONAL and (dist in extras or module == "osgeo")):
            continue
        missing.append(module)
    assert not missing, f"imported but not declared in setup.py: {missing}"
    assert {"fastprogress", "affine"} <= required


def test_licence_type_marker_and_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license="Apache-2.0"' in (REPO / "setup.py").read_text()
    assert (ROOT / "py.typed").exists()
    assert '"py.typed"' in (REPO / "setup.py").read_text()  # shipped as package data
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert {"pytest", "ruff", "mypy"} <= set(project["tool"])
    assert "not slow" in project["tool"]["pytest"]["ini_options"]["addopts"]
    assert "project" not in project  # the metadata stays in setup.py, one place
