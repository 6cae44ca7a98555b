# -*- coding: utf-8 -*-
"""geomax Python toolbox for ArcGIS Pro: panoptic segmentation with MaX-DeepLab.

Tools: Export Training Data For Deep Learning (Panoptic), Train Deep Learning Model
(MaXDeepLab), Panoptic Segmentation Using Deep Learning, Compute Panoptic Accuracy.

geomax runs in a Python environment of its own, never inside ArcGIS Pro's: Pro's
``arcgis.learn`` needs fastai 1 and geomax needs fastai 2, so installing geomax into Pro's
environment would break ``arcgis.learn``. This file uses only the standard library and
``arcpy`` (imported inside the methods ArcGIS calls, so it also loads where ArcGIS is not
installed). It finds geomax's interpreter (``python.exe`` of that environment) from

1. the environment variable ``GEOMAX_PYTHON``, else
2. the first line that is not a comment (``#``) of ``geomax_python.txt`` beside this file
   (a relative path is taken from this folder; an environment folder is accepted too),

and talks to ``python -I -m geomax.workflows.bridge`` there: ``describe`` gives the tool
table (parameters, help, defaults, choices) as JSON, read once per ArcGIS Pro session (kept
in memory; refresh the toolbox to read it again), and ``run <Tool>`` runs a tool with the
parameter values as JSON on its stdin and answers with JSON lines (messages, warnings,
errors, progress), which are relayed to the geoprocessing messages and progressor as
they come. A cancelled tool stops the geomax process (geomax writes outputs under
temporary names, so nothing half-written is left under the output's name). Set-up steps:
the README's "ArcGIS Pro" section, or the message a tool shows when none is configured.
"""
import json
import os
import queue
import re
import subprocess
import tempfile
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))

#: Environment variable naming geomax's interpreter (checked first).
ENV_VARIABLE = "GEOMAX_PYTHON"
#: File beside this toolbox naming geomax's interpreter (checked when the variable is not set).
_CONFIG_FILE = os.path.join(_HERE, "geomax_python.txt")
#: Protocol of ``geomax.workflows.bridge`` this toolbox speaks.
PROTOCOL = 1
#: The tools (class names ArcGIS knows them by; their parameters come from geomax).
TOOL_NAMES = ("ExportTrainingDataForDeepLearning", "TrainDeepLearningModel",
              "PanopticSegmentationUsingDeepLearning", "ComputePanopticAccuracy")

_BRIDGE = ("-I", "-m", "geomax.workflows.bridge")  # -I: none of Pro's PYTHONPATH / PYTHONHOME, no user site
_DESCRIBE_TIMEOUT_S = 600  # the first import of torch after installing can be slow (antivirus scans)
_SETUP_PARAMETER = "geomax_setup"
_LAYER_TYPES = ("GPRasterLayer", "GPFeatureLayer", "GPLayer")
#: Variables of ArcGIS Pro's own environment that would mislead geomax's (GDAL / PROJ data of
#: Pro's versions, Pro's Python and conda environment).
_FOREIGN_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "GDAL_DATA",
                      "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
                      "CONDA_PROMPT_MODIFIER", "CONDA_SHLVL")

_DESCRIBED = {}  # interpreter -> the bridge's description (one per ArcGIS Pro session)


class SetupError(Exception):
    """geomax's interpreter is not configured, not found, or cannot run geomax."""


class ToolFailed(Exception):
    """The tool ran in geomax and failed (its messages are already in the geoprocessing messages)."""


def setup_steps():
    """How to give the toolbox a geomax environment (the text of the set-up messages)."""
    return ("geomax runs in a Python environment of its own, not in ArcGIS Pro's (Pro's arcgis.learn needs "
            "fastai 1, geomax needs fastai 2: do not pip install geomax into Pro's environment). Set it up once: "
            "(1) create an environment and install geomax into it, e.g. in a command prompt: "
            "'conda create -n geomax python=3.11', 'conda activate geomax', 'pip install geomax' "
            "(or 'python -m venv C:\\geomax-env' and 'C:\\geomax-env\\Scripts\\pip install geomax'); "
            "(2) find that environment's python.exe (in it: python -c \"import sys; print(sys.executable)\"); "
            "(3) point the toolbox at it: write that path on one line of the text file '{0}' (beside "
            "geomax.pyt), or set the environment variable {1} to it and restart ArcGIS Pro; "
            "(4) refresh the toolbox in the Catalog pane.").format(_CONFIG_FILE, ENV_VARIABLE)


