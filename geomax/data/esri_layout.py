"""Read and write the ArcGIS *Export Training Data For Deep Learning* folder, format ``Panoptic_Segmentation``.

Layout (DESIGN section 3)::

    images/<id>.tif                 image chip (any bands, any dtype, georeferenced)
    labels/<id>.tif                 class Value of every pixel (0 = no data / unlabeled)
    labels2/<ClassName>/<id>.tif    one folder per thing class: instance ids (0 = background)
    map.txt                         "images/<id>.tif labels/<id>.tif" per chip (ArcGIS writes backslashes)
    esri_model_definition.emd       JSON: Classes, Panoptic_Segmentation_Instance_Classes, ImageHeight, ...
    esri_accumulated_stats.json     JSON: MetaDataMode "Panoptic_Segmentation", NumBands, ...
    stats.txt                       human-readable summary (optional)

The reader is tolerant of what ArcGIS Pro itself writes: backslashes and
absolute paths in ``map.txt``, class colours, a missing ``map.txt``,
``esri_accumulated_stats.json``, ``stats.txt`` or ``AllTilesStats``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from ..errors import DataError
from .classes import ClassTable
from .normalize import BandStats

__all__ = [
    "META_DATA_MODE", "IMAGES_DIR", "LABELS_DIR", "INSTANCES_DIR", "MAP_FILE", "EMD_FILE", "STATS_FILE",
    "STATS_TXT", "ChipRecord", "ExportLayout", "read_export", "write_emd", "write_accumulated_stats",
    "write_map", "IMAGE_SUFFIXES",
]

META_DATA_MODE = "Panoptic_Segmentation"
IMAGES_DIR = "images"
LABELS_DIR = "labels"
INSTANCES_DIR = "labels2"
MAP_FILE = "map.txt"
EMD_FILE = "esri_model_definition.emd"
STATS_FILE = "esri_accumulated_stats.json"
STATS_TXT = "stats.txt"
#: Every entry an export writes at its top level.
EXPORT_ENTRIES = (IMAGES_DIR, LABELS_DIR, INSTANCES_DIR, MAP_FILE, EMD_FILE, STATS_FILE, STATS_TXT)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mrf")


@dataclass
class ChipRecord:
    """One training chip: its image, its class-Value label and its instance rasters.

    Attributes
    ----------
    id:
        Chip id (file stem).
    image, label:
        Paths of the image chip and of the class-Value label chip.
    instances:
        Thing class Value -> path of the instance raster of that class for this chip
        (absent when the export has no ``labels2/<ClassName>/<id>`` file).
    """

    id: str
    image: Path
    label: Path
    instances: dict[int, Path] = field(default_factory=dict)


@dataclass
class ExportLayout:
    """An export folder as read by :func:`read_export`."""

    root: Path
    emd: dict
    stats: dict | None
    class_table: ClassTable
    chips: list[ChipRecord]
    band_names: list[str] | None
    band_stats: BandStats | None
    image_size: tuple[int, int] | None
    extract_bands: list[int] | None
    instance_dirs: dict[int, Path]


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc}). Re-export the training data or fix the file.") from exc


def _resolve(root: Path, entry: str) -> Path:
    """Resolve a map.txt path: relative or absolute, forward or back slashes."""
    entry = entry.strip().strip('"')
    win = PureWindowsPath(entry)
    parts = win.parts if "\\" in entry else Path(entry).parts
    absolute = win.is_absolute() or Path(entry).is_absolute()
    if absolute and Path(entry).exists():
        return Path(entry)
    if not absolute:
        candidate = root.joinpath(*parts)
        if candidate.exists() or len(parts) < 2:
            return candidate
    # Absolute paths from another machine: keep the folder/name tail.
    return root / parts[-2] / parts[-1] if len(parts) >= 2 else root / entry


_MAP_LINE = re.compile(r"^\s*(?P<a>.+?\.[A-Za-z0-9]+)\s+(?P<b>.+?\.[A-Za-z0-9]+)\s*$")


def _read_map(root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    path = root / MAP_FILE
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        m = _MAP_LINE.match(line)
        if not m:
            raise DataError(f"{path}, line {n}: expected '<image path> <label path>', got {line!r}.")
        pairs.append((_resolve(root, m.group("a")), _resolve(root, m.group("b"))))
    return pairs


def _pairs_from_folders(root: Path) -> list[tuple[Path, Path]]:
    images = sorted(p for p in (root / IMAGES_DIR).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    labels = {p.stem: p for p in (root / LABELS_DIR).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} \
        if (root / LABELS_DIR).is_dir() else {}
    pairs = []
    for img in images:
        if img.stem not in labels:
            raise DataError(f"Image chip {img} has no label chip in {root / LABELS_DIR}. Re-export the training data "
                            "or remove the image.")
        pairs.append((img, labels[img.stem]))
    return pairs


def read_export(path) -> ExportLayout:
    """Read and check an exported training-data folder (ours or ArcGIS Pro's).

    Parameters
    ----------
    path:
        The export folder.

    Returns
    -------
    ExportLayout

    Raises
    ------
    DataError
        The folder is missing or is not a ``Panoptic_Segmentation`` export, the
        ``.emd`` is missing or has no classes, an image has no label, or a
        ``labels2`` folder names a class that is not a thing class.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"Training-data folder {root} does not exist. Pass the folder written by "
                        "export_training_data or by ArcGIS Pro's Export Training Data For Deep Learning.")
    emd_path = root / EMD_FILE
    has_images = (root / IMAGES_DIR).is_dir()
    if not emd_path.exists():
        if not has_images and not (root / MAP_FILE).exists():
            raise DataError(f"{root} is not a training-data export: it has no {EMD_FILE}, {MAP_FILE} or {IMAGES_DIR}/ "
                            "folder. Export with metadata format Panoptic_Segmentation first.")
        raise DataError(f"{emd_path} is missing: the class list comes from it. Re-export the training data with "
                        "metadata format Panoptic_Segmentation.")
    emd = _load_json(emd_path)
    stats = _load_json(root / STATS_FILE) if (root / STATS_FILE).exists() else None
    for source, d in ((root / STATS_FILE, stats), (emd_path, emd)):
        mode = (d or {}).get("MetaDataMode")
        if mode is not None and str(mode).lower() != META_DATA_MODE.lower():
            raise DataError(f"{source} says MetaDataMode '{mode}', but geomax needs '{META_DATA_MODE}'. "
                            "Re-export the training data with metadata format Panoptic_Segmentation.")
    if not emd.get("Classes"):
        raise DataError(f"{emd_path} has no 'Classes' list. Re-export the training data with its class field set.")
    class_table = ClassTable.from_emd(emd, source=str(emd_path))

    if (root / MAP_FILE).exists():
        pairs = _read_map(root)
    elif has_images:
        pairs = _pairs_from_folders(root)
    else:
        raise DataError(f"{root} has neither {MAP_FILE} nor an {IMAGES_DIR}/ folder: there are no chips to read. "
                        "Give the folder that Export Training Data wrote (the one holding images/ and the .emd).")
    if not pairs:
        raise DataError(f"{root} lists no chips. Export with a smaller tile size or keep chips without labels.")

    # labels2/<ClassName>/ : one folder per thing class.
    instance_dirs: dict[int, Path] = {}
    inst_root = root / INSTANCES_DIR
    if inst_root.is_dir():
        by_name = {c.name: c for c in class_table}
        by_value = {str(c.value): c for c in class_table}
        for folder in sorted(p for p in inst_root.iterdir() if p.is_dir()):
            c = by_name.get(folder.name) or by_value.get(folder.name)
            if c is None:
                raise DataError(f"Instance folder {folder} names a class that is not in {EMD_FILE} "
                                f"(classes: {class_table.names}). Rename or remove the folder.")
            if not c.is_thing:
                raise DataError(f"Instance folder {folder} is for class '{c.name}', which is not a thing class "
                                "(not in Panoptic_Segmentation_Instance_Classes). Add it to the instance classes "
                                "in the .emd or remove the folder.")
            instance_dirs[c.value] = folder

    chips = []
    for image, label in pairs:
        if not image.exists():
            raise DataError(f"Image chip {image} listed in {root / MAP_FILE} does not exist. Re-export the data.")
        if not label.exists():
            raise DataError(f"Image chip {image} has no label chip: {label} does not exist. Re-export the data.")
        instances = {}
        for value, folder in instance_dirs.items():
            for cand in (folder / label.name, folder / image.name):
                if cand.exists():
                    instances[value] = cand
                    break
            else:
                found = [p for p in folder.glob(label.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES]
                if found:
                    instances[value] = found[0]
        chips.append(ChipRecord(image.stem, image, label, instances))

    props = emd.get("InputRastersProps") or {}
    band_names = props.get("BandNames") or None
    band_stats = None
    if emd.get("AllTilesStats"):
        band_stats = BandStats.from_emd(emd["AllTilesStats"], band_names, source=str(emd_path))
        band_names = band_names or band_stats.names
    size = None
    if emd.get("ImageHeight") and emd.get("ImageWidth"):
        size = (int(emd["ImageHeight"]), int(emd["ImageWidth"]))
    extract = emd.get("ExtractBands")
    return ExportLayout(root, emd, stats, class_table, chips, list(band_names) if band_names else None,
                        band_stats, size, list(extract) if extract else None, instance_dirs)


# ----------------------------------------------------------------------------- writing
def write_emd(path: Path, class_table: ClassTable, tile_size: tuple[int, int], band_names, band_stats: BandStats,
              extract_bands, pixel_type: str, extra: dict | None = None) -> dict:
    """Write ``esri_model_definition.emd`` (ArcGIS keys) and return the dict written."""
    emd = {
        "MetaDataMode": META_DATA_MODE,
        "ImageSpaceUsed": "MAP_SPACE",
        "ImageHeight": int(tile_size[0]),
        "ImageWidth": int(tile_size[1]),
        "ExtractBands": [int(b) for b in extract_bands],
        **class_table.to_emd(),
        "InputRastersProps": {
            "RasterCount": 1,
            "SensorName": "",
            "BandNames": list(band_names),
            "PixelType": pixel_type,
        },
        "AllTilesStats": band_stats.to_emd(),
    }
    if extra:
        emd.update(extra)
    Path(path).write_text(json.dumps(emd, indent=2))
    return emd


def write_accumulated_stats(path: Path, content: dict) -> None:
    """Write ``esri_accumulated_stats.json`` (``MetaDataMode`` is always ``Panoptic_Segmentation``)."""
    Path(path).write_text(json.dumps({"MetaDataMode": META_DATA_MODE, **content}, indent=2))


def write_map(path: Path, pairs) -> None:
    """Write ``map.txt``: one ``images/<id>.tif labels/<id>.tif`` line per chip (forward slashes)."""
    Path(path).write_text("".join(f"{a} {b}\n" for a, b in pairs))
