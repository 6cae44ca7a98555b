"""The ArcGIS toolbox's way into geomax: the tool table and tool runs over JSON lines.

ArcGIS Pro's Python ships fastai 1 (``arcgis.learn`` imports ``fastai.basic_train``) and geomax
needs fastai 2, so geomax lives in a Python environment of its own and ``toolboxes/geomax.pyt``
(standard library + ``arcpy`` only) runs this module there::

    <geomax python> -I -m geomax.workflows.bridge describe
    <geomax python> -I -m geomax.workflows.bridge run <ToolName>   < values.json

``describe`` writes one JSON object: ``{"protocol", "geomax", "python", "tools": [...]}``, each tool
``{"name", "label", "description", "category", "progress", "params": [...]}`` and each parameter
``{"name", "label", "datatype", "kind", "required", "direction", "multivalue", "default",
"choices", "depends_on", "help", "percent"}`` (:func:`describe`): the table of
:mod:`geomax.workflows.tools` with ``choices_of`` evaluated and the default of a
:attr:`~geomax.workflows.tools.Param.percent` parameter given as a percent (10 for 0.1), as the
toolbox shows it.

``run`` reads ``{parameter name: text or number}`` (JSON) from stdin, runs
:func:`geomax.workflows.tools.run_tool` with progress on and writes one JSON object per line:

* ``{"type": "message", "message": ...}``: the ``geomax`` logger's records (the tool's log, the
  training's epoch lines) and the rows of fastai's epoch table;
* ``{"type": "warning", "message": ...}``: ``warnings.warn``, logger warnings and ``WARNING:`` lines;
* ``{"type": "progress", "label": "tiles", "done": n, "total": m}``: every
  :class:`geomax.inference.progress.Progress` (at most one line per percent);
* ``{"type": "error", "message": ...}``: the run failed; exit code 2 for a
  :class:`~geomax.errors.GeomaxError` (bad input, said in the message), 1 for anything else (the
  line then also has ``"traceback"``).

Exit code 0: the tool ran. Only JSON lines go to stdout: for the run, file descriptor 1 and
``sys.stdout`` point at stderr (anything a library prints lands there) and the lines are written
to a private copy of the original stdout. JSON is ASCII (``ensure_ascii``), so no code page
matters on Windows.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import IO, Any, Callable, Iterator, Sequence

__all__ = ["PROTOCOL", "describe", "describe_param", "run", "main"]

#: Version of the protocol above; the toolbox refuses a bridge of another protocol.
PROTOCOL = 1

#: Exit codes of ``run``: done, an unexpected failure, a GeomaxError or bad use of the bridge.
EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR = 0, 1, 2

Emit = Callable[..., None]


# --------------------------------------------------------------------------- describe
def describe_param(param) -> dict:
    """The JSON description of one :class:`~geomax.workflows.tools.Param` (``choices_of`` evaluated)."""
    choices = list(param.choices or (param.choices_of() if param.choices_of else ()))
    default = param.default
    if param.percent and isinstance(default, (int, float)):
        default = round(100 * default, 10)  # shown in ArcGIS as a percent
    return {"name": param.name, "label": param.label,
            "datatype": list(param.datatype) if isinstance(param.datatype, tuple) else param.datatype,
            "kind": param.kind, "required": param.required, "direction": param.direction,
            "multivalue": param.multivalue, "default": list(default) if isinstance(default, tuple) else default,
            "choices": choices, "depends_on": param.depends_on, "help": param.help, "percent": param.percent}


def describe() -> dict:
    """The tool table as the toolbox reads it (see the module's description)."""
    from .._version import __version__
    from .tools import TOOLS

    tools = [{"name": t.name, "label": t.label, "description": t.description, "category": t.category,
              "progress": t.progress, "params": [describe_param(p) for p in t.params]} for t in TOOLS.values()]
    return {"protocol": PROTOCOL, "geomax": __version__, "python": sys.executable, "tools": tools}


# --------------------------------------------------------------------------- the JSON lines
class _Lines:
    """Writes one ASCII JSON object per line and flushes it (from any thread)."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, kind: str, **fields: Any) -> None:
        self.write({"type": kind, **fields})

    def write(self, item: dict) -> None:
        text = json.dumps(item, ensure_ascii=True, default=str)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()


class _LineHandler(logging.Handler):
    """Turns the ``geomax`` logger's records into message / warning / error lines."""

    def __init__(self, emit: Emit):
        super().__init__(logging.DEBUG)
        self._emit = emit
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR:
            self._emit("error", message=text)
        elif record.levelno >= logging.WARNING:
            self._emit("warning", message=text)
        elif text.startswith("WARNING: "):  # a workflow's warning said on its log (fit_model's diagnosis)
            self._emit("warning", message=text[len("WARNING: "):])
        else:
            self._emit("message", message=text)


class _ProgressLines:
    """Progress sink: a progress line when a bar starts, ends or passes a whole percent."""

    def __init__(self, emit: Emit):
        self._emit = emit
        self._shown: dict[str, tuple[int, int]] = {}

    def __call__(self, unit: str, done: int, total: int) -> None:
        percent = 100 * done // total if total > 0 else 100
        if done in (0, total) or self._shown.get(unit) != (total, percent):
            self._shown[unit] = (total, percent)
            self._emit("progress", label=unit, done=int(done), total=int(total))


def _fastprogress_writer(emit: Emit) -> Callable[..., None]:
    """fastprogress's ``WRITER_FN``: lines (fastai's epoch table) become messages, bar redraws are dropped."""

    def write(*parts: Any, end: str = "\n", **_: Any) -> None:
        if end == "":  # a console bar redrawing itself ('\r...'): the toolbox has its own progressor
            return
        for line in " ".join(map(str, parts)).splitlines():
            if line.strip():
                emit("message", message=line.rstrip())

    return write


@contextlib.contextmanager
def _relayed(emit: Emit) -> Iterator[None]:
    """For the block: the ``geomax`` logger, warnings, progress and fastprogress's lines all become lines."""
    from ..inference.progress import progress_sink
    from ..log import LOGGER_NAME, use_root_handlers

    use_root_handlers()  # geomax's own stdout handler off for good in this process: stdout is JSON only
    logger = logging.getLogger(LOGGER_NAME)
    handler = _LineHandler(emit)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def show_warning(message, category, filename, lineno, file=None, line=None):
        emit("warning", message=" ".join(str(message).split()))

    try:
        from fastprogress import fastprogress
    except ImportError:  # no fastprogress: no console bars or tables to relay
        fastprogress = None  # type: ignore[assignment]
    old_writer = fastprogress.WRITER_FN if fastprogress is not None else None
    try:
        if fastprogress is not None:
            fastprogress.WRITER_FN = _fastprogress_writer(emit)
        with warnings.catch_warnings(), progress_sink(_ProgressLines(emit)):
            warnings.showwarning = show_warning
            yield
    finally:
        if fastprogress is not None:
            fastprogress.WRITER_FN = old_writer
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- run
def run(tool_name: str, values: dict, emit: Emit) -> int:
    """Run tool ``tool_name`` with ``values`` (name -> text or number), every message as a line to ``emit``.

    Called by :func:`main` in the bridge process: it replaces this process's ``geomax`` logging
    (:func:`geomax.log.use_root_handlers`). Returns the exit code (:data:`EXIT_OK`, ...).
    """
    from ..errors import GeomaxError
    from .tools import TOOLS, run_tool

    if tool_name not in TOOLS:
        from .._version import __version__

        emit("error", message=f"geomax {__version__} has no tool '{tool_name}' (it has {', '.join(TOOLS)}). "
                              "Use the geomax.pyt of the geomax version installed in that environment.")
        return EXIT_USER_ERROR
    with _relayed(emit):
        try:
            run_tool(tool_name, values, progress=True)
        except GeomaxError as exc:
            emit("error", message=str(exc))
            return EXIT_USER_ERROR
        except Exception as exc:  # a bug or an environment problem: say what, with the traceback
            emit("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            return EXIT_FAILED
    return EXIT_OK


def _private_stdout() -> IO[str]:
    """A copy of stdout for the JSON lines; file descriptor 1 and ``sys.stdout`` then point at stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)  # what libraries print (Python or C) goes to stderr, never between the JSON lines
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="ascii", newline="\n")


_USAGE = "usage: python -m geomax.workflows.bridge describe | run TOOL_NAME  (values as JSON on stdin)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geomax.workflows.bridge``; rewires this process's stdout (see the module)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["describe"]:
        lines = _Lines(_private_stdout())
        lines.write(describe())
        return EXIT_OK
    if len(args) == 2 and args[0] == "run":
        lines = _Lines(_private_stdout())
        try:
            values = json.loads(sys.stdin.buffer.read().decode("utf-8") or "{}")
        except ValueError as exc:
            lines("error", message=f"The parameter values on stdin are not JSON ({exc}).")
            return EXIT_USER_ERROR
        if not isinstance(values, dict):
            lines("error", message="The parameter values on stdin must be a JSON object {name: value}.")
            return EXIT_USER_ERROR
        return run(args[1], values, lines)
    sys.stderr.write(_USAGE + "\n")
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