# --------------------------------------------------------------------------- geomax's interpreter
def _configured():
    """(path text, where it was found) from the variable or the file; SetupError when neither names one."""
    text = os.environ.get(ENV_VARIABLE, "").strip().strip('"').strip()
    if text:
        return text, "the environment variable {0}".format(ENV_VARIABLE)
    if not os.path.isfile(_CONFIG_FILE):
        raise SetupError("No Python environment for geomax is configured: the environment variable {0} is not set "
                         "and '{1}' does not exist. {2}".format(ENV_VARIABLE, _CONFIG_FILE, setup_steps()))
    with open(_CONFIG_FILE, encoding="utf-8-sig") as f:
        for line in f:
            line = line.strip().strip('"').strip()
            if line and not line.startswith("#"):
                path = os.path.expandvars(os.path.expanduser(line))
                return os.path.join(os.path.dirname(_CONFIG_FILE), path), "'{0}'".format(_CONFIG_FILE)
    raise SetupError("'{0}' names no interpreter (every line is empty or a comment). {1}".format(
        _CONFIG_FILE, setup_steps()))


def find_interpreter():
    """Path of geomax's ``python`` (``GEOMAX_PYTHON``, else ``geomax_python.txt``); SetupError otherwise."""
    text, source = _configured()
    path = os.path.abspath(os.path.expandvars(os.path.expanduser(text)))
    if os.path.isdir(path):  # an environment's folder: its interpreter
        for name in ("python.exe", os.path.join("Scripts", "python.exe"), os.path.join("bin", "python"), "python"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
    if not os.path.isfile(path):
        raise SetupError("The Python interpreter for geomax named by {0}, '{1}', does not exist. Give the full path "
                         "of python.exe of the environment where geomax is installed. {2}".format(
                             source, path, setup_steps()))
    return path


def _child_env(python):
    """The environment of the geomax process: Pro's without its Python / GDAL settings, geomax's folders first."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _FOREIGN_VARIABLES}
    root = os.path.dirname(python)
    if os.path.basename(root).lower() in ("scripts", "bin"):
        root = os.path.dirname(root)
    folders = [root, os.path.join(root, "Library", "mingw-w64", "bin"), os.path.join(root, "Library", "usr", "bin"),
               os.path.join(root, "Library", "bin"), os.path.join(root, "Scripts"), os.path.join(root, "bin")]
    folders = [f for f in folders if os.path.isdir(f)]  # a conda environment's DLL folders, as activation adds
    env["PATH"] = os.pathsep.join(folders + [env.get("PATH", "")])
    return env


def _start_options():
    """No console window on Windows."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}


def _tail(text, lines=12):
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def describe(python=None):
    """The tool table from geomax's bridge (cached per interpreter for this session); SetupError when it fails."""
    python = python or find_interpreter()
    key = os.path.normcase(os.path.abspath(python))
    if key in _DESCRIBED:
        return _DESCRIBED[key]
    command = [python] + list(_BRIDGE) + ["describe"]
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, encoding="utf-8", errors="replace",
                              timeout=_DESCRIBE_TIMEOUT_S, env=_child_env(python), **_start_options())
    except OSError as exc:
        raise SetupError("Cannot start the Python interpreter for geomax '{0}' ({1}). {2}".format(
            python, exc, setup_steps()))
    except subprocess.TimeoutExpired:
        raise SetupError("'{0}' did not describe the geomax tools within {1} s. Run '\"{0}\" -m "
                         "geomax.workflows.bridge describe' in a command prompt to see why.".format(
                             python, _DESCRIBE_TIMEOUT_S))
    if proc.returncode != 0:
        raise SetupError("The Python interpreter '{0}' cannot run geomax (exit code {1}): {2}\nInstall geomax into "
                         "that environment ('\"{0}\" -m pip install geomax'), or point {3} / '{4}' at the "
                         "environment where it is installed.".format(python, proc.returncode, _tail(proc.stderr),
                                                                     ENV_VARIABLE, _CONFIG_FILE))
    description = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                description = json.loads(line)
            except ValueError:
                pass
    if not isinstance(description, dict) or not isinstance(description.get("tools"), list):
        raise SetupError("'{0}' gave no tool description (stdout: {1!r}).".format(python, _tail(proc.stdout, 3)))
    if description.get("protocol") != PROTOCOL:
        raise SetupError("geomax {0} in '{1}' speaks bridge protocol {2}, this geomax.pyt speaks {3}: use the "
                         "geomax.pyt of that geomax version.".format(description.get("geomax"), python,
                                                                    description.get("protocol"), PROTOCOL))
    _DESCRIBED[key] = description
    return description


