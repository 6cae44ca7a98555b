"""Messages go through the ``geomax`` logger (geomax.log); the command decides what is shown (-q / -v)."""
import ast
import logging
from pathlib import Path

import pytest

import geomax
from geomax.cli import _UsageError, build_parser, main
from geomax.log import get_logger, set_verbosity, use_root_handlers

ROOT = Path(geomax.__file__).parent
#: where printing is the job: the command's own output and the toolbox scripts' front end
FRONT_ENDS = {"cli.py": None, "workflows/tools.py": {"one_line_warnings", "show", "script_main"},
              "train_ddp.py": {"main"}}


@pytest.fixture
def level():
    before = logging.getLogger("geomax").level
    yield
    set_verbosity(before)


def test_library_messages_reach_the_current_stdout_at_info(capsys, level):
    log = get_logger("geomax.models.callbacks")
    log.info("epoch 1: panoptic_quality 0.5")
    log.debug("a detail")
    assert capsys.readouterr().out == "epoch 1: panoptic_quality 0.5\n"
    set_verbosity(logging.WARNING)
    log.info("hidden")
    log.warning("shown")
    assert capsys.readouterr().out == "shown\n"
    set_verbosity(logging.DEBUG)
    log.debug("a detail")
    assert capsys.readouterr().out == "a detail\n"


def test_an_application_can_route_geomax_records_to_its_own_handlers(level):
    root = logging.getLogger("geomax")
    handlers, propagate = list(root.handlers), root.propagate
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    keep = Keep()
    app_root = logging.getLogger()
    app_level = app_root.level
    app_root.addHandler(keep)
    app_root.setLevel(logging.INFO)  # the application's configuration decides (the root's default is WARNING)
    try:
        use_root_handlers()
        get_logger("geomax.workflows").info("Model saved to m")
        assert records == ["Model saved to m"]
        assert not root.handlers or all(type(h).__name__ != "_CurrentStdout" for h in root.handlers)
    finally:
        app_root.removeHandler(keep)
        app_root.setLevel(app_level)
        import geomax.log as glog

        glog._own_handler = True
        root.handlers[:] = handlers
        root.propagate = propagate


def test_every_subcommand_takes_quiet_and_verbose():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, name
        # one of the two only; geomax's parsers (subcommands too) raise instead of exiting from argparse
        with pytest.raises(_UsageError, match="not allowed with"):
            parser.parse_args(["-q", "-v"])


def test_quiet_hides_the_messages_not_the_result(tmp_path, capsys, level):
    from geomax.data.synthetic import make_scene

    scene = make_scene(tmp_path / "s.tif", tmp_path / "s.gpkg", size=128, seed=2)
    assert main(["export", str(scene.raster), str(scene.labels), str(tmp_path / "a"), "--classes", "synthetic",
                 "--class-field", "class_name", "--tile-size", "64"]) == 0
    loud = capsys.readouterr().out
    assert "Exported" in loud
    assert main(["export", str(scene.raster), str(scene.labels), str(tmp_path / "b"), "--classes", "synthetic",
                 "--class-field", "class_name", "--tile-size", "64", "-q"]) == 0
    assert "Exported" not in capsys.readouterr().out
    assert main(["info", str(tmp_path / "b"), "-q"]) == 0
    assert capsys.readouterr().out.strip()  # info's description is the result: shown even when quiet
    assert logging.getLogger("geomax").level == logging.INFO  # the call left the level as it was


def _prints(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every ``print(...)`` call in a module."""
    found = []

    def walk(node, where):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                found.append((where, child.lineno))
            walk(child, name)

    walk(ast.parse(path.read_text()), "<module>")
    return found


def test_library_code_does_not_print():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in FRONT_ENDS and FRONT_ENDS[rel] is None:
            continue
        allowed = FRONT_ENDS.get(rel, set())
        offenders += [f"{rel}:{line} ({where})" for where, line in _prints(path) if where not in allowed]
    assert not offenders, offenders
