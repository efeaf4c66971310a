"""Re-derive every hard constraint of a written trajectory, trusting nothing ``plan.json`` says
but the two end points.

What a plan file says of its own safety (margins, angles, depth, needle, clearances) can be
edited, go stale or be wrong; a review must not read it back as proof. Here each trajectory's
entry and target are checked again against:

- the preset's rules, taken from the preset shipped with the package (its id, version and file
  hash must be the plan's: see :func:`check_preset`);
- the CT (the skin the entry must lie on, and its normal there), and the structures saved with
  the plan (whose file hash must be the plan's).

Every constraint the planner applies is re-checked in its own terms: depth within the needle
catalogue, a needle of the catalogue that reaches, the craniocaudal limit, the patient
position, the insertion angle, the approach cone, under ultrasound guidance a probe position
whose plane holds the needle, and clearance from each avoided structure
(margin plus the radius of the thickest needle), the last one exactly: the closed-form distance
from the needle segment to every voxel centre of the structures near it. The numbers the file
prints (depth, angles, position, needle) must also agree with the geometry, since a doctor
reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..anatomy.structures import StructureSet
from ..errors import InputError
from ..images import Image
from . import fields as F
from .engine import _position_of, _smoothed_gradient_lps, side_of_label
from .presets import Preset, load_preset, load_preset_file

#: How far the printed numbers may be from the geometry: they are rounded to 0.1 (mm, degrees).
PRINT_TOLERANCE = 0.11
#: How far an entry may lie from the centre of a skin voxel (the planner takes those centres,
#: rounded to 0.01 mm in plan.json), in voxels.
SKIN_TOLERANCE_VOXELS = 0.5


@dataclass
class TrajectoryCheck:
    """The verdict on one trajectory: ``ok`` only when no hard constraint is broken."""

    rank: int
    ok: bool = True
    violations: list[str] = field(default_factory=list)
    clearance_mm: dict[str, float] = field(default_factory=dict)
    differs_from_plan: list[str] = field(default_factory=list)
    target_label: str = ""

    def fail(self, why: str) -> None:
        self.ok = False
        self.violations.append(why)


def check_preset(doc: dict[str, Any], where: str = "plan.json") -> Preset:
    """The preset ``doc`` was planned under, from the package; refused (InputError) unless the
    plan names it, with the version and file hash of the one shipped now. A plan made with a
    department variant (``preset.variant``) must name the shipped preset it varies
    (``variant.of_sha256``); its variant is returned when the file is still the one planned
    with, else the shipped preset (the hard constraints are the same)."""
    binding = doc.get("preset")
    if not isinstance(binding, dict):
        raise InputError(f"{where}: records no preset hash (written by an older planner, or edited); "
                         "the rules it was planned under cannot be known: plan again")
    pid = binding.get("id")
    if pid != doc.get("procedure"):
        raise InputError(f"{where}: procedure {doc.get('procedure')!r} is not the preset it was planned under "
                         f"({pid!r}); refusing to review an edited plan")
    preset = load_preset(str(pid), binding.get("approach"))
    variant = binding.get("variant")
    if isinstance(variant, dict):  # a department variant: its hard constraints are the shipped preset's
        if variant.get("of_sha256") != preset.sha256 or binding.get("version") != preset.version:
            raise InputError(f"{where}: planned under a department variant of version {binding.get('version')} of "
                             f"preset {pid!r} ({str(variant.get('of_sha256'))[:12]}...); this planner ships version "
                             f"{preset.version} ({preset.sha256[:12]}...); the rules differ: plan again")
        try:  # its weights, when the file is still the one planned with; the hard constraints either way
            mine = load_preset_file(str(variant.get("file")), binding.get("approach"), procedure=str(pid))
            if mine.sha256 == binding.get("sha256"):
                return mine
        except InputError:
            pass
        return preset
    if binding.get("sha256") != preset.sha256 or binding.get("version") != preset.version:
        raise InputError(f"{where}: planned under version {binding.get('version')} of preset {pid!r} "
                         f"({str(binding.get('sha256'))[:12]}...); this planner ships version {preset.version} "
                         f"({preset.sha256[:12]}...); the rules differ: plan again")
    return preset


def rule_structures(sset: StructureSet, preset: Preset) -> list[tuple[Any, list[str]]]:
    """Each avoid rule with the names of the structures it applies to (a structure with a rule
    of its own by name follows that rule, not its class's), as the planner reads them."""
    named = {r.name for r in preset.avoid if r.name}
    out = []
    for r in preset.avoid:
        if r.name is not None:
            names = [r.name] if r.name in sset else []
        else:
            names = [s.name for s in sset.by_class(r.cls) if s.name not in named]  # type: ignore[arg-type]
        out.append((r, names))
    return out


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distance (mm) from each point (..., 3) to the segment a-b (closed form)."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[..., None] * ab), axis=-1)


def structure_distance(sset: StructureSet, name: str, a: np.ndarray, b: np.ndarray, within_mm: float
                       ) -> float | None:
    """Exact distance from the segment a-b to the nearest voxel centre of ``name``; None when
    none lies within ``within_mm`` of the segment's box."""
    s = sset[name]
    aff = np.asarray(sset.affine, float)
    inv = np.linalg.inv(aff)
    lo_lps, hi_lps = np.minimum(a, b) - within_mm, np.maximum(a, b) + within_mm
    corners = np.array([[x, y, z, 1.0] for x in (lo_lps[0], hi_lps[0]) for y in (lo_lps[1], hi_lps[1])
                        for z in (lo_lps[2], hi_lps[2])])
    ijk = (corners @ inv.T)[:, :3]
    lo = np.floor(ijk.min(axis=0)).astype(int)[::-1] - np.array(s.offset)  # k, j, i in the mask
    hi = np.ceil(ijk.max(axis=0)).astype(int)[::-1] + 1 - np.array(s.offset)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, s.mask.shape)
    if np.any(hi <= lo):
        return None
    sub = s.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    kji = np.argwhere(sub)
    if not len(kji):
        return None
    kji += lo + np.array(s.offset)
    pts = kji[:, ::-1].astype(float) @ aff[:3, :3].T + aff[:3, 3]
    d = float(segment_distance(pts, a, b).min())
    return d if d <= within_mm else None


