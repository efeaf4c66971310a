"""What the scene shows, gathered from a plan folder or from objects in memory (no VTK here).

A plan folder written by ``planner plan`` holds ``plan.json`` (its ``image.source`` names the
CT), ``structures.seg.nrrd`` (the very structures planned against) and ``risk_map.npz``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..anatomy.structures import StructureSet
from ..errors import InputError
from ..images import Image


@dataclass(frozen=True)
class NeedlePath:
    """One trajectory as the scene draws it; positions in LPS mm.

    ``rank`` 1 is the chosen one. ``diameter_mm`` is the needle's outer diameter (from its gauge).
    """

    rank: int
    entry: np.ndarray
    target: np.ndarray
    diameter_mm: float
    gauge: str = ""
    needle_length_mm: float = 0.0
    clearance_mm: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.target - self.entry))

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the entry to the target."""
        return (self.target - self.entry) / max(self.length_mm, 1e-9)

    @classmethod
    def from_dict(cls, t: dict[str, Any]) -> "NeedlePath":
        needle = t.get("needle", {})
        return cls(
            rank=int(t.get("rank", 1)),
            entry=np.asarray(t["entry"], float),
            target=np.asarray(t["target"], float),
            diameter_mm=float(needle.get("outer_diameter_mm") or gauge_diameter_mm(needle.get("gauge", "18G"))),
            gauge=str(needle.get("gauge", "")),
            needle_length_mm=float(needle.get("length_mm", 0.0)),
            clearance_mm={k: float(v) for k, v in t.get("clearance_mm", {}).items()},
            info=dict(t),
        )


#: Outer diameter (mm) of common needle gauges (Stubs gauge), used when a plan gives no diameter.
GAUGE_MM = {"11G": 3.05, "13G": 2.41, "14G": 2.11, "15G": 1.83, "16G": 1.65, "17G": 1.47, "18G": 1.27,
            "19G": 1.07, "20G": 0.91, "21G": 0.82, "22G": 0.72, "23G": 0.64, "25G": 0.51}


def gauge_diameter_mm(gauge: str) -> float:
    """Outer diameter of a needle gauge such as ``'17G'``; unknown gauges raise ``InputError``."""
    g = str(gauge).upper().replace(" ", "")
    if not g.endswith("G"):
        g += "G"
    if g not in GAUGE_MM:
        raise InputError(f"needle gauge {gauge!r} unknown; known: {', '.join(GAUGE_MM)}")
    return GAUGE_MM[g]


@dataclass
class RiskMap:
    """Candidate skin entries (n, 3) LPS, their score (NaN: ruled out) and the reason."""

    entries: np.ndarray
    score: np.ndarray
    reason: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "RiskMap":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["entries_lps"].astype(float), z["score"].astype(float), z["reason"].astype(str))


@dataclass
class Case:
    """Everything one scene shows: the CT, its structures, the target and the trajectories."""

    ct: Image
    structures: StructureSet | None = None
    target: np.ndarray | None = None
    target_label: str = ""
    target_diameter_mm: float | None = None
    paths: list[NeedlePath] = field(default_factory=list)
    risk_map: RiskMap | None = None
    plan: dict[str, Any] | None = None
    title: str = ""

    @property
    def chosen(self) -> NeedlePath | None:
        return self.paths[0] if self.paths else None


def case_from_objects(
    ct: Image,
    structures: StructureSet | None = None,
    plan: dict[str, Any] | None = None,
    risk_map: RiskMap | dict[str, np.ndarray] | None = None,
    target: Sequence[float] | None = None,
    title: str = "",
) -> Case:
    """A case from objects in memory (a ``plan.json`` dict, a ``PlanResult.risk_map`` dict, ...)."""
    paths = sorted((NeedlePath.from_dict(t) for t in (plan or {}).get("trajectories", [])), key=lambda p: p.rank)
    tgt_info = (plan or {}).get("target", {})
    point = target if target is not None else tgt_info.get("point")
    if isinstance(risk_map, dict):
        risk_map = RiskMap(np.asarray(risk_map["entries"], float), np.asarray(risk_map["score"], float),
                           np.asarray(risk_map["reason"]).astype(str))
    return Case(
        ct=ct, structures=structures, target=None if point is None else np.asarray(point, float),
        target_label=str(tgt_info.get("label", "target" if point is not None else "")),
        target_diameter_mm=tgt_info.get("diameter_mm"), paths=paths, risk_map=risk_map, plan=plan,
        title=title or str((plan or {}).get("procedure", "")),
    )


def load_case(plan_dir: str | os.PathLike[str], ct_path: str | os.PathLike[str] | None = None) -> Case:
    """Reopen a plan folder: ``plan.json``, its CT (``image.source`` or ``ct_path``), structures, risk map."""
    from ..anatomy.slicer_seg import load_slicer_seg
    from ..images import load_image

    from ..planning.output import read_plan

    d = Path(plan_dir)
    pj = d / "plan.json"
    plan = read_plan(d)
    source = ct_path if ct_path is not None else plan.get("image", {}).get("source")
    if not source:
        raise InputError(f"{pj}: image.source is empty; give the CT path")
    im = plan.get("image", {})
    ct = load_image(source, modality=im.get("modality") or "CT", echo=im.get("echo"), phase=im.get("phase"))
    want = im.get("sha256")
    if want and ct.sha256 != want:
        raise InputError(f"{source}: this scan is not the one {pj} was planned on (voxel hash differs)")
    seg = d / "structures.seg.nrrd"
    sset = load_slicer_seg(seg, ct) if seg.is_file() else None
    rm = d / "risk_map.npz"
    risk = RiskMap.load(rm) if rm.is_file() else None
    return case_from_objects(ct, sset, plan, risk, title=str(plan.get("procedure", "")))
