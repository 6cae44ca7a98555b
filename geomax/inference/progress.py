"""A progress bar of work items done / total for inference (fastprogress, fastai's own)."""
from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """Counts items (tiles, blocks) done and shows them on a fastprogress bar.

    Use as a context manager; the bar is closed on exit, and its own clean-up never hides
    an error of the work it shows.

    Parameters
    ----------
    total:
        Items to do.
    enabled:
        Show the bar (``False``: count silently).
    unit:
        What an item is called in the bar's comment (``"tiles"``).
    """

    def __init__(self, total: int, enabled: bool = True, unit: str = "tiles"):
        self.total, self.unit, self.done = int(total), unit, 0
        self._bar = None
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