def verify_trajectory(traj: dict[str, Any], target: dict[str, Any], preset: Preset, side: str | None,
                      ct: Image, sset: StructureSet, body: np.ndarray, target_label: str = "") -> TrajectoryCheck:
    """Every hard constraint of one trajectory of ``plan.json``, re-derived (see the module)."""
    c = TrajectoryCheck(int(traj["rank"]), target_label=target_label)
    entry, tip = np.asarray(traj["entry"], float), np.asarray(traj["target"], float)
    if np.linalg.norm(tip - np.asarray(target["point"], float)) > 0.05:
        c.fail(f"its end {_fmt(tip)} is not the plan's target {_fmt(target['point'])}")
    vec = tip - entry
    depth = float(np.linalg.norm(vec))
    if depth < 1.0:
        c.fail(f"entry and target {depth:.2f} mm apart: not a needle path")
        return c
    d = vec / depth

    # Depth and needle: the catalogue's, and one that reaches with the reserve kept outside.
    if depth > preset.max_depth_mm + 1e-6:
        c.fail(f"depth {depth:.1f} mm beyond the {preset.max_depth_mm:g} mm any needle of {preset.id} reaches")
    n = traj.get("needle", {})
    known = [x for x in preset.needles if x.gauge == n.get("gauge") and abs(x.length_mm - float(n.get("length_mm", -1))) < 1e-6
             and ("outer_diameter_mm" not in n or abs(x.outer_diameter_mm - float(n["outer_diameter_mm"])) < 1e-6)]
    if not known:
        c.fail(f"needle {n.get('gauge')} {n.get('length_mm')} mm is not in the catalogue of {preset.id}")
    elif known[0].length_mm - preset.needle_reserve_mm < depth - 1e-6:
        c.fail(f"needle {known[0].gauge} {known[0].length_mm:g} mm does not reach {depth:.1f} mm with "
               f"{preset.needle_reserve_mm:g} mm kept outside the skin")
    if abs(float(traj["length_mm"]) - depth) > PRINT_TOLERANCE:
        c.fail(f"depth printed {traj['length_mm']} mm, the entry and target are {depth:.1f} mm apart")

    # Angles: the gantry's limit, and what is printed.
    cc = float(np.degrees(np.arcsin(np.clip(d[2], -1, 1))))
    if abs(cc) > preset.max_craniocaudal_deg + 1e-6:
        c.fail(f"craniocaudal angle {cc:+.1f} deg beyond the {preset.max_craniocaudal_deg:g} deg limit")
    if "craniocaudal_deg" in traj and abs(float(traj["craniocaudal_deg"]) - cc) > PRINT_TOLERANCE:
        c.fail(f"craniocaudal angle printed {traj['craniocaudal_deg']} deg, the path's is {cc:+.1f} deg")
    vert = float(np.degrees(np.arctan2(abs(d[0]), abs(d[1]))))
    if "angle_from_vertical_deg" in traj and abs(float(traj["angle_from_vertical_deg"]) - vert) > PRINT_TOLERANCE:
        c.fail(f"angle from the vertical printed {traj['angle_from_vertical_deg']} deg, the path's is {vert:.1f} deg")

    # The entry: on the CT's skin; its normal gives the position and the insertion angle.
    normal = _skin_normal(entry, ct, body)
    if normal is None:
        c.fail(f"entry {_fmt(entry)} is not on the skin of this CT")
    else:
        position = preset.fixed_position or str(_position_of(normal[None])[0])
        if preset.fixed_position is None and position not in preset.positions:
            c.fail(f"entry faces up with the patient {position}, not one of {list(preset.positions)}")
        if traj.get("patient_position") not in (None, position):
            c.fail(f"patient position printed {traj.get('patient_position')}, the entry's skin needs {position}")
        skin_angle = float(np.degrees(np.arccos(np.clip(-(d @ normal), -1, 1))))
        if skin_angle > preset.max_angle_from_skin_normal_deg + 1e-6:
            c.fail(f"{skin_angle:.0f} deg from the skin normal, beyond {preset.max_angle_from_skin_normal_deg:g} deg")
    if preset.guidance == "us" and normal is not None:
        # the needle must lie in the plane of a probe placed on this CT's skin
        from .engine import prepare
        from .ultrasound import UltrasoundLimits, place_probes

        ctx = prepare(ct, sset, preset, tip, body)
        probe = place_probes(entry[None], normal[None], tip, ctx.skin_lps, ctx.skin_normal,
                             UltrasoundLimits.from_preset(preset.raw))[0]
        if probe is None:
            c.fail("no position of the ultrasound probe on the skin holds this needle in its plane "
                   "(target within the probe's depth, needle at a visible angle)")
    if preset.approach is not None:
        way = preset.approach.vector(side if side is not None else side_of_label(target_label))
        off = float(np.degrees(np.arccos(np.clip(-(d @ way), -1, 1))))
        if off > preset.approach.max_angle_deg + 1e-6:
            c.fail(f"{off:.0f} deg off the {preset.approach.id} approach, beyond {preset.approach.max_angle_deg:g} deg")

    # Clearance from every avoided structure, exactly; the thickest needle's radius added.
    radius = preset.needle_radius_mm
    for rule, names in rule_structures(sset, preset):
        need = rule.margin_mm + radius
        for name in names:
            dist = structure_distance(sset, name, entry, tip, max(need, 30.0))
            if dist is None:
                continue
            c.clearance_mm[name] = dist
            if dist < need - 1e-6:
                c.fail(f"{name} at {dist:.2f} mm, needs {need:.2f} mm ({rule.key}: margin {rule.margin_mm:g} mm "
                       f"+ needle radius {radius:.2f} mm)")
    for name, printed in (traj.get("clearance_mm") or {}).items():
        now = c.clearance_mm.get(name)
        if now is None:
            continue
        if float(printed) > now + 0.051:
            c.fail(f"clearance of {name} printed {printed} mm, it is {now:.2f} mm")
        elif now - float(printed) > 0.15:
            c.differs_from_plan.append(f"{name}: {now:.2f} mm now, {printed} mm in plan.json")
    return c


