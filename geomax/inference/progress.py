"""A progress bar of work items done / total for inference (fastprogress, fastai's own).

A process that shows progress some other way (the ArcGIS toolbox's bridge,
:mod:`geomax.workflows.bridge`) sets a *progress sink* (:func:`set_progress_sink`,
:func:`progress_sink`): every enabled :class:`Progress` then reports ``(unit, done, total)``
to it instead of drawing a bar.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

__all__ = ["Progress", "ProgressSink", "set_progress_sink", "progress_sink"]

#: Receives ``(unit, done, total)``: once when a :class:`Progress` starts (``done`` 0), then after every advance.
ProgressSink = Callable[[str, int, int], Any]

_sink: ProgressSink | None = None


def set_progress_sink(sink: ProgressSink | None) -> ProgressSink | None:
    """Send the updates of every enabled :class:`Progress` of this process to ``sink`` (``None``: bars again).

    Returns the sink it replaces.
    """
    global _sink
    previous, _sink = _sink, sink
    return previous


@contextlib.contextmanager
def progress_sink(sink: ProgressSink | None) -> Iterator[ProgressSink | None]:
    """Context manager: :func:`set_progress_sink` for the block, then the sink before it again."""
    previous = set_progress_sink(sink)
    try:
        yield sink
    finally:
        set_progress_sink(previous)


class Progress:
    """Counts items (tiles, blocks) done and shows them on a fastprogress bar.

    Use as a context manager; the bar is closed on exit, and its own clean-up never hides
    an error of the work it shows. With a progress sink set (:func:`set_progress_sink`)
    the updates go to the sink instead of a bar.

    Parameters
    ----------
    total:
        Items to do.
    enabled:
        Show the bar or report to the sink (``False``: count silently).
    unit:
        What an item is called in the bar's comment (``"tiles"``).
    """

    def __init__(self, total: int, enabled: bool = True, unit: str = "tiles"):
        self.total, self.unit, self.done = int(total), unit, 0
        self._bar = None
        self._sink = _sink if enabled else None
        if self._sink is not None:
            self._sink(self.unit, 0, self.total)
            return
        if enabled:
            try:
                from fastprogress.fastprogress import progress_bar
            except ImportError:  # fastprogress comes with fastai; without it, no bar
                return
            self._bar = progress_bar(range(self.total), total=self.total, leave=False)
            self._bar.update(0)

    def advance(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.done += n
        if self._sink is not None:
            self._sink(self.unit, self.done, self.total)
        if self._bar is not None:
            self._bar.comment = f"{self.unit} {self.done}/{self.total}"
            self._bar.update(self.done)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            try:
                self._bar.on_iter_end()
            except Exception:  # the bar's own clean-up must never hide the real outcome
                pass
