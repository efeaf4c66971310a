"""Pure geometry of the procedure-room views (numpy only): planes, screen axes, angles.

A view is described by a ``ViewFrame``: the direction of projection (``dop``, the way the
viewer looks), the screen's up and right axes, all unit vectors in LPS, and the focal point.
``right = dop x up`` (VTK's camera convention), so a frame is a proper rotation.

Display conventions (radiological, as :mod:`planner.images.reslice`): axial seen from the feet
(patient's left on the image's right, anterior up); coronal seen from the front; sagittal seen
from the patient's left (anterior on the left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..anatomy.structures import StructureSet

X, Y, Z = np.eye(3)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-12:
        raise ValueError("zero-length vector")
    return np.asarray(v, float) / n


@dataclass(frozen=True)
class ViewFrame:
    """Where a 2D view looks: focal point (LPS mm), direction of projection, screen up/right."""

    focal: np.ndarray
    dop: np.ndarray
    up: np.ndarray

    @property
    def right(self) -> np.ndarray:
        return np.cross(self.dop, self.up)

    @property
    def down(self) -> np.ndarray:
        return -self.up

    def to_screen(self, points: np.ndarray) -> np.ndarray:
        """LPS points (n, 3) -> (right, up) mm from the focal point in the view plane, (n, 2)."""
        d = np.atleast_2d(points) - self.focal
        return np.c_[d @ self.right, d @ self.up]


def frame(focal: Sequence[float], dop: Sequence[float], up_hint: Sequence[float],
          fallback_up: Sequence[float] = (0.0, 0.0, 1.0)) -> ViewFrame:
    """A frame looking along ``dop`` with the screen's up as close as possible to ``up_hint``."""
    d = _unit(np.asarray(dop, float))
    for hint in (np.asarray(up_hint, float), np.asarray(fallback_up, float), X):
        u = hint - (hint @ d) * d
        if np.linalg.norm(u) > 1e-3 * max(np.linalg.norm(hint), 1e-12):
            return ViewFrame(np.asarray(focal, float), d, _unit(u))
    raise ValueError("no up direction")  # pragma: no cover - X is never parallel to both


#: The standard planes: direction of projection and screen up (radiological convention).
STANDARD = {
    "axial": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),  # from the feet, anterior up: patient left on screen right
    "coronal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # from the front, superior up
    "sagittal": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # from the patient's left, superior up: anterior on the left
}


def standard_frame(plane: str, focal: Sequence[float]) -> ViewFrame:
    dop, up = STANDARD[plane]
    return frame(focal, dop, up)


#: The patient direction of each end of the LPS axes, ``(axis, sign) -> letter`` (S/I for the head and
#: the feet); :data:`HEAD_FOOT` says H/F instead, as DICOM's Patient Orientation does.
LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
HEAD_FOOT = {**LETTERS, (2, 1): "H", (2, -1): "F"}


def orientation_letters(f: ViewFrame, letters: dict[tuple[int, int], str] = LETTERS) -> dict[str, str]:
    """Patient directions at the four edges of a view ('left', 'right', 'top', 'bottom'): the
    main direction of each, with the second one added where the view is oblique to it."""

    def word(v: np.ndarray) -> str:
        order = np.argsort(-np.abs(v))
        out = ""
        for ax in order[:2]:
            if abs(v[ax]) >= 0.38 or not out:
                out += letters[(int(ax), 1 if v[ax] > 0 else -1)]
        return out

    return {"right": word(f.right), "left": word(-f.right), "top": word(f.up), "bottom": word(-f.up)}


