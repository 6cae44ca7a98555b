"""Output folders of the workflows."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ArgumentError, OutputExistsError

__all__ = ["check_output_folder", "refuse_output_folder"]


def refuse_output_folder(out_dir: str | os.PathLike, overwrite: bool = False, what: str = "Output folder") -> Path:
    """Check, without writing anything, that ``out_dir`` may receive outputs; return it as a Path.

    Raises
    ------
    OutputExistsError
        The folder exists, is not empty and ``overwrite`` is False.
    ArgumentError
        The path exists and is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError(f"{what} '{out_dir}' is a file; give a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{what} '{out_dir}' exists and is not empty. Choose a new folder or "
                                "pass --overwrite (overwrite=True) to replace its contents.")
    return out_dir


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite`` (:func:`refuse_output_folder`); then empty it.

    Raises
    ------
    OutputExistsError
        The folder exists, is not empty and ``overwrite`` is False.
    ArgumentError
        The path exists and is a file.
    """
    out_dir = refuse_output_folder(out_dir, overwrite)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
