"""``planner review``: is this scan the plan's own, and is every trajectory still safe on it?

Nothing ``plan.json`` says of its own safety is taken on trust:

1. The file: it must be a valid ``planner.plan/1`` document (JSON Schema; a NaN or a string
   where a number belongs is refused) and name the preset it was planned under with the
   version and file hash of the preset this planner ships (a changed procedure or edited rules
   are refused).
2. The scan: its Series Instance UID and its voxel hash (voxels + affine) must equal those in
   ``plan.json``; a different patient, another series or a single changed voxel is refused.
   A de-identified plan (or a scan whose UIDs are blank) is identified by the voxel hash alone.
3. The structures saved with the plan (``structures.seg.nrrd``) must have the hash the plan
   records, and lie on this scan's grid.
4. Every trajectory (of every target) is checked again from its two end points alone
   (:func:`planner.planning.verify.verify_trajectory`): depth and needle from the preset's
   catalogue, the craniocaudal limit, the entry on this CT's skin with the position and
   insertion angle its normal gives, the approach cone, and the exact clearance from every
   avoided structure with the preset's margins, plus the printed numbers against the geometry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..images import Image
from ..planning.output import STRUCTURES_FILE, file_sha256, read_plan
from ..planning.verify import TrajectoryCheck, check_preset, verify_trajectory


class ScanMismatchError(InputError):
    """The scan given is not the one the plan was made on."""


@dataclass
class ReviewResult:
    plan_dir: Path
    checks: list[TrajectoryCheck]
    status: str  # plan.json's status
    notes: list[str] = field(default_factory=list)
    multi_target: bool = False

    @property
    def ok(self) -> bool:
        """At least one trajectory, and every one verified."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = list(self.notes)
        for c in self.checks:
            who = f"#{c.rank}" + (f" ({c.target_label})" if self.multi_target else "")
            near = ", ".join(f"{k} {v:.1f} mm" for k, v in sorted(c.clearance_mm.items(), key=lambda kv: kv[1])[:3])
            if c.ok:
                out.append(f"{who} verified: every hard constraint re-derived and kept (nearest: "
                           f"{near or 'none within 30 mm'})")
            else:
                out.append(f"{who} NOT SAFE on this scan: " + "; ".join(c.violations))
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
    elif not want_uid:
        notes.append("the plan records no series UID (its series' UIDs were blank, or it was not DICOM): the scan "
                     "is identified by its voxel hash alone")
    if im.get("sha256") != ct.sha256:
        raise ScanMismatchError(
            f"{ct.meta.source}: voxel hash {ct.sha256[:16]}... differs from the plan's {str(im.get('sha256'))[:16]}... "
            f"({plan_path}): the voxels or the geometry changed since planning; refusing to review")
    notes.append(f"scan matches the plan: series {have_uid or '(none recorded)'}, voxel hash {ct.sha256[:16]}...")
    return notes


def verify_plan(doc: dict[str, Any], ct: Image, structures: Any, where: str = "plan.json") -> list[TrajectoryCheck]:
    """Every trajectory of every target of ``doc``, re-derived (see the module)."""
    from ..anatomy.autoseg import body_of

    preset = check_preset(doc, where)
    side = (doc.get("preset") or {}).get("side")
    body = body_of(ct, structures)
    blocks = doc.get("targets") or [doc]
    checks = []
    for block in blocks:
        label = str(block["target"].get("label", ""))
        for t in block["trajectories"]:
            checks.append(verify_trajectory(t, block["target"], preset, side, ct, structures, body, label))
    return checks


def review_plan(plan_dir: str | os.PathLike[str], ct: Image) -> ReviewResult:
    """Check the file, the scan and the structures (raising :class:`InputError` /
    :class:`ScanMismatchError`), then re-derive every trajectory's hard constraints."""
    from ..anatomy.slicer_seg import load_slicer_seg

    d = Path(plan_dir)
    where = str(d / "plan.json")
    doc = read_plan(d)
    check_preset(doc, where)  # before the long work
    notes = check_scan(doc, ct, where)
    binding = doc.get("preset") or {}
    if isinstance(binding.get("variant"), dict):
        from ..planning.presets import describe_preset

        notes.append(f"planned under the {describe_preset(binding)}: the hard constraints below are re-derived "
                     "from the shipped preset")
    seg = d / STRUCTURES_FILE
    if not seg.is_file():
        raise InputError(f"{seg}: missing; the plan folder must keep the structures it was planned against")
    bound = (doc.get("structures_file") or {}).get("sha256")
    if bound is None:
        raise InputError(f"{where}: records no hash of {STRUCTURES_FILE} (written by an older planner, or edited): "
                         "the structures cannot be bound to the plan; plan again")
    if file_sha256(seg) != bound:
        raise InputError(f"{seg}: is not the structures file the plan was made against (hash differs from "
                         f"{where}); refusing to review against other structures")
    structures = load_slicer_seg(seg, ct)
    return ReviewResult(d, verify_plan(doc, ct, structures, where), str(doc.get("status", "")), notes,
                        multi_target=bool(doc.get("targets")))
