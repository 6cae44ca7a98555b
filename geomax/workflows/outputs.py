"""Output folders of the workflows."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ArgumentError, OutputExistsError

__all__ = ["check_output_folder"]


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty output folder unless ``overwrite``; then empty it.

    Raises
    ------
    OutputExistsError
        The folder exists, is not empty and ``overwrite`` is False.
    ArgumentError
        The path exists and is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError(f"'{out_dir}' is a file; give a folder for the outputs.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"Output folder '{out_dir}' exists and is not empty. Choose a new folder or "
                                    "pass --overwrite (overwrite=True) to replace its contents.")
        for child in out_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
