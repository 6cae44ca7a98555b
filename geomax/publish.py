"""Outputs that never cost the user anything: the rules every geomax writer follows.

1. **Inputs are never outputs.** :func:`check_outputs_apart` refuses an output that is,
   contains or sits inside an input of the same call (``geomax train DATA --out DATA``).
2. **Overwrite replaces geomax's own output only.** Every output folder geomax writes holds
   a marker file (:data:`MARKER`, its kind: ``model``, ``export``, ``demo``);
   :func:`check_replaceable` lets ``overwrite`` replace a folder only when it is such a
   folder of the expected kind (or an empty one), and refuses anything else, whatever the
   flag says. Output files (a panoptic raster, a features file, a metrics JSON) are
   replaced only with ``overwrite``; they are never folders.
3. **Publishing is crash-safe.** New outputs are written under hidden scratch names beside
   the final ones, then moved in by ``os.replace``. A folder (:func:`publish_folder`):
   the old one is renamed aside, the new one renamed in, then the old one removed; a
   set of files (:func:`publish_files`): a journal names the moves before they start.
   :func:`recover` (called by every writer before it checks its outputs) undoes what an
   interrupted run left: the scratch is removed, an old folder left aside goes back,
   a half-published file set is rolled back to the old files. So a rerun of the same
   command after a kill at any point works, and finds the user's earlier outputs intact.
4. New folders get the permissions of the user's umask (``tempfile.mkdtemp`` alone
   would make them private, 0700).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Mapping, Sequence

from .data.esri_layout import EMD_FILE, EXPORT_ENTRIES, IMAGES_DIR
from .errors import ArgumentError, OutputExistsError

__all__ = ["MARKER", "OUTPUT_KINDS", "check_outputs_apart", "output_kind", "check_replaceable", "scratch_folder",
           "write_marker", "publish_folder", "publish_files", "recover", "PathLike"]

PathLike = str | os.PathLike

#: Marker file in every output folder geomax writes: JSON ``{"kind": ..., "geomax": version}``.
MARKER = ".geomax-output.json"
#: Kinds of output folder geomax writes.
OUTPUT_KINDS = ("model", "export", "demo")

_NEW = ".geomax-new-"      # scratch folder of a new output: .<name>.geomax-new-<tag>
_OLD = ".geomax-old-"      # the previous output moved aside while the new one moves in
_JOURNAL = ".geomax-publish.json"
_OWNER = ".geomax-owner.json"  # in a scratch folder: the process writing it


def _resolved(path: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _nested(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_outputs_apart(inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]) -> None:
    """Refuse an output that is, contains or sits inside one of the call's inputs.

    Parameters
    ----------
    inputs, outputs:
        ``{description: path}`` of the call (``None`` entries are skipped); descriptions
        name the argument in the message (``"training data"``, ``"--out"``).

    Raises
    ------
    ArgumentError
        Naming both paths and the fix (another output place).
    """
    for out_name, out in outputs.items():
        if out is None:
            continue
        o = _resolved(out)
        for in_name, inp in inputs.items():
            if inp is None:
                continue
            i = _resolved(inp)
            if o == i:
                how = "is"
            elif _nested(i, o):
                how = "contains"
            elif _nested(o, i):
                how = "is inside"
            else:
                continue
            raise ArgumentError(f"The {out_name} '{out}' {how} the {in_name} '{inp}': geomax never writes over or "
                                f"into its own inputs. Choose an output outside '{inp}'.")


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` as a geomax output of ``kind`` (see :data:`OUTPUT_KINDS`)."""
    from ._version import __version__

    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "geomax": __version__}))


#: Entries of an export folder and of a model folder as geomax writes them (recognised without a marker,
#: e.g. written by an earlier geomax version).
_EXPORT_ENTRIES = set(EXPORT_ENTRIES) | {"models"}
_MODEL_SUFFIXES = {".pth", ".emd", ".dlpk"}


def _looks_like(folder: Path) -> str | None:
    names = {p.name for p in folder.iterdir()}
    if EMD_FILE in names and IMAGES_DIR in names and names <= _EXPORT_ENTRIES:
        return "export"
    emds = [n for n in names if n.endswith(".emd")]
    if len(emds) == 1 and all(Path(n).suffix in _MODEL_SUFFIXES or n == "model_metrics.html" for n in names):
        try:
            if "ModelParameters" in json.loads((folder / emds[0]).read_text()):
                return "model"
        except (OSError, ValueError):
            return None
    return None


def output_kind(folder: PathLike) -> str | None:
    """The kind of geomax output ``folder`` is (its marker, or its entries), or ``None`` for anything else."""
    folder = Path(folder)
    try:
        kind = json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return _looks_like(folder) if folder.is_dir() else None
    return kind if kind in OUTPUT_KINDS else None