def tool_description(name, python=None):
    """The description of tool ``name`` from geomax; SetupError when geomax cannot give it."""
    description = describe(python)
    for tool in description["tools"]:
        if tool.get("name") == name:
            return tool
    raise SetupError("geomax {0} has no tool '{1}'. Update geomax in its environment ('\"{2}\" -m pip install "
                     "--upgrade geomax') or use the geomax.pyt of that version.".format(
                         description.get("geomax"), name, python or find_interpreter()))


# --------------------------------------------------------------------------- parameters
def _make_parameter(arcpy, spec):
    """An ``arcpy.Parameter`` from a parameter's description."""
    param = arcpy.Parameter(
        name=spec["name"],
        displayName=spec["label"],
        datatype=spec["datatype"],
        parameterType="Required" if spec["required"] else "Optional",
        direction=spec["direction"],
        multiValue=spec["multivalue"],
    )
    if spec.get("default") is not None:
        param.value = spec["default"]
    if spec.get("choices"):
        param.filter.type = "ValueList"
        param.filter.list = list(spec["choices"])
    elif spec.get("percent"):
        param.filter.type = "Range"
        param.filter.list = [0, 100]
    if spec.get("depends_on"):
        param.parameterDependencies = [spec["depends_on"]]
    param.description = spec.get("help", "")
    return param


def _setup_parameter(arcpy, message):
    """The one parameter of a tool whose geomax cannot be reached: it carries the set-up message."""
    param = arcpy.Parameter(name=_SETUP_PARAMETER, displayName="geomax is not set up (see the message)",
                            datatype="GPString", parameterType="Optional", direction="Input")
    param.value = message
    param.description = message
    return param


def _data_source(arcpy, param, text):
    """The data source of a map layer (geomax reads files, not layers); the text when it is not a layer."""
    try:
        return arcpy.Describe(param.value).catalogPath or text
    except Exception:  # not a layer arcpy can describe: geomax says what is wrong with the text
        return text


def values_for_geomax(arcpy, specs, parameters):
    """Parameter name -> value for the bridge, as the user gave it in ArcGIS.

    Numbers go as numbers (no locale decimal commas), a percent parameter's number with ``%``
    (geomax reads ``10%`` as 0.1), a map layer as its data source, the rest as ``valueAsText``.
    """
    by_name = {spec["name"]: spec for spec in specs}
    values = {}
    for param in parameters:
        spec = by_name.get(param.name)
        if spec is None:
            continue
        value, text = param.value, param.valueAsText
        if text is None or text.strip() in ("", "#"):
            values[param.name] = None
        elif spec.get("multivalue"):
            values[param.name] = text
        elif spec["kind"] in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[param.name] = "{0!r}%".format(value) if spec.get("percent") else value
        elif spec.get("percent"):
            values[param.name] = text if text.strip().endswith("%") else text.strip() + "%"
        elif set(_datatypes(spec)) & set(_LAYER_TYPES) and not os.path.exists(text):
            values[param.name] = _data_source(arcpy, param, text)
        else:
            values[param.name] = text
    return values


def _datatypes(spec):
    datatype = spec["datatype"]
    return [datatype] if isinstance(datatype, str) else list(datatype)


# --------------------------------------------------------------------------- running a tool
class _Relay(object):
    """Relays the bridge's JSON lines to the geoprocessing messages and progressor."""

    def __init__(self, arcpy, messages):
        self.arcpy, self.messages = arcpy, messages
        self.errors = []
        self._bar = None

    def line(self, text):
        text = text.rstrip("\r\n")
        if not text.strip():
            return
        try:
            item = json.loads(text)
        except ValueError:
            item = None
        if not isinstance(item, dict) or "type" not in item:
            self.messages.addMessage(text)  # not a bridge line (a library printed it): shown as it is
            return
        kind, message = item["type"], str(item.get("message", ""))
        if kind == "progress":
            self.progress(str(item.get("label") or "items"), int(item.get("done", 0)), int(item.get("total", 0)))
        elif kind == "warning":
            self.messages.addWarningMessage(message)
        elif kind == "error":
            if item.get("traceback"):
                self.messages.addMessage(str(item["traceback"]))
            self.messages.addErrorMessage(message)
            self.errors.append(message)
        else:
            self.messages.addMessage(message)

    def progress(self, label, done, total):
        if self._bar != (label, total):
            self.arcpy.SetProgressor("step", label, 0, max(total, 1), 1)
            self._bar = (label, total)
        self.arcpy.SetProgressorPosition(min(done, total))
        self.arcpy.SetProgressorLabel("{0} {1}/{2}".format(label, done, total))

    def close(self):
        if self._bar is not None:
            self.arcpy.ResetProgressor()
            self._bar = None


