"""The toolbox's bridge (geomax.workflows.bridge): the tool table as JSON, tool runs as JSON lines."""
import json
import logging
import subprocess
import sys

from geomax import __version__
from geomax.workflows.bridge import PROTOCOL, _fastprogress_writer, _LineHandler, _ProgressLines
from geomax.workflows.tools import TOOLS


def _bridge(*args, stdin=""):
    return subprocess.run([sys.executable, "-I", "-m", "geomax.workflows.bridge", *args], input=stdin,
                          capture_output=True, text=True, timeout=600)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line is JSON (a failure here says which)


def test_describe_is_the_tool_table_as_json():
    from geomax.models.maxdeeplab import list_variants

    proc = _bridge("describe")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1  # stdout carries the JSON object only
    described = json.loads(proc.stdout)
    assert described["protocol"] == PROTOCOL and described["geomax"] == __version__
    assert [t["name"] for t in described["tools"]] == list(TOOLS)
    for tool_json in described["tools"]:
        tool = TOOLS[tool_json["name"]]
        assert (tool_json["label"], tool_json["description"], tool_json["category"], tool_json["progress"]) == \
            (tool.label, tool.description, tool.category, tool.progress)
        assert [p["name"] for p in tool_json["params"]] == [p.name for p in tool.params]
        for pj, p in zip(tool_json["params"], tool.params):
            assert pj["label"] == p.label and pj["help"] == p.help and pj["kind"] == p.kind
            assert pj["datatype"] == (list(p.datatype) if isinstance(p.datatype, tuple) else p.datatype)
            assert (pj["required"], pj["direction"], pj["multivalue"], pj["depends_on"], pj["percent"]) == \
                (p.required, p.direction, p.multivalue, p.depends_on, p.percent)
            assert pj["choices"] == (list(p.choices) or (list(p.choices_of()) if p.choices_of else []))
            assert pj["default"] == (100 * p.default if p.percent else json.loads(json.dumps(p.default)))
    train = {p["name"]: p for p in described["tools"][1]["params"]}
    assert train["backbone"]["choices"] == list(list_variants())  # choices_of evaluated
    assert train["val_split"]["default"] == 10  # a percent, as ArcGIS Pro shows it


def test_run_reports_a_geomax_error_as_an_error_line_and_exit_2(synthetic_scene, tmp_path):
    values = {"in_raster": str(tmp_path / "missing.tif"), "in_labels": str(synthetic_scene.labels),
              "out_folder": str(tmp_path / "chips")}
    proc = _bridge("run", "ExportTrainingDataForDeepLearning", stdin=json.dumps(values))
    assert proc.returncode == 2, proc.stderr
    lines = _lines(proc.stdout)
    assert lines[-1]["type"] == "error" and "missing.tif" in lines[-1]["message"]
    assert "traceback" not in lines[-1] and not (tmp_path / "chips").exists()
    # bad use of the bridge: an error line too
    proc = _bridge("run", "NoSuchTool", stdin="{}")
    assert proc.returncode == 2 and "NoSuchTool" in _lines(proc.stdout)[-1]["message"]
    proc = _bridge("run", "ExportTrainingDataForDeepLearning", stdin="not json")
    assert proc.returncode == 2 and "not JSON" in _lines(proc.stdout)[-1]["message"]


def test_log_records_become_message_and_warning_lines():
    lines = []
    logger = logging.getLogger("test_bridge_records")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _LineHandler(lambda kind, **fields: lines.append((kind, fields["message"])))
    logger.addHandler(handler)
    try:
        logger.info("epoch 1: valid_loss 0.5")
        logger.info("WARNING: validation PQ is 0")
        logger.warning("bands look swapped")
    finally:
        logger.removeHandler(handler)
    assert lines == [("message", "epoch 1: valid_loss 0.5"), ("warning", "validation PQ is 0"),
                     ("warning", "bands look swapped")]


def test_progress_lines_at_most_one_per_percent():
    lines = []
    sink = _ProgressLines(lambda kind, **fields: lines.append((fields["done"], fields["total"])))
    for done in range(0, 1001):
        sink("tiles", done, 1000)
    assert lines[0] == (0, 1000) and lines[-1] == (1000, 1000) and len(lines) == 101
    # fastai's epoch table rows become messages; a console bar redrawing itself does not
    messages = []
    write = _fastprogress_writer(lambda kind, **fields: messages.append((kind, fields["message"])))
    write("epoch     train_loss  valid_loss")
    write("\r |████----| 40.00% [2/5 00:01<00:02]", end="", flush=True)
    write("0         1.234       1.111   ")
    assert messages == [("message", "epoch     train_loss  valid_loss"), ("message", "0         1.234       1.111")]