def check_replaceable(path: PathLike, overwrite: bool, kind: str | Sequence[str] | None = None,
                      what: str = "output") -> Path:
    """Check, writing nothing, that ``path`` may receive a new output; return it.

    Parameters
    ----------
    path:
        The output folder (``kind`` given) or file (``kind`` None).
    overwrite:
        Whether the user asked to replace an earlier output.
    kind:
        For a folder: the kind(s) of geomax output ``overwrite`` may replace.
    what:
        Name of the output in messages (``"model folder"``, ``"--out"``).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False, or it is not a geomax output of ``kind``.
    ArgumentError
        A file where a folder is expected, or a folder where a file is expected.
    """
    path = Path(path)
    recover(path)
    if kind is None:
        if path.is_dir():
            raise ArgumentError(f"The {what} '{path}' is a folder; give a file name.")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"The {what} '{path}' exists. Choose another name, or pass --overwrite "
                                    "(overwrite=True) to replace it.")
        return path
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if path.exists() and not path.is_dir():
        raise ArgumentError(f"The {what} '{path}' is a file; give a folder.")
    if not path.is_dir() or not any(path.iterdir()):
        return path
    found = output_kind(path)
    if found not in kinds:
        entries = sorted(p.name for p in path.iterdir())
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        label = f"a geomax {found} folder" if found else "not a folder geomax wrote"
        raise OutputExistsError(f"The {what} '{path}' is {label} (it holds {shown}); geomax replaces only its own "
                                f"{' or '.join(kinds)} folders, even with overwrite. Choose a new or empty folder.")
    if not overwrite:
        raise OutputExistsError(f"The {what} '{path}' holds an earlier geomax {found}. Choose another folder, or "
                                "pass --overwrite (overwrite=True) to replace it.")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _owner_file(folder: Path) -> None:
    (folder / _OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def scratch_folder(final: PathLike) -> Path:
    """A new hidden folder beside ``final`` to write its replacement in (umask permissions)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_NEW}", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    _owner_file(tmp)
    return tmp


def publish_folder(tmp: Path, final: PathLike, kind: str) -> Path:
    """Move the complete folder ``tmp`` (from :func:`scratch_folder`) to ``final``.

    An existing ``final`` (already checked by :func:`check_replaceable`) is renamed aside
    first and removed once the new folder is in place; an interruption between the two
    renames is undone by :func:`recover`.
    """
    final = Path(final)
    (tmp / _OWNER).unlink(missing_ok=True)
    write_marker(tmp, kind)
    aside = None
    if final.exists():
        aside = final.parent / f".{final.name}{_OLD}{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
    os.replace(tmp, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


def _journal_of(final: Path) -> Path:
    return final.parent / f".{final.stem}{_JOURNAL}"


def publish_files(moves: Sequence[tuple[Path, Path]], remove: Sequence[Path] = ()) -> None:
    """Move complete files ``(new, final)`` (the new ones in a :func:`scratch_folder`) in place as one set.

    ``remove``: old files of the set the new one has no counterpart for (an old sidecar);
    they go with the old set. A journal beside the first final file lists the moves and
    where the old files went; the set is published when the journal is removed.
    :func:`recover` rolls an interrupted set back to the old files.
    """
    if not moves:
        return
    journal = _journal_of(Path(moves[0][1]))
    tag = uuid.uuid4().hex[:8]
    plan: list[dict[str, str | None]] = [
        {"new": str(n), "final": str(f), "old": str(f.parent / f".{f.name}{_OLD}{tag}") if f.exists() else None}
        for n, f in moves]
    plan += [{"new": None, "final": str(f), "old": str(f.parent / f".{f.name}{_OLD}{tag}")}
             for f in remove if Path(f).exists()]
    tmp = journal.with_name(journal.name + ".tmp")
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, journal)
    for step in plan:
        if step["old"]:
            os.replace(str(step["final"]), step["old"])
    for step in plan:
        if step["new"]:
            os.replace(step["new"], str(step["final"]))
    journal.unlink()  # the commit point
    for step in plan:
        if step["old"]:
            Path(step["old"]).unlink(missing_ok=True)


def _roll_back(journal: Path) -> None:
    try:
        plan = json.loads(journal.read_text())
    except (OSError, ValueError):
        plan = []
    for step in plan:
        final, old = Path(step["final"]), step["old"]
        moved_in = step["new"] is not None and not Path(step["new"]).exists()
        if moved_in and final.exists() and (old is None or Path(old).exists()):
            final.unlink()  # the interrupted run's file
        if old and Path(old).exists():
            os.replace(old, final)
    journal.unlink(missing_ok=True)
    journal.with_name(journal.name + ".tmp").unlink(missing_ok=True)


def _alive(owner: Path) -> bool:
    """Whether the run that made a scratch folder (its owner file) may still be running."""
    try:
        info = json.loads(owner.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if info.get("host") != socket.gethostname():
        return True  # another machine's run: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _geomax_siblings(final: Path, kind: str) -> list[Path]:
    """Hidden entries geomax made beside ``final``: ``kind`` is ``_OLD`` or ``_NEW``."""
    if not final.parent.is_dir():
        return []
    tag = "[0-9a-f]{8}" if kind == _OLD else "[0-9a-z_]+"
    folder = re.compile(rf"^\.{re.escape(final.name)}{re.escape(kind)}{tag}$")
    files = re.compile(rf"^\.{re.escape(final.stem)}(\.[^/]*)?{re.escape(kind)}{tag}$")
    return sorted(p for p in final.parent.iterdir() if folder.match(p.name) or (p.is_file() and files.match(p.name)))


def recover(final: PathLike) -> None:
    """Undo what an interrupted geomax run left around the output ``final``.

    Rolls back a half-published file set; puts back an old folder left aside when the
    new one never moved in (removes it when it did); removes old files left after a
    publish and scratch folders of runs whose process has ended. Touches only names
    geomax itself made.
    """
    final = Path(final)
    journal = _journal_of(final)
    if journal.exists() or journal.with_name(journal.name + ".tmp").exists():
        _roll_back(journal)
    for aside in _geomax_siblings(final, _OLD):
        if aside.is_dir():
            if not final.exists():
                os.replace(aside, final)
            else:
                shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)  # an old file of a published set
    for scratch in _geomax_siblings(final, _NEW):
        if scratch.is_dir() and not _alive(scratch / _OWNER):
            shutil.rmtree(scratch, ignore_errors=True)