def _read_lines(stream, lines):
    try:
        for line in iter(stream.readline, ""):
            lines.put(line)
    finally:
        lines.put(None)


def _cancelled(arcpy):
    env = getattr(arcpy, "env", None)
    try:
        return bool(getattr(env, "isCancelled", False))
    except Exception:  # an arcpy without the property: never cancelled
        return False


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_in_geomax(arcpy, name, values, messages, python=None):
    """Run tool ``name`` in geomax's environment, relaying its messages and progress as they come.

    Raises ToolFailed when the tool fails or is cancelled (the reason is already in
    ``messages``), SetupError when geomax's interpreter cannot be started.
    """
    python = python or find_interpreter()
    relay = _Relay(arcpy, messages)
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen([python] + list(_BRIDGE) + ["run", name], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, universal_newlines=True,
                                    encoding="utf-8", errors="replace", bufsize=1, env=_child_env(python),
                                    **_start_options())
        except OSError as exc:
            raise SetupError("Cannot start the Python interpreter for geomax '{0}' ({1}). {2}".format(
                python, exc, setup_steps()))
        cancelled = False
        try:
            try:
                proc.stdin.write(json.dumps(values))  # ASCII (ensure_ascii): no code page matters
                proc.stdin.close()
            except OSError:  # the process ended before reading: its stderr says why
                pass
            lines = queue.Queue()
            reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines))
            reader.daemon = True
            reader.start()
            while True:
                if _cancelled(arcpy):
                    cancelled = True
                    _stop(proc)
                    break
                try:
                    line = lines.get(timeout=0.25)
                except queue.Empty:
                    continue
                if line is None:
                    break
                relay.line(line)
            code = proc.wait()
            reader.join(5)
            if not reader.is_alive():
                proc.stdout.close()
        finally:
            relay.close()
            _stop(proc)
        if cancelled:
            message = "Cancelled: the geomax process was stopped."
            messages.addWarningMessage(message)
            raise ToolFailed(message)
        if code != 0:
            if not relay.errors:
                stderr.seek(0)
                tail = _tail(stderr.read().decode("utf-8", "replace"))
                message = "geomax stopped with exit code {0}{1}".format(code, ": " + tail if tail else ".")
                messages.addErrorMessage(message)
                relay.errors.append(message)
            raise ToolFailed(relay.errors[-1])


# --------------------------------------------------------------------------- the tools
def _words(name):
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)


def _make_tool(name):
    """A toolbox tool class (the shape ArcGIS expects) for the geomax tool ``name``."""

    class _Tool(object):
        def __init__(self):
            self.canRunInBackground = False
            try:
                spec = tool_description(name)
            except SetupError as exc:
                self.label, self.description = _words(name), str(exc)
            else:
                self.label, self.description = spec["label"], spec["description"]
                self.category = spec.get("category") or ""

        def getParameterInfo(self):
            import arcpy

            try:
                spec = tool_description(name)
            except SetupError as exc:
                return [_setup_parameter(arcpy, str(exc))]
            return [_make_parameter(arcpy, p) for p in spec["params"]]

        def isLicensed(self):
            return True

        def updateParameters(self, parameters):
            return

        def updateMessages(self, parameters):
            if parameters and parameters[0].name == _SETUP_PARAMETER:
                parameters[0].setErrorMessage(str(parameters[0].value))
            return

        def execute(self, parameters, messages):
            import arcpy

            try:
                spec = tool_description(name)
                if parameters and parameters[0].name == _SETUP_PARAMETER:  # opened before geomax was set up
                    raise SetupError("The tool was opened before geomax was set up: close and open it again.")
                run_in_geomax(arcpy, name, values_for_geomax(arcpy, spec["params"], parameters), messages)
            except SetupError as exc:
                messages.addErrorMessage(str(exc))
                raise arcpy.ExecuteError(str(exc))
            except ToolFailed as exc:
                raise arcpy.ExecuteError(str(exc))

    _Tool.__name__ = name
    _Tool.__qualname__ = name
    return _Tool


ExportTrainingDataForDeepLearning = _make_tool("ExportTrainingDataForDeepLearning")
TrainDeepLearningModel = _make_tool("TrainDeepLearningModel")
PanopticSegmentationUsingDeepLearning = _make_tool("PanopticSegmentationUsingDeepLearning")
ComputePanopticAccuracy = _make_tool("ComputePanopticAccuracy")


class Toolbox(object):
    def __init__(self):
        self.label = "geomax"
        self.alias = "geomax"
        self.tools = [ExportTrainingDataForDeepLearning, TrainDeepLearningModel,
                      PanopticSegmentationUsingDeepLearning, ComputePanopticAccuracy]
