"""Procedure presets: data files in ``planner/data/presets/<id>.json`` read into frozen objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from ..anatomy.registry import StructureClass
from ..errors import InputError

POSITIONS = ("supine", "prone", "decubitus_left", "decubitus_right")


@dataclass(frozen=True)
class AvoidRule:
    """Keep at least ``margin_mm`` (plus the needle radius) from a class or a named structure."""

    margin_mm: float
    cls: StructureClass | None = None
    name: str | None = None
    why: str = ""
    source: str = ""

    @property
    def key(self) -> str:
        """How the rule is named in ``rejected`` and in explanations: ``clearance:<class or name>``."""
        return f"clearance:{self.name or self.cls.value}"  # type: ignore[union-attr]


@dataclass(frozen=True)
class Needle:
    gauge: str
    outer_diameter_mm: float
    length_mm: float
    coaxial: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"gauge": self.gauge, "length_mm": self.length_mm, "outer_diameter_mm": self.outer_diameter_mm,
                "coaxial": self.coaxial}


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    guidance: str
    avoid: tuple[AvoidRule, ...]
    needles: tuple[Needle, ...]
    needle_reserve_mm: float
    max_angle_from_skin_normal_deg: float
    max_craniocaudal_deg: float
    positions: tuple[str, ...]
    weights: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_depth_mm(self) -> float:
        """The deepest target any needle of the catalogue reaches (length minus the reserve)."""
        return max(n.length_mm for n in self.needles) - self.needle_reserve_mm

    @property
    def needle_radius_mm(self) -> float:
        """Radius of the thickest needle: the hard clearance check uses it for every candidate."""
        return max(n.outer_diameter_mm for n in self.needles) / 2.0

    def needle_for(self, depth_mm: float) -> Needle | None:
        """The shortest needle that reaches ``depth_mm`` with the reserve to spare (thickest first on ties)."""
        fits = [n for n in self.needles if n.length_mm - self.needle_reserve_mm >= depth_mm]
        return min(fits, key=lambda n: (n.length_mm, -n.outer_diameter_mm)) if fits else None


def _parse(data: dict[str, Any], where: str) -> Preset:
    try:
        avoid = []
        for r in data["avoid"]:
            cls = StructureClass.parse(r["class"]) if "class" in r else None
            if (cls is None) == ("name" not in r):
                raise ValueError("each avoid rule names exactly one of 'class' or 'name'")
            margin = float(r["margin_mm"])
            if not 0 <= margin <= 50:
                raise ValueError(f"margin_mm {margin} outside 0..50")
            avoid.append(AvoidRule(margin, cls, r.get("name"), r.get("why", ""), r.get("source", "")))
        needles = tuple(
            Needle(str(n["gauge"]), float(n["outer_diameter_mm"]), float(n["length_mm"]), str(n.get("coaxial", "")))
            for n in data["needles"]
        )
        if not needles:
            raise ValueError("the needle catalogue is empty")
        positions = tuple(data["positions"])
        bad = [p for p in positions if p not in POSITIONS]
        if bad:
            raise ValueError(f"unknown positions {bad}; allowed {list(POSITIONS)}")
        return Preset(
            id=str(data["id"]), title=str(data["title"]), guidance=str(data.get("guidance", "ct")),
            avoid=tuple(avoid), needles=needles, needle_reserve_mm=float(data.get("needle_reserve_mm", 10)),
            max_angle_from_skin_normal_deg=float(data["max_angle_from_skin_normal_deg"]),
            max_craniocaudal_deg=float(data.get("max_craniocaudal_deg", 90)), positions=positions,
            weights={k: float(v) for k, v in data.get("weights", {}).items()}, raw=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: invalid preset ({type(exc).__name__}: {exc})") from None


@lru_cache(maxsize=None)
def list_presets() -> dict[str, Preset]:
    """Every preset shipped in ``planner/data/presets``, by id."""
    out = {}
    folder = resources.files("planner").joinpath("data", "presets")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            p = _parse(json.loads(entry.read_text(encoding="utf-8")), f"presets/{entry.name}")
            if entry.name != f"{p.id}.json":
                raise InputError(f"presets/{entry.name}: file name does not match id {p.id!r}")
            out[p.id] = p
    return out


def load_preset(preset_id: str) -> Preset:
    presets = list_presets()
    if preset_id not in presets:
        raise InputError(f"unknown procedure {preset_id!r}; available: {', '.join(sorted(presets))}")
    return presets[preset_id]
