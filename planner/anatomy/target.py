"""The target of a procedure: a point, a named structure, or a lesion grown from a seed point.

Whatever the form, a target ends as one LPS point the needle tip aims at, plus (for a
structure or a lesion) its mask, volume and diameter for the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..images import Image
from ..images.geometry import spacing as grid_spacing
from .structures import Structure, StructureSet

_POINT = re.compile(r"^\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*,\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*,\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*$")


def parse_point(text: str) -> np.ndarray:
    """``"X,Y,Z"`` in LPS mm -> array (3,). Negative values are common (``-82,82,-8``)."""
    m = _POINT.match(text or "")
    if not m:
        raise InputError(f"target {text!r}: expected three numbers X,Y,Z in LPS millimetres, e.g. -82,82,-8")
    return np.array([float(g) for g in m.groups()])


@dataclass(frozen=True)
class Target:
    """Where the needle tip goes.

    ``point`` is LPS mm. ``structure`` (cropped, on the CT grid) is set for a named structure or
    a segmented lesion, with ``volume_ml``, ``diameter_mm`` (equivalent sphere) and
    ``max_diameter_mm`` (largest extent).
    """

    point: tuple[float, float, float]
    label: str
    how: str
    structure: Structure | None = None
    volume_ml: float | None = None
    diameter_mm: float | None = None
    max_diameter_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"point": [round(float(x), 2) for x in self.point], "label": self.label, "how": self.how}
        for key in ("volume_ml", "diameter_mm", "max_diameter_mm"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(float(value), 2)
        return out


def _check_inside(ct: Image, point: np.ndarray, what: str) -> None:
    if not ct.contains_lps(point):
        lo, hi = ct.corners().min(axis=0), ct.corners().max(axis=0)
        raise InputError(
            f"{what} {np.round(point, 1).tolist()} (LPS mm) lies outside the scan "
            f"(LPS {np.round(lo, 1).tolist()} .. {np.round(hi, 1).tolist()} mm)"
        )


def target_at_point(ct: Image, point: Sequence[float], label: str = "target") -> Target:
    """A bare point target (LPS mm); refused outside the scan."""
    p = np.asarray(point, float)
    _check_inside(ct, p, "target")
    return Target(tuple(float(x) for x in p), label, "point")  # type: ignore[arg-type]


def _deepest_point(s: Structure, affine: np.ndarray) -> np.ndarray:
    """LPS centre of the voxel farthest inside a structure (its centre, for a round lesion)."""
    from scipy import ndimage

    sp = grid_spacing(affine)
    depth = ndimage.distance_transform_edt(np.pad(s.mask, 1), sampling=sp[::-1])[1:-1, 1:-1, 1:-1]
    kji = np.array(np.unravel_index(int(np.argmax(depth)), s.mask.shape)) + np.asarray(s.offset)
    a = np.asarray(affine, float)
    return a[:3, :3] @ kji[::-1] + a[:3, 3]


def _structure_target(ct: Image, sset: StructureSet, s: Structure, how: str) -> Target:
    from .autoseg import lesion_measurements

    size = lesion_measurements(s.full(sset.shape), ct)  # type: ignore[arg-type]
    point = _deepest_point(s, sset.affine)
    return Target(tuple(float(x) for x in point), s.name, how, s,  # type: ignore[arg-type]
                  size["volume_ml"], size["diameter_mm"], size["max_diameter_mm"])


def target_from_structure(ct: Image, sset: StructureSet, name: str) -> Target:
    """The deepest point inside a named structure (its centre, for a round lesion)."""
    if name not in sset:
        have = ", ".join(sorted(s.name for s in sset if s.cls.value in ("target", "fluid"))) or "none"
        raise InputError(f"target structure {name!r} is not in the structure set (targets and fluids there: {have})")
    return _structure_target(ct, sset, sset[name], "structure")


def target_from_seed(ct: Image, seed: Sequence[float], label: str = "lesion", max_radius_mm: float = 40.0) -> Target:
    """Segment the lesion (nodule, mass, collection) around a seed point and aim at its centre."""
    from .autoseg import segment_lesion

    p = np.asarray(seed, float)
    _check_inside(ct, p, "seed point")
    mask = segment_lesion(ct, p, max_radius_mm=max_radius_mm)
    if mask is None or not np.any(mask):
        raise InputError(f"no lesion found around the seed point {np.round(p, 1).tolist()} (LPS mm)")
    sset = StructureSet.for_image(ct)
    s = sset.add(label, mask, cls="target", source=f"grown from seed {np.round(p, 1).tolist()}")
    assert s is not None
    return _structure_target(ct, sset, s, "seed")


#: A lesion grown from a seed larger than this (ml) is said to be unusual for a biopsy target.
LARGE_LESION_ML = 50.0


def check_target(ct: Image, body: np.ndarray, target: Target) -> list[str]:
    """Refuse a target outside the body (InputError); warnings for a target that may not be meant.

    Returns the warnings: a lesion grown from a seed larger than :data:`LARGE_LESION_ML` (it may
    have leaked into a vessel, a wall or consolidated lung), a named target structure that is not
    a lesion or a collection (an organ, a vessel, a bone: the needle would aim at its deepest
    point).
    """
    p = np.asarray(target.point, float)
    kji = np.rint(ct.lps_to_ijk(p)[::-1]).astype(int)
    inside = bool(np.all(kji >= 0) and np.all(kji < np.array(body.shape)) and body[tuple(kji)])
    if not inside:
        raise InputError(f"target {target.label} at LPS {np.round(p, 1).tolist()} mm is outside the body on this "
                         "scan (in air): nothing to plan to; check the coordinates are LPS, not RAS")
    out = []
    if target.how == "seed" and (target.volume_ml or 0.0) > LARGE_LESION_ML:
        out.append(f"the lesion grown from the seed is {target.volume_ml:.0f} ml ({target.max_diameter_mm or 0:.0f} mm "
                   f"across), larger than most biopsy targets: check on the CT that it did not grow into a vessel, "
                   "the chest wall or consolidated lung; the needle aims at its deepest point")
    if target.how == "structure" and target.structure is not None and \
            target.structure.cls.value not in ("target", "fluid"):
        out.append(f"target {target.label} is a structure of class {target.structure.cls.value}, not a lesion or a "
                   "collection: the needle aims at its deepest point; check this is the intended target")
    return out


def check_structures_fit(sset: StructureSet, body: np.ndarray, source: str) -> list[str]:
    """Refuse structures that do not lie in this scan's body (another patient's or scan's, or on
    a grid placed wrongly); a warning when a large share of them lies outside it."""
    total = inside = 0
    for s in sset:
        n = s.voxel_count
        if not n:
            continue
        total += n
        inside += int(np.count_nonzero(s.mask & body[s.bbox()]))
    if total == 0:
        return []
    share = inside / total
    if share < 0.05:
        raise InputError(f"{source}: {100 * (1 - share):.0f} % of the structures' voxels lie outside the body on this "
                         "CT: they belong to another scan or patient (or the CT is not theirs)")
    if share < 0.8:
        return [f"{source}: {100 * (1 - share):.0f} % of the structures' voxels lie outside the body on this CT: "
                "check that they belong to this scan"]
    return []