def planning_plane_normal(entry: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Normal of the plane that contains the needle and is closest to axial (pointing superior).

    It is the superior axis with its component along the needle removed; for a needle along
    the craniocaudal axis (no such plane is unique) the plane holding the AP axis is taken.
    """
    d = _unit(np.asarray(target, float) - np.asarray(entry, float))
    n = Z - (Z @ d) * d
    if np.linalg.norm(n) < 1e-6:
        n = np.cross(d, Y)
    n = _unit(n)
    return n if n[2] >= 0 else -n


def planning_frame(entry: np.ndarray, target: np.ndarray) -> ViewFrame:
    """The planning slice: the plane of the needle closest to axial, seen from the feet, anterior up."""
    n = planning_plane_normal(entry, target)
    mid = (np.asarray(entry, float) + np.asarray(target, float)) / 2.0
    return frame(mid, n, -Y, X)


def acquisition_frame(entry: np.ndarray, target: np.ndarray, slice_normal: np.ndarray) -> ViewFrame:
    """The planning slice of an MR: the plane of the needle closest to the acquisition plane
    (normal ``slice_normal``), superior (else anterior) up."""
    e, t = np.asarray(entry, float), np.asarray(target, float)
    d = _unit(t - e)
    a = np.asarray(slice_normal, float)
    n = a - (a @ d) * d
    if np.linalg.norm(n) < 1e-6:
        return planning_frame(e, t)
    n = _unit(n)
    if abs(n[0]) >= max(abs(n[1]), abs(n[2])):
        n = n if n[0] <= 0 else -n  # sagittal-like: from the patient's left, anterior on the left
    elif abs(n[1]) >= abs(n[2]):
        n = n if n[1] >= 0 else -n  # coronal-like: from the front
    else:
        n = n if n[2] >= 0 else -n  # axial-like: from the feet
    return frame((e + t) / 2.0, n, Z if abs(n[2]) < 0.9 else -Y)


def progression_frame(entry: np.ndarray, target: np.ndarray) -> ViewFrame:
    """The progression view: perpendicular to the needle and to the planning slice.

    It looks at the plane that holds the needle and the planning plane's normal (the second
    plane of the needle, closest to coronal or sagittal) the way a coronal view is seen (from
    the front) or a sagittal one (from the patient's left); superior is up.
    """
    e, t = np.asarray(entry, float), np.asarray(target, float)
    d = _unit(t - e)
    n = planning_plane_normal(e, t)
    dop = _unit(np.cross(d, n))
    if abs(dop[1]) >= abs(dop[0]):
        dop = dop if dop[1] >= 0 else -dop  # from the front, like a coronal view
    else:
        dop = dop if dop[0] <= 0 else -dop  # from the patient's left, like a sagittal view
    return frame((e + t) / 2.0, dop, n, Z)


def bullseye_frame(entry: np.ndarray, target: np.ndarray) -> ViewFrame:
    """Looking down the needle from the entry: entry over target, superior (else anterior) up."""
    e, t = np.asarray(entry, float), np.asarray(target, float)
    d = _unit(t - e)
    return frame(t, d, Z if abs(d[2]) < 0.95 else -Y, -Y)


@dataclass(frozen=True)
class NeedleAngles:
    """The angles a CT operator sets (CONVENTIONS.md).

    ``from_vertical_deg``: in the axial plane, between the needle's projection and the vertical
    (AP) axis, 0..90. ``craniocaudal_deg``: from the axial plane, signed: positive when the tip
    lies superior to the entry (the needle points cranially). ``depth_mm``: entry to target.
    """

    from_vertical_deg: float
    craniocaudal_deg: float
    depth_mm: float
    lateral: str  # 'left', 'right' or '' : where the needle's tip goes, seen from the entry
    vertical: str  # 'posterior', 'anterior' or ''

    def text(self) -> str:
        cc = "cranial" if self.craniocaudal_deg > 0 else "caudal"
        cct = f"{abs(self.craniocaudal_deg):.0f}\u00b0 {cc}" if abs(self.craniocaudal_deg) >= 0.5 else "0\u00b0 (in plane)"
        return (f"{self.from_vertical_deg:.0f}\u00b0 from vertical, {cct}, depth {self.depth_mm:.0f} mm")


def needle_angles(entry: np.ndarray, target: np.ndarray) -> NeedleAngles:
    v = np.asarray(target, float) - np.asarray(entry, float)
    length = float(np.linalg.norm(v))
    d = v / max(length, 1e-9)
    return NeedleAngles(
        from_vertical_deg=float(np.degrees(np.arctan2(abs(d[0]), abs(d[1])))),
        craniocaudal_deg=float(np.degrees(np.arcsin(np.clip(d[2], -1.0, 1.0)))),
        depth_mm=length,
        lateral="" if abs(d[0]) < 1e-6 else ("left" if d[0] > 0 else "right"),
        vertical="" if abs(d[1]) < 1e-6 else ("posterior" if d[1] > 0 else "anterior"),
    )


def depth_marks(entry: np.ndarray, target: np.ndarray, every_mm: float = 10.0) -> np.ndarray:
    """Points along the needle every ``every_mm`` from the skin entry (excluding the ends), (n, 3)."""
    e, t = np.asarray(entry, float), np.asarray(target, float)
    length = float(np.linalg.norm(t - e))
    k = np.arange(1, int(np.floor((length - 1e-6) / every_mm)) + 1)
    return e + (k * every_mm / max(length, 1e-9))[:, None] * (t - e)


def closest_points(sset: StructureSet, entry: np.ndarray, target: np.ndarray, names: Sequence[str],
                   within_mm: float = 40.0) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """For each named structure, its voxel centre closest to the needle segment.

    Returns name -> (point on the structure, closest point on the needle, distance mm); names
    absent from the set or farther than ``within_mm`` from the needle are left out.
    """
    e, t = np.asarray(entry, float), np.asarray(target, float)
    seg = t - e
    L2 = max(float(seg @ seg), 1e-12)
    a = sset.affine
    lo, hi = np.minimum(e, t) - within_mm, np.maximum(e, t) + within_mm
    inv = np.linalg.inv(a)
    out: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for name in names:
        if name not in sset:
            continue
        s = sset[name]
        # Only the voxels within the box around the needle.
        box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        ijk = np.c_[box, np.ones(8)] @ inv.T
        kji_lo = np.floor(ijk[:, 2::-1].min(axis=0)).astype(int) - np.array(s.offset)
        kji_hi = np.ceil(ijk[:, 2::-1].max(axis=0)).astype(int) + 1 - np.array(s.offset)
        kji_lo = np.clip(kji_lo, 0, s.mask.shape)
        kji_hi = np.clip(kji_hi, 0, s.mask.shape)
        sub = s.mask[kji_lo[0]:kji_hi[0], kji_lo[1]:kji_hi[1], kji_lo[2]:kji_hi[2]]
        idx = np.argwhere(sub)
        if len(idx) == 0:
            continue
        pts = (idx + kji_lo + np.array(s.offset))[:, ::-1] @ a[:3, :3].T + a[:3, 3]
        u = np.clip(((pts - e) @ seg) / L2, 0.0, 1.0)
        on_needle = e + u[:, None] * seg
        dist = np.linalg.norm(pts - on_needle, axis=1)
        b = int(np.argmin(dist))
        if dist[b] <= within_mm:
            out[name] = (pts[b], on_needle[b], float(dist[b]))
    return out
