"""Exact clearances, the limiting structure and the risk factors of the chosen trajectories.

Everything here is computed for a handful of trajectories, exactly: distances from points
every 0.25 mm along the needle axis to the centres of every structure's voxels.
"""

from __future__ import annotations

import math

import numpy as np

from ..anatomy.registry import StructureClass
from ..anatomy.structures import StructureSet
from .engine import Trajectory
from .presets import Preset

REPORT_WITHIN_MM = 30.0
_TRAVERSED = {StructureClass.BODY, StructureClass.LUNG, StructureClass.LOBE, StructureClass.MUSCLE,
              StructureClass.TARGET, StructureClass.FISSURE, StructureClass.EMPHYSEMA}


def exact_clearances(sset: StructureSet, entry: np.ndarray, target: np.ndarray, target_name: str = "",
                     step_mm: float = 0.25) -> dict[str, float]:
    """Smallest distance (mm) from the needle axis to each structure within 30 mm of it."""
    from scipy.spatial import cKDTree

    a = sset.affine
    length = float(np.linalg.norm(target - entry))
    m = max(int(np.ceil(length / step_mm)) + 1, 2)
    samples = entry + np.linspace(0.0, 1.0, m)[:, None] * (target - entry)
    lo, hi = samples.min(axis=0) - REPORT_WITHIN_MM, samples.max(axis=0) + REPORT_WITHIN_MM
    out: dict[str, float] = {}
    for s in sset:
        if s.cls in _TRAVERSED or s.name == target_name:
            continue
        # Quick rejection by the structure's bounding box in LPS.
        sh = np.array(s.mask.shape)
        corners = np.array([[i, j, k] for i in (0, sh[2] - 1) for j in (0, sh[1] - 1) for k in (0, sh[0] - 1)], float)
        corners += np.array(s.offset[::-1], float)
        box = corners @ a[:3, :3].T + a[:3, 3]
        if np.any(box.max(axis=0) < lo) or np.any(box.min(axis=0) > hi):
            continue
        pts = (np.argwhere(s.mask) + np.array(s.offset))[:, ::-1] @ a[:3, :3].T + a[:3, 3]
        d, _ = cKDTree(pts).query(samples, distance_upper_bound=REPORT_WITHIN_MM)
        dmin = float(np.min(d))
        if np.isfinite(dmin):
            out[s.name] = dmin
    return out


def describe(traj: Trajectory, sset: StructureSet, preset: Preset, target_name: str,
             target_diameter_mm: float | None) -> None:
    """Fill ``clearance_mm``, ``limiting`` and ``risk_factors`` of a trajectory in place."""
    traj.clearance_mm = exact_clearances(sset, traj.entry, traj.target, target_name)
    named = {r.name: r for r in preset.avoid if r.name}
    by_class = {r.cls: r for r in preset.avoid if r.cls is not None}
    worst = None
    for name, d in traj.clearance_mm.items():
        rule = named.get(name) or (by_class.get(sset[name].cls) if name in sset else None)
        if rule is None:
            continue
        excess = d - rule.margin_mm
        if worst is None or excess < worst[0]:
            worst = (excess, name, d, rule.margin_mm)
    if worst is not None:
        # rounded down, as plan.json's clearances: never more than measured, and the same figure
        traj.limiting = f"closest: {worst[1]} at {math.floor(worst[2] * 10.0) / 10.0:.1f} mm (margin {worst[3]:g} mm)"
    else:
        traj.limiting = f"no avoided structure within {REPORT_WITHIN_MM:g} mm"
    traj.risk_factors = lung_risk_factors(traj, target_diameter_mm) if preset.id == "lung-biopsy" else []
    traj.risk_factors += tendon_factors(traj, sset)


def tendon_factors(traj: Trajectory, sset: StructureSet) -> list[str]:
    """The tendons of the structure set a path crosses (within 0.5 mm of the axis: the needle's own
    radius and a voxel's rounding), and how far it passes from the others; nothing when the set has
    no tendon."""
    tendons = [s.name for s in sset if s.cls == StructureClass.TENDON]
    if not tendons:
        return []
    crossed = [n for n in tendons if traj.clearance_mm.get(n, math.inf) < 0.5]
    near = ", ".join(f"{n} {math.floor(traj.clearance_mm[n] * 10.0) / 10.0:.1f} mm"
                     for n in tendons if n not in crossed and n in traj.clearance_mm)
    head = f"tendons crossed: {', '.join(crossed)}" if crossed else "tendons crossed: none"
    return [head + (f" (nearest: {near})" if near else f" (none within {REPORT_WITHIN_MM:g} mm)")]


#: Unidentified dense tissue along a path is named from this length on (mm; shorter runs are
#: the partial volume of small vessels beside the path).
UNIDENTIFIED_REPORT_MM = 2.0


def lung_risk_factors(traj: Trajectory, target_diameter_mm: float | None) -> list[str]:
    """Pneumothorax risk factors a lung-biopsy path carries, with the published odds ratios.

    Odds ratios from Huo et al., Br J Radiol 2020 (meta-analysis, PMC7362905). No probability is
    computed: the factors are listed for the operator to weigh.
    """
    m = traj.metrics
    out = []
    if m.get("lung_mm", 0) > 0:
        out.append(f"aerated lung crossed: {m['lung_mm']:.0f} mm")
    if m.get("lung_mm", 0) >= 30:
        out.append("lesion 3 cm or more from the pleura along the needle (OR 2.38)")
    if m.get("fissures", 0) >= 1:
        out.append(f"fissure crossed: {int(m['fissures'])} (OR 3.75)")
    if m.get("lung_mm_fissures_unknown", 0) > 0:
        out.append(f"fissures not known along {m['lung_mm_fissures_unknown']:.0f} mm of lung (its fissures were "
                   "not found): crossings there are not counted")
    if m.get("unidentified_tissue_mm", 0) >= UNIDENTIFIED_REPORT_MM:
        out.append(f"dense tissue in no segmented structure on the lung stretch: {m['unidentified_tissue_mm']:.0f} mm "
                   "(a vessel not segmented? check it on the CT)")
    if m.get("emphysema_mm", 0) > 0:
        out.append(f"emphysema/bulla crossed: {m['emphysema_mm']:.0f} mm below -950 HU (bulla crossed OR 6.13)")
    if m.get("pleura_crossings", 0) > 1:
        out.append(f"{int(m['pleura_crossings'])} pleural punctures (multiple punctures OR 2.43)")
    if m.get("pleura_angle_deg", 0) > 30:
        out.append(f"needle {m['pleura_angle_deg']:.0f} degrees off perpendicular to the pleura")
    if target_diameter_mm is not None and target_diameter_mm < 40:
        out.append(f"lesion smaller than 4 cm ({target_diameter_mm:.0f} mm; OR 2.09)")
    gauge = traj.needle.gauge.rstrip("G")
    if gauge.isdigit() and int(gauge) <= 18:
        out.append(f"needle {traj.needle.gauge} (18 G or larger: OR 1.55)")
    return out
