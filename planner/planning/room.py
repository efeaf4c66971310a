"""The chosen trajectories in the terms the CT room uses, computed once and stored in ``plan.json``.

What the room needs to place a needle (see shared/design/CLINICAL.md, "Room habits"):

- **table position**: the CT table position selects the slice. We give the LPS z (superior) of
  the entry and of the target, which is the slice location a scanner shows for a patient
  scanned feet- or head-first without gantry tilt, and the index of the nearest slice.
- **entry point on the skin**: measured on the entry's axial slice from a line the operator can
  find by palpation and with the laser: for a supine or prone patient the **midline** (sternum or
  spinous processes), taken as the left-right centre of the body on that slice; for a decubitus
  patient the **mid-axillary line**, taken as the anterior-posterior centre of the body on that
  slice. Offsets are straight lines in the axial plane (a tape on a curved skin reads slightly
  more). The skin grid, once placed and scanned, gives the same point in the room.
- **angles**: from ``plan.json`` (in-plane angle from the AP axis, craniocaudal angle from the
  axial plane); for a decubitus patient the AP axis is horizontal in the room, so the angle from
  the room's vertical is given as well.

Every value is in mm or degrees, rounded to 0.1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..images import Image

DEFINITION = (
    "table position: LPS z (superior) of the slice; entry offset: on the entry's axial slice, from the "
    "midline (left-right centre of the body) for supine/prone, from the mid-axillary line (anterior-posterior "
    "centre of the body) for decubitus, straight in the axial plane"
)


def _slice_body(ct: Image, body: np.ndarray, k: int) -> np.ndarray | None:
    """LPS positions (n, 3) of the largest body component's voxels on slice ``k``, or None."""
    sl = np.asarray(body[k], bool)
    if not sl.any():
        return None
    lab, n = ndimage.label(sl)
    if n > 1:
        sizes = ndimage.sum_labels(sl, lab, index=np.arange(1, n + 1))
        sl = lab == (1 + int(np.argmax(sizes)))
    jj, ii = np.nonzero(sl)
    ijk = np.column_stack([ii, jj, np.full(len(ii), k)]).astype(float)
    return ct.ijk_to_lps(ijk)


def _r(x: float) -> float:
    return round(float(x), 1)


def room_terms(traj: dict[str, Any], ct: Image, body: np.ndarray) -> dict[str, Any]:
    """Room terms of one trajectory of ``plan.json`` (a dict with ``entry``, ``target``, angles).

    Parameters
    ----------
    traj : dict
        One element of ``plan.json["trajectories"]``.
    ct : Image
        The planning CT.
    body : ndarray of bool, shape ``ct.shape``
        The body mask (skin inwards).
    """
    entry = np.asarray(traj["entry"], float)
    target = np.asarray(traj["target"], float)
    nk = ct.shape[0]
    k_entry = int(np.clip(np.rint(ct.lps_to_ijk(entry)[2]), 0, nk - 1))
    k_target = int(np.clip(np.rint(ct.lps_to_ijk(target)[2]), 0, nk - 1))
    out: dict[str, Any] = {
        "entry_table_z_mm": _r(entry[2]),
        "target_table_z_mm": _r(target[2]),
        "entry_slice_index": k_entry,
        "target_slice_index": k_target,
        "table_move_entry_to_target_mm": _r(target[2] - entry[2]),
    }
    pts = _slice_body(ct, body, k_entry)
    if pts is not None:
        mid_x = 0.5 * (pts[:, 0].min() + pts[:, 0].max())
        mid_y = 0.5 * (pts[:, 1].min() + pts[:, 1].max())
        out["midline_x_mm"] = _r(mid_x)
        out["midaxillary_y_mm"] = _r(mid_y)
        out["entry_from_midline_mm"] = _r(entry[0] - mid_x)  # + toward the patient's left
        out["entry_from_midaxillary_mm"] = _r(entry[1] - mid_y)  # + toward posterior
    d = target - entry
    position = str(traj.get("patient_position", ""))
    if position.startswith("decubitus"):
        out["angle_from_room_vertical_deg"] = _r(np.degrees(np.arctan2(abs(d[1]), abs(d[0]))))
    else:
        out["angle_from_room_vertical_deg"] = _r(np.degrees(np.arctan2(abs(d[0]), abs(d[1]))))
    out["needle_toward"] = direction_words(d)
    needle_len = float(traj.get("needle", {}).get("length_mm", 0) or 0)
    if needle_len:
        out["needle_outside_skin_mm"] = _r(needle_len - float(traj["length_mm"]))
    return out


def direction_words(d: np.ndarray) -> str:
    """Where the needle tip heads, in patient terms: e.g. 'left, posterior, caudal'."""
    words = []
    for value, plus, minus in ((d[0], "left", "right"), (d[1], "posterior", "anterior"),
                               (d[2], "cranial", "caudal")):
        if abs(value) > 1e-6 * max(float(np.linalg.norm(d)), 1.0) and abs(value) >= 0.05 * np.linalg.norm(d):
            words.append(plus if value > 0 else minus)
    return ", ".join(words) or "none"


def add_room_terms(doc: dict[str, Any], ct: Image, body: np.ndarray) -> dict[str, Any]:
    """Store the room terms in every trajectory of ``doc`` (in place) and return ``doc``."""
    for t in doc.get("trajectories", []):
        t["room"] = room_terms(t, ct, body)
    for block in doc.get("targets", []):  # a plan of several targets: each block's trajectories too
        for t in block.get("trajectories", []):
            t["room"] = room_terms(t, ct, body)
    doc["room_definition"] = DEFINITION
    return doc
