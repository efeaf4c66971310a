"""Planned against actual: how far the needle in a check scan is from the plan (what to do about
it: :mod:`planner.checks.correct`).

Everything is in the planning CT's coordinates (LPS, mm): the needle found in the check scan is
first mapped through the registration (check -> planning). Definitions (the figures of
``check.json``):

- ``angle_deg``: the angle between the actual axis (hub end -> tip) and the planned one
  (entry -> target).
- ``lateral_offset_mm``: the distance of the actual tip from the planned line (the infinite line
  through entry and target).
- ``depth_reached_mm``: how deep the tip is along the plan: the projection of entry -> tip on the
  planned direction.
- ``remaining_mm``: planned depth minus depth reached (negative: the tip is past the target's
  depth).
- ``predicted_miss_mm``: if the needle is advanced (or withdrawn) along its current axis until its
  tip reaches the target's depth along the plan, how far it then is from the target.
- ``target_hit``: that predicted tip lies inside the target with a margin: at most the target's
  radius minus ``HIT_MARGIN_MM`` from its centre (a lesion of known size), or at most
  ``POINT_TOLERANCE_MM`` for a bare point target. Where the target is a segmented structure
  (a lesion, a recess's fluid), :func:`hit_structure` decides instead, on its voxels
  (``hit_by``: the structure's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: A predicted tip counts as in the lesion when it is this far inside the lesion's radius.
HIT_MARGIN_MM = 2.0
#: For a point target (no size known), the predicted tip must be this close to it.
POINT_TOLERANCE_MM = 2.0
#: On target: the tip this close (along the plan) to the target's depth needs no advance.
ON_DEPTH_MM = 1.0


@dataclass
class Deviation:
    """How the actual needle stands against the planned one (see the module for the definitions)."""

    angle_deg: float
    lateral_offset_mm: float
    depth_reached_mm: float
    remaining_mm: float
    predicted_tip_lps: np.ndarray
    predicted_miss_mm: float
    target_hit: bool
    hit_tolerance_mm: float
    hit_by: str = "sphere"  # "sphere": of the target's diameter (or a point's tolerance); else a structure's name

    def to_json(self) -> dict[str, Any]:
        return {"angle_deg": round(self.angle_deg, 2), "lateral_offset_mm": round(self.lateral_offset_mm, 2),
                "depth_reached_mm": round(self.depth_reached_mm, 1), "remaining_mm": round(self.remaining_mm, 1),
                "predicted_tip_lps": [round(float(x), 2) for x in self.predicted_tip_lps],
                "predicted_miss_mm": round(self.predicted_miss_mm, 2), "target_hit": self.target_hit,
                "hit_tolerance_mm": round(self.hit_tolerance_mm, 2), "hit_by": self.hit_by}


def deviation(entry: Any, target: Any, tip: Any, direction: Any, target_diameter_mm: float | None = None
              ) -> Deviation:
    """The deviation of a needle (``tip``, unit ``direction`` from hub to tip) from the plan
    ``entry`` -> ``target``; all LPS mm in the planning CT."""
    e, t, p = (np.asarray(x, float) for x in (entry, target, tip))
    u = np.asarray(direction, float)
    u = u / np.linalg.norm(u)
    planned = t - e
    depth = float(np.linalg.norm(planned))
    w = planned / depth
    angle = float(np.degrees(np.arccos(np.clip(u @ w, -1.0, 1.0))))
    rel = p - e
    along = float(rel @ w)
    lateral = float(np.linalg.norm(rel - along * w))
    # advance along u until the tip's projection on the plan reaches the target's depth
    cos = float(u @ w)
    if cos > 1e-6:
        step = (depth - along) / cos
        predicted = p + step * u
    else:  # the needle runs across or against the plan: advancing never reaches the target's depth
        predicted = p
    miss = float(np.linalg.norm(predicted - t))
    if target_diameter_mm:
        tol = max(0.5 * float(target_diameter_mm) - HIT_MARGIN_MM, 0.0)
    else:
        tol = POINT_TOLERANCE_MM
    hit = cos > 1e-6 and miss <= tol
    return Deviation(angle, lateral, along, depth - along, predicted, miss, hit, tol)


def direction_change(current: Any, wanted: Any) -> dict[str, float]:
    """How to turn a needle from direction ``current`` to ``wanted`` in the room's terms: the
    change of the craniocaudal angle (degrees, + toward the head) and of the in-plane angle in
    the axial plane (degrees, + toward the patient's left), as an operator tilts the needle."""
    c, n = (np.asarray(x, float) / np.linalg.norm(x) for x in (current, wanted))
    cc_c, cc_n = (float(np.degrees(np.arcsin(np.clip(v[2], -1, 1)))) for v in (c, n))
    # in-plane: the azimuth of the needle's axial projection, measured from its AP component
    def azimuth(v: np.ndarray) -> float:
        return float(np.degrees(np.arctan2(v[0], abs(v[1]) if abs(v[1]) > 1e-9 else 1e-9)))

    return {"craniocaudal_change_deg": cc_n - cc_c, "toward_left_change_deg": azimuth(n) - azimuth(c)}


def depth_inside(mask: np.ndarray, offset: Any, affine: Any, point: Any) -> float:
    """How deep (mm) ``point`` (LPS) lies inside a structure's mask (a crop at ``offset`` k, j, i
    of the grid ``affine``): the distance from its nearest voxel to the nearest voxel outside;
    0 outside the structure."""
    from scipy import ndimage

    a = np.asarray(affine, float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)  # i, j, k
    ijk = np.linalg.solve(a, np.append(np.asarray(point, float), 1.0))[:3]
    kji = np.rint(ijk[::-1]).astype(int) - np.asarray(offset, int) + 1
    padded = np.pad(np.asarray(mask, bool), 1)
    if np.any(kji < 0) or np.any(kji >= padded.shape) or not padded[tuple(kji)]:
        return 0.0
    edt = ndimage.distance_transform_edt(padded, sampling=spacing[::-1])
    return float(edt[tuple(kji)])


def hit_structure(dev: Deviation, structure: Any, affine: Any, target: Any) -> Deviation:
    """``dev`` with ``target_hit`` decided on the target structure's voxels: the predicted tip
    must lie inside it by ``HIT_MARGIN_MM`` or, for a thin structure (a recess), by half the
    depth at which the planned target lies in it."""
    planned_depth = depth_inside(structure.mask, structure.offset, affine, target)
    need = min(HIT_MARGIN_MM, 0.5 * planned_depth)
    got = depth_inside(structure.mask, structure.offset, affine, dev.predicted_tip_lps)
    cos_ok = dev.angle_deg < 90.0 - 1e-6
    hit = bool(cos_ok and got > 0.0 and got >= need)
    from dataclasses import replace

    return replace(dev, target_hit=hit, hit_tolerance_mm=need, hit_by=str(structure.name))