def _skin_normal(entry: np.ndarray, ct: Image, body: np.ndarray) -> np.ndarray | None:
    """The outward skin normal at ``entry`` when it lies on a skin voxel centre of ``body``, else None."""
    ijk = np.linalg.solve(np.asarray(ct.affine, float), np.append(entry, 1.0))[:3]
    kji = np.rint(ijk[::-1]).astype(np.int64)
    if np.any(kji < 0) or np.any(kji >= np.array(body.shape)):
        return None
    lo, hi = np.maximum(kji - 1, 0), np.minimum(kji + 2, body.shape)
    skin = F.skin_voxels(body, lo, hi)
    if not len(skin):
        return None
    lps = skin[:, ::-1].astype(float) @ np.asarray(ct.affine, float)[:3, :3].T + np.asarray(ct.affine, float)[:3, 3]
    dist = np.linalg.norm(lps - entry, axis=1)
    best = int(np.argmin(dist))
    if dist[best] > SKIN_TOLERANCE_VOXELS * float(np.min(ct.spacing)):
        return None
    g = -_smoothed_gradient_lps(body, skin[best:best + 1], ct.affine)[0]
    norm = float(np.linalg.norm(g))
    return g / norm if norm > 1e-6 else None


def _fmt(p: Any) -> str:
    return "(" + ", ".join(f"{float(x):.1f}" for x in p) + ")"
