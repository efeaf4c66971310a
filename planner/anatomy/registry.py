"""The structure vocabulary: name -> class, class -> colour, read from the package's data files.

``planner/data/structures.tsv`` covers every TotalSegmentator name (v1 and v2 ``total`` task
and the other tasks' names we use) plus our own; ``planner/data/classes.tsv`` lists the
classes with their display colours. Names not in the table get class ``other``.
"""

from __future__ import annotations

import csv
from enum import Enum
from functools import lru_cache
from importlib import resources


class StructureClass(str, Enum):
    """Closed vocabulary of structure classes (see ``classes.tsv``)."""

    BONE = "bone"
    VESSEL = "vessel"
    AIRWAY = "airway"
    LUNG = "lung"
    LOBE = "lobe"
    FISSURE = "fissure"
    EMPHYSEMA = "emphysema"
    NERVE = "nerve"
    ORGAN = "organ"
    BODY = "body"
    TARGET = "target"
    FLUID = "fluid"
    MUSCLE = "muscle"
    TENDON = "tendon"
    CARTILAGE = "cartilage"
    OTHER = "other"

    @classmethod
    def parse(cls, value: "str | StructureClass") -> "StructureClass":
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown structure class {value!r}; allowed: {allowed}") from None


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("planner").joinpath("data", name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


@lru_cache(maxsize=1)
def structure_table() -> dict[str, StructureClass]:
    """Every known structure name with its class."""
    table: dict[str, StructureClass] = {}
    for row in _rows("structures.tsv"):
        if row["name"] in table:
            raise ValueError(f"structures.tsv: {row['name']!r} is listed twice")
        table[row["name"]] = StructureClass.parse(row["class"])
    return table


@lru_cache(maxsize=1)
def class_colours() -> dict[StructureClass, tuple[int, int, int]]:
    """Display colour (0-255 RGB) of each class."""
    out = {}
    for row in _rows("classes.tsv"):
        h = row["colour"].lstrip("#")
        out[StructureClass.parse(row["class"])] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    missing = set(StructureClass) - set(out)
    if missing:
        raise ValueError(f"classes.tsv lacks {sorted(c.value for c in missing)}")
    return out


def class_of(name: str) -> StructureClass:
    """The class of a structure name; ``other`` when the name is not in the table."""
    return structure_table().get(name, StructureClass.OTHER)


def colour_of(cls: StructureClass) -> tuple[int, int, int]:
    return class_colours()[cls]
