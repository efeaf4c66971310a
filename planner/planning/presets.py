"""Procedure presets: data files in ``planner/data/presets/<id>.json`` read into frozen objects."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

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


DIRECTIONS = ("anterior", "posterior", "superior", "inferior", "lateral", "medial", "left", "right")


@dataclass(frozen=True)
class Approach:
    """A named way in: entries within ``max_angle_deg`` of a direction from the target.

    ``directions`` are anatomical words whose unit vectors are summed: ``["anterior",
    "lateral"]`` is anterolateral. ``lateral`` and ``medial`` depend on the side of the
    target (``side``: "left" or "right" of the patient).
    """

    id: str
    title: str
    directions: tuple[str, ...]
    max_angle_deg: float
    note: str = ""
    source: str = ""

    def vector(self, side: str | None) -> np.ndarray:
        """The approach direction (from the target towards the skin), unit, LPS."""
        lateral_x = {"right": -1.0, "left": 1.0}.get(side or "")
        v = np.zeros(3)
        for word in self.directions:
            if word in ("lateral", "medial"):
                if lateral_x is None:
                    raise InputError(f"approach {self.id!r} is {word}: the side of the target (left or right) "
                                     "is needed; name the target's structure with _left/_right or give --side")
                v[0] += lateral_x if word == "lateral" else -lateral_x
            else:
                v += {"anterior": (0, -1, 0), "posterior": (0, 1, 0), "superior": (0, 0, 1),
                      "inferior": (0, 0, -1), "left": (1, 0, 0), "right": (-1, 0, 0)}[word]
        return v / np.linalg.norm(v)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "directions": list(self.directions),
                "max_angle_deg": self.max_angle_deg, "note": self.note}


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
    approaches: tuple[Approach, ...] = ()
    approach: Approach | None = None  # the chosen one (the first by default)
    fixed_position: str | None = None  # a limb is reached from any side with the patient in this position
    version: int = 1  # the preset file's "version": raised whenever its rules change
    sha256: str = ""  # of the preset file's content (canonical JSON): a plan records it, review requires it
    #: for a department variant (:func:`load_preset_file`): its file, hash, the shipped preset it
    #: varies (version, hash) and what it was learned from; None for the shipped preset
    variant: dict[str, Any] | None = field(default=None, compare=False)

    def binding(self, side: str | None = None) -> dict[str, Any]:
        """What ``plan.json`` records of the rules it was planned under (``preset``); a department
        variant adds ``variant`` (its ``sha256`` is then the variant file's, ``variant.of_sha256``
        the shipped preset's)."""
        out = {"id": self.id, "version": self.version, "sha256": self.sha256,
               "approach": self.approach.id if self.approach else None, "side": side}
        if self.variant is not None:
            out["variant"] = dict(self.variant)
        return out

    def with_approach(self, approach_id: str | None) -> "Preset":
        """This preset with the approach ``approach_id`` chosen (None: the default, the first)."""
        if approach_id is None:
            return self
        for a in self.approaches:
            if a.id == approach_id:
                return replace(self, approach=a)
        known = ", ".join(a.id for a in self.approaches) or "none"
        raise InputError(f"procedure {self.id!r} has no approach {approach_id!r}; its approaches: {known}")

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
        approaches = []
        for a in data.get("approaches", []):
            words = tuple(str(w) for w in a["directions"])
            unknown = [w for w in words if w not in DIRECTIONS]
            if unknown or not words:
                raise ValueError(f"approach {a.get('id')!r}: directions {list(words)}; allowed {list(DIRECTIONS)}")
            angle = float(a["max_angle_deg"])
            if not 0 < angle <= 90:
                raise ValueError(f"approach {a['id']!r}: max_angle_deg {angle} outside (0, 90]")
            approaches.append(Approach(str(a["id"]), str(a.get("title", a["id"])), words, angle,
                                       str(a.get("note", "")), str(a.get("source", ""))))
        fixed = data.get("fixed_position")
        if fixed is not None and fixed not in POSITIONS:
            raise ValueError(f"fixed_position {fixed!r}; allowed {list(POSITIONS)}")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"version {version!r} is not a whole number from 1")
        unknown = sorted(set(data.get("weights", {})) - set(SCORE_TERMS))
        if unknown:  # a misspelt weight would weigh nothing, silently
            raise ValueError(f"weights {unknown} name no criterion the planner computes; known: {', '.join(SCORE_TERMS)}")
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return Preset(
            version=version, sha256=hashlib.sha256(canonical.encode("ascii")).hexdigest(),
            approaches=tuple(approaches), approach=approaches[0] if approaches else None, fixed_position=fixed,
            id=str(data["id"]), title=str(data["title"]), guidance=str(data.get("guidance", "ct")),
            avoid=tuple(avoid), needles=needles, needle_reserve_mm=float(data.get("needle_reserve_mm", 10)),
            max_angle_from_skin_normal_deg=float(data["max_angle_from_skin_normal_deg"]),
            max_craniocaudal_deg=float(data.get("max_craniocaudal_deg", 90)), positions=positions,
            weights={k: float(v) for k, v in data.get("weights", {}).items()}, raw=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: invalid preset ({type(exc).__name__}: {exc})") from None


#: The soft criteria a preset may weigh (``weights``): those the planner computes for every
#: feasible path (planner.planning.engine), and the two derived ones its score knows.
SCORE_TERMS = ("length_mm", "lung_mm", "pleura_crossings", "pleura_crossings_beyond_first", "fissures",
               "lung_mm_fissures_unknown", "emphysema_mm", "pleura_angle_deg", "vessel_near_mm",
               "unidentified_tissue_mm", "min_clearance_excess_mm", "clearance_deficit_mm")


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


def load_preset(preset_id: str, approach: str | None = None) -> Preset:
    """The preset ``preset_id`` with ``approach`` chosen (None: its default approach, if it has any)."""
    presets = list_presets()
    if preset_id not in presets:
        raise InputError(f"unknown procedure {preset_id!r}; available: {', '.join(sorted(presets))}")
    return presets[preset_id].with_approach(approach)


#: What a department variant of a preset may change: its soft-criterion weights (and the record of
#: how they were learned). Everything else, every hard constraint included, is the shipped preset's.
VARIANT_MAY_CHANGE = ("weights", "department_variant")


def load_preset_file(path: str | Any, approach: str | None = None, procedure: str | None = None) -> Preset:
    """A department variant of a shipped preset (``planner library learn`` writes them), with
    ``approach`` chosen: refused (InputError, one line) unless it is a variant of a preset this
    planner ships (of ``procedure`` when given) whose every key but ``weights`` (and the
    ``department_variant`` record) is the shipped preset's own: the hard constraints are never
    taken from a variant file."""
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such preset file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable preset file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: not a preset (a JSON object is expected)")
    pid = data.get("id")
    presets = list_presets()
    if pid not in presets:
        raise InputError(f"{p}: preset id {pid!r} is not one this planner ships; a preset file may only vary a "
                         f"shipped preset's weights ({', '.join(sorted(presets))})")
    if procedure is not None and pid != procedure:
        raise InputError(f"{p}: a variant of {pid!r}, not of the procedure asked for ({procedure!r})")
    shipped = presets[pid]
    learned = data.get("department_variant") if isinstance(data.get("department_variant"), dict) else {}
    if data.get("version", 1) != shipped.version:
        raise InputError(f"{p}: a variant of version {data.get('version', 1)} of preset {pid!r}; this planner ships "
                         f"version {shipped.version}, whose rules differ: learn the variant again "
                         f"(planner library learn {pid})")
    changed = sorted(k for k in set(data) | set(shipped.raw)
                     if k not in VARIANT_MAY_CHANGE and data.get(k) != shipped.raw.get(k))
    if changed:
        raise InputError(f"{p}: differs from the shipped preset {pid!r} in {', '.join(changed)}; a variant may only "
                         "change the soft-criterion weights, never a hard constraint: refused")
    if learned.get("of_preset", pid) != pid or learned.get("of_version", shipped.version) != shipped.version:
        raise InputError(f"{p}: says it was learned from {learned.get('of_preset')!r} version "
                         f"{learned.get('of_version')}, not {pid!r} version {shipped.version}: refused")
    parsed = _parse(data, str(p))
    info = {"file": str(p.absolute()), "sha256": parsed.sha256, "of_version": shipped.version,
            "of_sha256": shipped.sha256, "learned_from_cases": learned.get("learned_from_cases"),
            "agreement_before": learned.get("agreement_before"),
            "agreement_after_cv": learned.get("agreement_after_cv")}
    return replace(parsed, variant=info).with_approach(approach)


def describe_preset(binding: dict[str, Any]) -> str:
    """One line naming the preset a plan was made under (``plan.json``'s ``preset``): shipped, or
    a department variant with its file and the number of cases it was learned from."""
    pid, version = binding.get("id"), binding.get("version")
    v = binding.get("variant")
    if not isinstance(v, dict):
        return f"{pid} version {version}, shipped with the planner (sha256 {str(binding.get('sha256'))[:12]}...)"
    n = v.get("learned_from_cases")
    learned = f"soft-criterion weights learned from {n} cases" if n else "soft-criterion weights of the department"
    return (f"department variant of {pid} version {version}: {learned}; every hard constraint is the shipped "
            f"preset's (file {v.get('file')}, sha256 {str(binding.get('sha256'))[:12]}...)")
