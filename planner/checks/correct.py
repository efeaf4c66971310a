"""The correction to make after a check scan, chosen in the order an operator would try it, each
step checked against the plan's preset exactly as the planner checks a path:

1. **Advance or withdraw** along the current axis, when that brings the tip into the target
   (:func:`planner.checks.compare.deviation`) and the extension to the target's depth keeps
   every structure at risk beyond its margin plus the needle's radius.
2. **Withdraw and redirect** from the current skin puncture: the tip is withdrawn to a pivot
   depth, the needle turned toward the target and advanced. The pivot is
   :data:`PIVOT_DEPTH_MM` under the skin (or the tip's depth, when shallower); on a path
   through aerated lung it stays :data:`PLEURA_STANDOFF_MM` short of the pleura, in the chest
   wall, because a needle turned inside the lung tears it (and the operator is told that a
   needle already through the pleura then punctures it a second time, a pneumothorax risk
   factor, OR 2.43 in Huo et al. 2020). Taken when the turn is at most
   :data:`MAX_REDIRECT_DEG`, the new line keeps the preset's craniocaudal limit and total
   depth, and the new stretch pivot -> target clears every structure at risk (the track from
   the skin to the pivot is already there: its clearance is reported, not re-decided).
3. **A new trajectory from the current entry** (coaxial technique: the puncture is kept): the
   planner itself, with the same preset, checks and ranking as any plan, restricted to skin
   entries within :data:`ENTRY_NEAR_MM` of the current puncture
   (:meth:`planner.session.PlanningSession.plan` with ``entry_near``).
4. Otherwise **no safe correction**: the needle is to be withdrawn and the procedure
   re-planned, with the share of candidate entries each constraint ruled out.

Depths are along the needle from its skin puncture (where its line leaves the body outline
of the planning CT); angles are in the room's terms (see :mod:`planner.planning.room`).
:data:`MAX_REDIRECT_DEG`, :data:`PIVOT_DEPTH_MM` and :data:`ENTRY_NEAR_MM` are this product's
choices, not published figures: a needle held in 1-2 cm of tissue turns by a few degrees; a
larger turn bends it, so a new line from the skin is planned instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..planning.verify import rule_structures, structure_distance
from .compare import ON_DEPTH_MM, Deviation, direction_change

#: Largest turn (degrees) of a needle withdrawn to its pivot; beyond it, a new line is planned.
MAX_REDIRECT_DEG = 10.0
#: Depth under the skin (mm) the tip is withdrawn to before it is turned.
PIVOT_DEPTH_MM = 15.0
#: On a path through aerated lung the pivot stays this far (mm) short of the pleura.
PLEURA_STANDOFF_MM = 5.0
#: The shallowest pivot (mm under the skin): shallower, the needle is not held by the tissue.
MIN_PIVOT_MM = 5.0
#: A new trajectory keeps the current skin puncture: entries within this distance (mm) of it.
ENTRY_NEAR_MM = 5.0
#: Clearances are measured to structures within this distance (mm); farther counts as this.
FAR_MM = 30.0
_LUNG_CLASSES = ("lung", "lobe", "emphysema")


@dataclass
class Correction:
    """What to do next, in words and numbers (mm along the needle, degrees in the room's terms)."""

    action: str  # "none" | "advance" | "withdraw" | "redirect" | "new_trajectory" | "no_safe_correction" | "rescan"
    text: str
    distance_mm: float = 0.0  # advance / withdraw along the current axis
    withdraw_to_mm: float | None = None  # redirect: the pivot depth under the skin
    redirect: dict[str, float] | None = None
    new_trajectory: dict[str, Any] | None = None
    considered: list[str] | None = None  # why the simpler corrections were not taken

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "text": self.text}
        if self.action in ("advance", "withdraw"):
            out["distance_mm"] = round(abs(self.distance_mm), 1)
        if self.withdraw_to_mm is not None:
            out["withdraw_to_mm"] = round(self.withdraw_to_mm, 1)
        if self.redirect:
            out["redirect"] = {k: round(v, 1) for k, v in self.redirect.items()}
        if self.new_trajectory is not None:
            out["new_trajectory"] = self.new_trajectory
        if self.considered:
            out["considered"] = list(self.considered)
        return out


