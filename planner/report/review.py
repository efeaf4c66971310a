"""``planner review``: is this scan the plan's own, and is every trajectory still safe on it?

1. The scan: its Series Instance UID and its voxel hash (voxels + affine) must equal those in
   ``plan.json``; a different patient, another series or a single changed voxel is refused.
   A de-identified plan has new UIDs, so there the voxel hash alone decides.
2. The trajectories: each is checked again, exactly, against the structures saved with the
   plan (``structures.seg.nrrd``): the distance from the needle axis to the nearest voxel centre
   of every structure (:func:`planner.planning.explain.exact_clearances`), compared with the
   hard clearance of the preset (margin + needle radius) that ``plan.json`` records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..images import Image
from ..planning.output import read_plan


class ScanMismatchError(InputError):
    """The scan given is not the one the plan was made on."""


@dataclass
class TrajectoryCheck:
    rank: int
    ok: bool
    violations: list[str] = field(default_factory=list)
    clearance_mm: dict[str, float] = field(default_factory=dict)
    differs_from_plan: list[str] = field(default_factory=list)


@dataclass
class ReviewResult:
    plan_dir: Path
    checks: list[TrajectoryCheck]
    status: str  # plan.json's status
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one trajectory, and every one verified."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = list(self.notes)
        for c in self.checks:
            near = ", ".join(f"{k} {v:.1f} mm" for k, v in sorted(c.clearance_mm.items(), key=lambda kv: kv[1])[:3])
            if c.ok:
                out.append(f"#{c.rank} verified: every clearance kept (nearest: {near or 'none within 30 mm'})")
            else:
                out.append(f"#{c.rank} NOT SAFE on this scan: " + "; ".join(c.violations))
            out += [f"   note: {d}" for d in c.differs_from_plan]
        if not self.checks:
            out.append("the plan holds no safe trajectory (status no_safe_path): nothing to verify")
        out.append("verdict: " + ("all trajectories verified" if self.ok else
                                  "NO SAFE TRAJECTORY" if not self.checks else "SOME TRAJECTORIES FAIL"))
        return out


def check_scan(doc: dict[str, Any], ct: Image, plan_path: str = "plan.json") -> list[str]:
    """Raise :class:`ScanMismatchError` unless ``ct`` is the plan's scan; returns notes."""
    im = doc.get("image", {})
    notes = []
    want_uid, have_uid = str(im.get("series_instance_uid", "")), ct.meta.series_instance_uid
    if doc.get("anonymized"):
        notes.append("de-identified plan: series UIDs were replaced, the scan is identified by its voxel hash")
    elif want_uid and have_uid and want_uid != have_uid:
        raise ScanMismatchError(
            f"{ct.meta.source}: series {have_uid} is not the plan's series {want_uid} ({plan_path}); "
            "refusing to review a plan on another patient or series")
    elif want_uid and not have_uid:
        notes.append("the scan given records no series UID (NIfTI/NRRD): identified by its voxel hash alone")
    if im.get("sha256") != ct.sha256:
        raise ScanMismatchError(
            f"{ct.meta.source}: voxel hash {ct.sha256[:16]}... differs from the plan's {str(im.get('sha256'))[:16]}... "
            f"({plan_path}): the voxels or the geometry changed since planning; refusing to review")
    notes.append(f"scan matches the plan: series {have_uid or '(none recorded)'}, voxel hash {ct.sha256[:16]}...")
    return notes


def verify_trajectories(doc: dict[str, Any], structures: Any) -> list[TrajectoryCheck]:
    """Exact clearances of every trajectory against the hard clearances recorded in ``plan.json``."""
    from ..anatomy.registry import class_of
    from ..planning.explain import exact_clearances

    hard = doc.get("hard_constraints", {}).get("clearance_mm (margin + needle radius)", {})
    target_label = str(doc.get("target", {}).get("label", ""))
    checks = []
    for t in doc.get("trajectories", []):
        entry, target = np.asarray(t["entry"], float), np.asarray(t["target"], float)
        clear = exact_clearances(structures, entry, target, target_label)
        c = TrajectoryCheck(int(t["rank"]), True, clearance_mm=clear)
        for name, d in clear.items():
            cls = structures[name].cls.value if name in structures else class_of(name).value
            need = hard.get(f"clearance:{name}", hard.get(f"clearance:{cls}"))
            if need is not None and d < float(need) - 1e-6:
                c.ok = False
                c.violations.append(f"{name} at {d:.2f} mm, needs {float(need):.2f} mm")
            planned = t.get("clearance_mm", {}).get(name)
            if planned is not None and abs(planned - d) > 0.06:
                c.differs_from_plan.append(f"{name}: {d:.2f} mm now, {planned} mm in plan.json")
        for name in t.get("clearance_mm", {}):
            if name not in clear:
                c.differs_from_plan.append(f"{name}: in plan.json, not within 30 mm on these structures")
        checks.append(c)
    return checks


def review_plan(plan_dir: str | os.PathLike[str], ct: Image) -> ReviewResult:
    """Check the scan (raises :class:`ScanMismatchError`) and re-verify every trajectory."""
    from ..anatomy.slicer_seg import load_slicer_seg

    d = Path(plan_dir)
    doc = read_plan(d)
    notes = check_scan(doc, ct, str(d / "plan.json"))
    seg = d / "structures.seg.nrrd"
    if not seg.is_file():
        raise InputError(f"{seg}: missing; the plan folder must keep the structures it was planned against")
    structures = load_slicer_seg(seg, ct)
    return ReviewResult(d, verify_trajectories(doc, structures), str(doc.get("status", "")), notes)
