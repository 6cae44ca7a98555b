"""The class table: the one mapping between model indices and ArcGIS class Values.

Index 0 inside the model is void / no object. Indices 1..C follow the order of
the ``Classes`` list of the export's ``esri_model_definition.emd``. The table
travels with the data (``data.class_table``) and is saved in the model package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["ClassInfo", "ClassTable", "default_color"]

# A fixed, colour-blind-friendly-ish palette used when an export gives no colours.
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
]


#: Name of the stuff class valid unlabelled pixels become under the background rule
#: (:func:`geomax.data.export.resolve_background`); the vector output leaves it out.
BACKGROUND_NAME = "background"


def default_color(i: int) -> tuple[int, int, int]:
    """Colour for the ``i``-th class when the export does not define one."""
    return _PALETTE[i % len(_PALETTE)]


def _rgb(color: Sequence) -> tuple[int, int, int]:
    """The first three entries of a colour as ints (an alpha entry is dropped)."""
    r, g, b = (int(x) for x in color[:3])
    return r, g, b


@dataclass(frozen=True)
class ClassInfo:
    """One class: its ArcGIS ``Value``, ``Name``, RGB ``Color`` and whether it is a thing."""

    value: int
    name: str
    color: tuple[int, int, int]
    is_thing: bool

    @property
    def color_fraction(self) -> tuple[float, float, float]:
        """The colour as RGB fractions in [0, 1] (what matplotlib takes)."""
        r, g, b = self.color
        return r / 255.0, g / 255.0, b / 255.0


@dataclass
class ClassTable:
    """Ordered list of classes; model index ``i`` (1..C) is ``classes[i - 1]``.

    Parameters
    ----------
    classes:
        The classes in model order (the ``Classes`` order of the export).
    """

    classes: list[ClassInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        values = [c.value for c in self.classes]
        if len(set(values)) != len(values):
            raise DataError(f"Duplicate class Values in the class table: {values}. Each class needs a unique Value: "
                            "check the 'Classes' list of the .emd, or the values given.")
        if any(v == 0 for v in values):
            raise DataError("Class Value 0 is reserved for no data / unlabeled. Renumber the classes from 1 "
                            "(Values must be at least 1).")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise DataError(f"Duplicate class names in the class table: {names}. Give each class a unique name "
                            "(check the 'Classes' list of the .emd, or the names given).")

    # ---- sizes and lists -------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of real classes C (void not counted)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def values(self) -> list[int]:
        return [c.value for c in self.classes]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def thing_values(self) -> list[int]:
        return [c.value for c in self.classes if c.is_thing]

    @property
    def stuff_values(self) -> list[int]:
        return [c.value for c in self.classes if not c.is_thing]

    @property
    def thing_names(self) -> list[str]:
        return [c.name for c in self.classes if c.is_thing]

    @property
    def stuff_names(self) -> list[str]:
        return [c.name for c in self.classes if not c.is_thing]

    # ---- index <-> value ---------------------------------------------------
    def index_of_value(self, value: int) -> int:
        """Model index (1..C) of a class Value."""
        for i, c in enumerate(self.classes, start=1):
            if c.value == value:
                return i
        raise DataError(f"Class Value {value} is not in the class table (Values: {self.values}). Use one of those "
                        "Values, or add the class to the class table.")

    def index_of_name(self, name: str) -> int:
        """Model index (1..C) of a class name."""
        for i, c in enumerate(self.classes, start=1):
            if c.name == name:
                return i
        raise DataError(f"Class '{name}' is not in the class table (names: {self.names}).")

    def info(self, index: int) -> ClassInfo:
        """Class at model index ``index`` (1..C)."""
        if not 1 <= index <= len(self.classes):
            raise IndexError(f"class index {index} outside 1..{len(self.classes)}")
        return self.classes[index - 1]

    def by_value(self, value: int) -> ClassInfo:
        return self.info(self.index_of_value(value))

    def value_lut(self) -> np.ndarray:
        """Array ``lut`` with ``lut[index] = Value`` (``lut[0] = 0`` for void)."""
        return np.array([0] + self.values, dtype=np.int32)

    def index_lut(self, max_value: int | None = None) -> np.ndarray:
        """Array ``lut`` with ``lut[Value] = index``; unknown Values map to -1, Value 0 to 0."""
        top = max(self.values + [0]) if max_value is None else max(max_value, max(self.values + [0]))
        lut = np.full(top + 1, -1, dtype=np.int64)
        lut[0] = 0
        for i, v in enumerate(self.values, start=1):
            lut[v] = i
        return lut

    def is_thing_index(self) -> np.ndarray:
        """Bool array ``t`` of length C + 1 with ``t[index]`` True for thing classes (void False)."""
        return np.array([False] + [c.is_thing for c in self.classes], dtype=bool)

    def colors_array(self) -> np.ndarray:
        """(C + 1, 3) uint8 colours by model index, void black."""
        return np.array([(0, 0, 0)] + [c.color for c in self.classes], dtype=np.uint8)

    # ---- (de)serialisation -------------------------------------------------
    def to_emd(self) -> dict:
        """The ArcGIS ``.emd`` keys ``Classes`` and ``Panoptic_Segmentation_Instance_Classes``."""
        return {
            "Classes": [
                {"Value": c.value, "Name": c.name, "Color": list(c.color)} for c in self.classes
            ],
            "Panoptic_Segmentation_Instance_Classes": [
                {"Value": c.value, "Name": c.name} for c in self.classes if c.is_thing
            ],
        }

    @classmethod
    def from_emd(cls, emd: dict, source: str = "esri_model_definition.emd") -> "ClassTable":
        """Build the table from an ``.emd`` dict (ArcGIS's or geomax's)."""
        raw = emd.get("Classes")
        if not raw:
            raise DataError(f"{source} has no 'Classes' list. Re-export the training data with its class field set.")
        things = emd.get("Panoptic_Segmentation_Instance_Classes") or []
        thing_values = {int(t["Value"]) for t in things if "Value" in t}
        thing_names = {str(t["Name"]) for t in things if "Name" in t}
        classes = []
        for i, c in enumerate(raw):
            try:
                value = int(c["Value"])
                name = str(c.get("Name", f"class_{value}"))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{source}: class entry {c!r} has no integer 'Value'. Give every entry of "
                                "'Classes' an integer Value (1, 2, ...), or re-export the training data.") from exc
            color = c.get("Color")
            color = _rgb(color) if color else default_color(i)
            classes.append(ClassInfo(value, name, color, value in thing_values or name in thing_names))
        return cls(classes)

    @classmethod
    def from_lists(
        cls,
        names: Sequence[str],
        things: Iterable[str] = (),
        values: Sequence[int] | None = None,
        colors: Sequence[Sequence[int]] | None = None,
    ) -> "ClassTable":
        """Convenience constructor: class names, the names of the thing classes, optional Values / colours."""
        things = set(things)
        unknown = things - set(names)
        if unknown:
            raise DataError(f"Thing classes {sorted(unknown)} are not among the classes {list(names)}. Name thing "
                            "classes exactly as in the class list (check spelling and case).")
        values = list(values) if values is not None else list(range(1, len(names) + 1))
        return cls([
            ClassInfo(int(v), str(n), _rgb(colors[i]) if colors else default_color(i), n in things)
            for i, (v, n) in enumerate(zip(values, names))
        ])

    def to_dict(self) -> dict:
        return {"classes": [{"value": c.value, "name": c.name, "color": list(c.color), "is_thing": c.is_thing}
                            for c in self.classes]}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassTable":
        return cls([ClassInfo(int(c["value"]), str(c["name"]), _rgb(c["color"]), bool(c["is_thing"]))
                    for c in d["classes"]])