def skin_puncture(body: np.ndarray, image: Any, tip: np.ndarray, u: np.ndarray, step: float = 0.25,
                  reach: float = 400.0) -> np.ndarray | None:
    """Where the needle's line (tip, unit ``u`` hub -> tip) leaves the body going back from the
    tip: the last point inside the body outline; None when the tip lies outside the body."""
    t = np.arange(0.0, reach, step)
    pts = tip[None, :] - t[:, None] * u[None, :]
    ijk = np.rint(image.lps_to_ijk(pts)).astype(int)
    shape = np.array(body.shape)[::-1]
    inside = np.all((ijk >= 0) & (ijk < shape), axis=1)
    val = np.zeros(len(t), bool)
    val[inside] = body[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
    if not val[0]:
        return None
    out = np.flatnonzero(~val)
    last = (out[0] - 1) if len(out) else len(t) - 1
    return pts[last]


def lung_entry_depth(structures: Any, image: Any, entry: np.ndarray, u: np.ndarray, depth: float,
                     step: float = 0.5) -> float | None:
    """Depth (mm from the skin puncture) where the needle first enters aerated lung; None when
    it does not within ``depth``."""
    names = [s.name for c in _LUNG_CLASSES for s in structures.by_class(c)]
    if not names or depth <= 0:
        return None
    t = np.arange(0.0, depth + step, step)
    pts = entry[None, :] + t[:, None] * u[None, :]
    ijk = np.rint(image.lps_to_ijk(pts)).astype(int)[:, ::-1]  # k, j, i
    hit = np.zeros(len(t), bool)
    for name in names:
        s = structures[name]
        loc = ijk - np.asarray(s.offset)
        ok = np.all((loc >= 0) & (loc < np.array(s.mask.shape)), axis=1)
        hit[ok] |= s.mask[loc[ok, 0], loc[ok, 1], loc[ok, 2]]
    first = np.flatnonzero(hit)
    return float(t[first[0]]) if len(first) else None


def clearances(structures: Any, preset: Any, pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]]
               ) -> dict[str, dict[str, Any]]:
    """For every structure at risk of the preset: its exact distance (mm) from each named set of
    segments (``pieces``: name -> [(a, b), ...]), the clearance needed (its rule's margin plus the
    needle's radius) and whether every piece keeps it. Structures farther than :data:`FAR_MM`
    from all of them are left out."""
    out: dict[str, dict[str, Any]] = {}
    radius = preset.needle_radius_mm
    for rule, names in rule_structures(structures, preset):
        for name in names:
            need = rule.margin_mm + radius
            row: dict[str, Any] = {}
            for key, segs in pieces.items():
                ds = [structure_distance(structures, name, a, b, FAR_MM) for a, b in segs
                      if np.linalg.norm(b - a) > 0.1]
                ds = [d for d in ds if d is not None]
                row[key] = min(ds) if ds else None
            if all(v is None for v in row.values()):
                continue
            row = {k: round(FAR_MM if v is None else float(v), 2) for k, v in row.items()}
            out[name] = {**row, "needed": round(need, 2), "ok": bool(all(v >= need for v in row.values()))}
    return out


def _below(c: dict[str, dict[str, Any]], key: str) -> list[str]:
    return [f"{n} {v[key]:.1f} mm (needs {v['needed']:.1f})" for n, v in sorted(c.items(), key=lambda kv: kv[1][key])
            if v[key] < v["needed"]]


def _deg(x: float) -> str:
    return f"{abs(x):.0f} degree{'' if round(abs(x)) == 1 else 's'}"


def room_angles(d: np.ndarray, position: str = "") -> dict[str, float]:
    """A direction in the room's terms, as the planner states a trajectory
    (:mod:`planner.planning.room`): in-plane angle from the AP axis, angle from the room's
    vertical for the patient's ``position`` (the AP axis is horizontal in decubitus), and
    craniocaudal angle (+ toward the head), degrees."""
    ap = float(np.degrees(np.arctan2(abs(d[0]), abs(d[1]))))
    room = float(np.degrees(np.arctan2(abs(d[1]), abs(d[0])))) if position.startswith("decubitus") else ap
    return {"angle_from_vertical_deg": ap, "angle_from_room_vertical_deg": room,
            "craniocaudal_deg": float(np.degrees(np.arcsin(np.clip(d[2], -1, 1))))}


