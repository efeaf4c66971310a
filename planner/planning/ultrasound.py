"""Ultrasound guidance: a virtual linear probe whose imaging plane holds the whole needle.

Under ultrasound the needle is advanced *in plane*: it enters the skin just beyond one end of
a linear probe and runs, seen along its whole length, down to the target under the probe's
footprint. For a straight path from entry E to target T this module finds where that probe
goes (or says that no place works), with the preset's limits:

* the imaging plane contains the needle and the skin normal at the entry (the plane an
  operator tilts the probe into when the needle comes in beside it);
* the probe sits on the skin, in that plane, looking along the inward skin normal (rocked up
  to 20 degrees so that its plane holds the needle); T lies
  under its footprint (within half the probe length, less a 2 mm rim, along the probe's
  long axis) and no deeper than the preset's ultrasound depth;
* E lies beyond the probe's end (at least half the probe length plus 2 mm from its centre
  along the long axis), on the side it points to;
* the needle meets the skin at an angle within the preset's in-plane range (shallow enough to
  be seen, steep enough to reach).

Everything is in LPS mm. The probe's orientation marker points towards the needle's entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RIM_MM = 2.0  # a target closer than this to the probe's end is not reliably in the image
PLANE_TOL_MM = 1.0  # skin points this close to the plane count as in it
MAX_TILT_DEG = 20.0  # the probe may be rocked this far off the skin normal (gel keeps contact)


@dataclass(frozen=True)
class UltrasoundLimits:
    probe_length_mm: float = 40.0  # footprint of a linear MSK probe
    max_depth_mm: float = 60.0  # deepest target shown sharply
    min_needle_angle_deg: float = 15.0  # angle between needle and skin: below, the needle is
    max_needle_angle_deg: float = 60.0  # hard to advance; above, it reflects too little to be seen

    @classmethod
    def from_preset(cls, raw: dict[str, Any]) -> "UltrasoundLimits":
        us = raw.get("ultrasound", {}) or {}
        return cls(**{k: float(v) for k, v in us.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ProbePlacement:
    centre: np.ndarray  # where the middle of the probe face touches the skin, LPS
    long_axis: np.ndarray  # unit, in the skin's tangent plane, towards the needle's entry (the marker)
    plane_normal: np.ndarray  # unit normal of the imaging plane
    looking: np.ndarray  # unit, into the patient
    target_depth_mm: float  # along ``looking`` from the probe face
    target_offset_mm: float  # along the long axis, from the probe centre (negative: away from the entry)
    entry_offset_mm: float  # the entry along the long axis
    needle_angle_deg: float  # between needle and skin at the entry

    def to_dict(self) -> dict[str, Any]:
        r = lambda v: [round(float(x), 2) for x in v]  # noqa: E731
        return {
            "centre": r(self.centre), "long_axis_towards_entry": r(self.long_axis),
            "plane_normal": r(self.plane_normal), "looking": r(self.looking),
            "target_depth_mm": round(self.target_depth_mm, 1), "target_offset_mm": round(self.target_offset_mm, 1),
            "entry_from_probe_centre_mm": round(self.entry_offset_mm, 1),
            "needle_angle_to_skin_deg": round(self.needle_angle_deg, 1),
        }


def place_probes(entries: np.ndarray, normals: np.ndarray, target: np.ndarray, skin: np.ndarray,
                 skin_normals: np.ndarray, limits: UltrasoundLimits, chunk: int = 64) -> list[ProbePlacement | None]:
    """A probe placement for each path entry -> target, or None where no probe position works.

    Parameters
    ----------
    entries, normals : (n, 3)
        Skin entry points and their outward skin normals.
    target : (3,)
    skin, skin_normals : (m, 3)
        Skin points where a probe may sit, and their outward normals.
    """
    entries = np.asarray(entries, float)
    t = np.asarray(target, float)
    half = limits.probe_length_mm / 2.0
    near = np.linalg.norm(skin - t, axis=1) <= limits.max_depth_mm + half
    s, sn = skin[near], skin_normals[near]
    out: list[ProbePlacement | None] = [None] * len(entries)
    if not len(s) or not len(entries):
        return out
    d = t - entries
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    angle = 90.0 - np.degrees(np.arccos(np.clip(-(d * normals).sum(axis=1), -1, 1)))  # needle to skin
    m = np.cross(d, normals)
    m_norm = np.linalg.norm(m, axis=1)
    ok = (angle >= limits.min_needle_angle_deg) & (angle <= limits.max_needle_angle_deg) & (m_norm > 1e-6)
    idx = np.flatnonzero(ok)
    m[idx] /= m_norm[idx, None]
    v = t - s  # (k, 3) probe points -> target
    cos_tilt = np.cos(np.radians(MAX_TILT_DEG))
    for lo in range(0, len(idx), chunk):
        c = idx[lo:lo + chunk]
        mc = m[c, None, :]  # (q, 1, 3)
        in_plane = np.abs(((s[None, :, :] - t) * mc).sum(axis=2)) <= PLANE_TOL_MM  # (q, k)
        # The probe is rocked until its plane holds the needle: its view is the skin normal
        # projected into the needle's plane, allowed up to MAX_TILT_DEG off the normal.
        sn_p = sn[None] - (sn[None] * mc).sum(axis=2, keepdims=True) * mc
        sn_len = np.linalg.norm(sn_p, axis=2)
        looking = -sn_p / np.maximum(sn_len, 1e-9)[..., None]
        axis = np.cross(np.broadcast_to(mc, looking.shape), looking)  # in the plane, along the probe face
        e_off = ((entries[c, None, :] - s[None]) * axis).sum(axis=2)
        axis *= np.where(e_off < 0, -1.0, 1.0)[..., None]  # point the marker towards the entry
        e_off = np.abs(e_off)
        t_off = (v[None] * axis).sum(axis=2)
        depth = (v[None] * looking).sum(axis=2)
        good = in_plane & (sn_len >= cos_tilt) & (depth > 0) & (depth <= limits.max_depth_mm) \
            & (np.abs(t_off) <= half - RIM_MM) & (e_off >= half + RIM_MM)
        for row, cand in enumerate(c):
            k = np.flatnonzero(good[row])
            if not len(k):
                continue
            best = k[np.lexsort((depth[row, k], np.abs(t_off[row, k])))[0]]  # target centred, then shallow
            out[cand] = ProbePlacement(
                centre=s[best], long_axis=axis[row, best], plane_normal=m[cand], looking=looking[row, best],
                target_depth_mm=float(depth[row, best]), target_offset_mm=float(t_off[row, best]),
                entry_offset_mm=float(e_off[row, best]), needle_angle_deg=float(angle[cand]),
            )
    return out


def probe_plane_image(image: Any, probe: ProbePlacement, entry: np.ndarray, target: np.ndarray,
                      width_mm: float = 80.0, depth_mm: float = 70.0, pixel_mm: float = 0.25
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The CT (or MR) resampled in the probe's plane, as the ultrasound image would frame it.

    Returns (pixels (rows, cols), to_lps (3, 3)) like :func:`planner.images.reslice.plane_through`:
    columns run along the probe's long axis (the entry on the right), rows into the patient.
    """
    from scipy import ndimage

    right, down = probe.long_axis, probe.looking
    origin = probe.centre - (width_mm / 2.0) * right - 5.0 * down  # 5 mm of air above the skin
    ncols, nrows = int(width_mm / pixel_mm) + 1, int((depth_mm + 5.0) / pixel_mm) + 1
    cc, rr = np.meshgrid(np.arange(ncols), np.arange(nrows))
    pts = origin + cc[..., None] * pixel_mm * right + rr[..., None] * pixel_mm * down
    ijk = image.lps_to_ijk(pts.reshape(-1, 3))
    vals = ndimage.map_coordinates(image.voxels, ijk[:, ::-1].T, order=1, mode="constant",
                                   cval=float(image.voxels.min()))
    return vals.reshape(nrows, ncols), np.column_stack([pixel_mm * right, pixel_mm * down, origin])
