"""geomax's messages: the ``geomax`` logger tree (library code never prints).

Every module logs through ``logging.getLogger(__name__)`` (loggers ``geomax.*``). So that a user in a
notebook or a script sees the training lines without configuring anything, the ``geomax`` logger has
one handler of its own: plain messages on the *current* ``sys.stdout`` (looked up at each message,
so Jupyter and pytest capture see them), level INFO, and it does not pass records on to the root
logger (no double lines where an application has configured logging).

The front ends decide what is shown: ``geomax <command> -q`` shows warnings and errors only, ``-v``
adds debug messages (:func:`set_verbosity`). An application that routes everything through its own
logging configuration calls :func:`use_root_handlers`.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER_NAME", "get_logger", "set_verbosity", "use_root_handlers", "verbosity_level"]

LOGGER_NAME = "geomax"


class _CurrentStdout(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stdout`` is when a message is emitted."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ / setStream assign it: the property decides
        pass


_own_handler = True  # False after use_root_handlers()


def _install() -> logging.Logger:
    root = logging.getLogger(LOGGER_NAME)
    if _own_handler and not any(isinstance(h, _CurrentStdout) for h in root.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger of a geomax module (``name``: its ``__name__``), under the ``geomax`` logger."""
    _install()
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def verbosity_level(verbose: bool = False, quiet: bool = False) -> int:
    """The logging level of the front ends' ``-v`` / ``-q``: DEBUG, WARNING or INFO."""
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


def set_verbosity(level: int | str) -> None:
    """Show geomax messages of this level and above (``logging.INFO`` by default; ``"WARNING"``: quiet)."""
    _install().setLevel(level)


def use_root_handlers() -> None:
    """Send geomax's records to the root logger's handlers instead of geomax's own stdout handler."""
    global _own_handler
    root = _install()
    _own_handler = False
    for h in [h for h in root.handlers if isinstance(h, _CurrentStdout)]:
        root.removeHandler(h)
    root.propagate = True
    root.setLevel(logging.NOTSET)