def choose_correction(dev: Deviation, *, entry: np.ndarray, tip: np.ndarray, u: np.ndarray, target: np.ndarray,
                      structures: Any, image: Any, preset: Any, extension_ok: bool,
                      replan: Any = None, position: str = "", extension_why: str = "") -> Correction:
    """The correction (see the module): ``entry`` the needle's skin puncture, ``tip`` and unit
    ``u`` (hub -> tip) the actual needle, all in the planning CT (LPS mm). ``replan(entry, radius)``
    returns the planner's result for a new trajectory from near ``entry``: (list of trajectory
    dicts as plan.json states them, dict of rejections, number of candidates). ``position``: the
    patient's position on the table (the plan's), for the angle from the room's vertical;
    ``extension_why``: which structures the extension passes too close (when not ``extension_ok``)."""
    considered: list[str] = []
    p = np.asarray(tip, float)
    if dev.target_hit:
        along_axis = float((dev.predicted_tip_lps - p) @ u)
        tip_depth = float((p - entry) @ u)
        if abs(dev.remaining_mm) <= ON_DEPTH_MM:
            return Correction("none", "on target: the tip is at the target's depth and within the target")
        if along_axis < 0:
            return Correction("withdraw", f"withdraw {-along_axis:.0f} mm along the current axis: the tip is past the "
                              "target's depth", along_axis)
        if not extension_ok:
            considered.append("advancing along the current axis would reach the target but passes "
                              + (extension_why or "a structure at risk closer than its margin"))
        elif tip_depth + along_axis > preset.max_depth_mm:
            considered.append(f"advancing along the current axis needs {tip_depth + along_axis:.0f} mm of needle, "
                              f"more than the preset's {preset.max_depth_mm:.0f} mm")
        else:
            return Correction("advance", f"advance {along_axis:.0f} mm along the current axis", along_axis)
    else:
        considered.append(f"advancing along the current axis misses the target by {dev.predicted_miss_mm:.1f} mm")

    # withdraw to the pivot and turn
    tip_depth = max(float((p - entry) @ u), 0.0)
    lung_at = lung_entry_depth(structures, image, entry, u, tip_depth)
    pivot_depth = min(PIVOT_DEPTH_MM, tip_depth)
    why_pivot = ""
    if lung_at is not None:
        pivot_depth = min(pivot_depth, lung_at - PLEURA_STANDOFF_MM)
        why_pivot = " (in the chest wall, short of the pleura"
        why_pivot += "; the needle then punctures the pleura a second time)" if tip_depth > lung_at else ")"
    pivot_depth = max(pivot_depth, min(MIN_PIVOT_MM, tip_depth))
    pivot = entry + pivot_depth * u
    wanted = np.asarray(target, float) - pivot
    rest = float(np.linalg.norm(wanted))
    w = wanted / max(rest, 1e-9)
    turn_deg = float(np.degrees(np.arccos(np.clip(u @ w, -1.0, 1.0))))
    turn = direction_change(u, w)
    new_room = room_angles(w, position)
    problems = []
    if turn_deg > MAX_REDIRECT_DEG:
        problems.append(f"a turn of {turn_deg:.1f} degrees (more than {MAX_REDIRECT_DEG:g})")
    if abs(new_room["craniocaudal_deg"]) > preset.max_craniocaudal_deg:
        problems.append(f"a craniocaudal angle of {abs(new_room['craniocaudal_deg']):.0f} degrees (the preset allows "
                        f"{preset.max_craniocaudal_deg:g})")
    if pivot_depth + rest > preset.max_depth_mm:
        problems.append(f"{pivot_depth + rest:.0f} mm of needle (the preset's longest reaches "
                        f"{preset.max_depth_mm:.0f})")
    if not problems:
        # the stretch skin -> pivot is the needle's own track (its clearance is the check's "now");
        # what the redirect adds is pivot -> target
        clear = clearances(structures, preset, {"redirected": [(pivot, np.asarray(target, float))]})
        below = _below(clear, "redirected")
        if below:
            problems.append("passing " + ", ".join(below[:3]))
    if not problems:
        words = []
        cc, lr = turn["craniocaudal_change_deg"], turn["toward_left_change_deg"]
        if abs(cc) >= 0.5:
            words.append(f"{_deg(cc)} more {'cranial' if cc > 0 else 'caudal'}")
        if abs(lr) >= 0.5:
            words.append(f"{_deg(lr)} more toward the patient's {'left' if lr > 0 else 'right'}")
        cc_new = new_room["craniocaudal_deg"]
        text = (f"withdraw the tip to {pivot_depth:.0f} mm from the skin{why_pivot}, redirect "
                + (" and ".join(words) if words else "by less than 1 degree")
                + f" (then {new_room['angle_from_room_vertical_deg']:.0f} degrees from the room's vertical"
                + (f" with the patient {position.replace('_', ' ')}" if position else "")
                + f", {abs(cc_new):.0f} degrees " + ("cranial" if cc_new > 0 else "caudal")
                + f") and advance {rest:.0f} mm to the target")
        return Correction("redirect", text, withdraw_to_mm=pivot_depth,
                          redirect={**turn, "turn_deg": turn_deg, "advance_after_mm": rest,
                                    "new_depth_mm": pivot_depth + rest, **new_room},
                          considered=considered)
    considered.append(f"withdrawing to {pivot_depth:.0f} mm and redirecting would need " + " and ".join(problems))

    # a new trajectory from the current puncture, planned like any
    if replan is not None:
        found, rejected, n = replan(entry, ENTRY_NEAR_MM)
        if found:
            t = found[0]
            shift = float(np.linalg.norm(np.asarray(t["entry"], float) - entry))
            room = t.get("room") or {}
            pos = str(t.get("patient_position", ""))
            vertical = room.get("angle_from_room_vertical_deg", t["angle_from_vertical_deg"])
            text = (f"new trajectory from the current entry (keep the puncture, {shift:.0f} mm from it; coaxial: "
                    f"withdraw the needle to the skin and re-aim it): {vertical:.0f} degrees from the room's vertical"
                    + (f" with the patient {pos.replace('_', ' ')}" if pos else "")
                    + (f" (the patient is now {position.replace('_', ' ')}: turn them)" if position and pos
                       and pos != position else "")
                    + f", {abs(t['craniocaudal_deg']):.0f} degrees "
                    + ("cranial" if t["craniocaudal_deg"] > 0 else "caudal")
                    + f", {t['length_mm']:.0f} mm deep to the target ({t['needle']['gauge']} "
                    f"{t['needle']['length_mm']:.0f} mm needle), checked with the plan's preset")
            line, off = (("mid-axillary line", room.get("entry_from_midaxillary_mm")) if pos.startswith("decubitus")
                         else ("midline", room.get("entry_from_midline_mm")))
            if "entry_table_z_mm" in room:
                text += f"; entry at table position {room['entry_table_z_mm']:.0f} mm"
                if off is not None:
                    text += f", {abs(off):.0f} mm from the {line}"
            nt = {k: t[k] for k in ("entry", "target", "length_mm", "needle", "clearance_mm", "limiting",
                                    "risk_factors", "patient_position", "angle_from_vertical_deg",
                                    "craniocaudal_deg", "angle_from_skin_normal_deg", "room") if k in t}
            nt["entry_shift_mm"] = round(shift, 1)
            return Correction("new_trajectory", text, new_trajectory=nt, considered=considered)
        shares = ", ".join(f"{k} {100.0 * v / max(n, 1):.0f}%" for k, v in rejected.items()) or "none within reach"
        considered.append(f"no safe trajectory from within {ENTRY_NEAR_MM:g} mm of the current entry "
                          f"({n} candidate entries; ruled out: {shares})")
    return Correction("no_safe_correction", "no safe correction from the current entry: withdraw the needle and "
                      "re-plan (" + "; ".join(considered[-2:]) + ")", considered=considered)
