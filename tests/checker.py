"""An independent brute-force check of planned trajectories against the label voxels.

The planner decides clearance with its own distance fields and sphere tracing. This module
shares none of that code on purpose: it reads only the preset (margins, needles, limits), the
structure masks and the CT affine, and measures the needle's axis against the centres of the
structures' voxels by dense sampling. If the two ever disagree on a trajectory the planner
called feasible, the planner is wrong (or this file is, which a test must then show).

Rule semantics, from the preset alone:

* a rule with ``name`` applies to the structure of that name;
* a rule with ``cls`` applies to every structure of that class except those that have a
  name rule of their own in the same preset;
* a path keeps a rule when every voxel centre of its structures lies at least
  ``margin_mm + needle_radius_mm`` from the straight segment entry -> target.

How the distance is measured: the segment is sampled every 0.1 mm (both ends included) and each
sample is looked up in a KD-tree of the voxel centres (``cKDTree`` with a distance upper bound).
The sampled minimum can exceed the true one by at most half a step (0.05 mm), so whenever it
comes within that slack of the requirement, the voxels near the closest samples are measured
exactly against the segment (a closed-form point-to-segment distance). The reported distance is
the exact one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from scipy.spatial import cKDTree

STEP_MM = 0.1  # sampling step along the needle axis
TOL_MM = 1e-6  # numerical tolerance on every distance and length
TOL_DEG = 1e-6  # on angle limits


@dataclass(frozen=True)
class Clearance:
    """The closest approach of one rule's structures to a segment."""

    rule: str  # "clearance:<class or name>"
    required_mm: float  # margin + needle radius
    distance_mm: float  # exact distance from the axis to the nearest voxel centre (inf: none in reach)
    sampled_mm: float  # the same from the 0.1 mm samples alone (>= distance_mm)
    structure: str = ""  # the structure holding the nearest voxel
    voxel_kji: tuple[int, int, int] | None = None
    voxel_lps: tuple[float, float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.distance_mm >= self.required_mm - TOL_MM


def _rule_key(rule: Any) -> str:
    return f"clearance:{rule.name if rule.name else rule.cls.value}"


def rule_structures(sset: Any, preset: Any) -> list[tuple[Any, list[Any]]]:
    """Each avoid rule of the preset with the structures of ``sset`` it applies to."""
    named = {r.name for r in preset.avoid if r.name}
    out = []
    for rule in preset.avoid:
        if rule.name:
            members = [s for s in sset if s.name == rule.name]
        else:
            members = [s for s in sset if s.cls == rule.cls and s.name not in named]
        out.append((rule, members))
    return out


def point_segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each point (n, 3) to the closed segment a-b."""
    p = np.asarray(points, float).reshape(-1, 3)
    ab = np.asarray(b, float) - np.asarray(a, float)
    denom = float(ab @ ab)
    if denom == 0.0:
        return np.linalg.norm(p - a, axis=1)
    t = np.clip((p - a) @ ab / denom, 0.0, 1.0)
    foot = a + t[:, None] * ab
    return np.linalg.norm(p - foot, axis=1)


def sample_segment(a: np.ndarray, b: np.ndarray, step: float = STEP_MM) -> np.ndarray:
    """Points on a-b no more than ``step`` apart, both ends included."""
    length = float(np.linalg.norm(b - a))
    n = max(2, int(math.ceil(length / step)) + 1)
    t = np.linspace(0.0, 1.0, n)
    return a[None, :] + t[:, None] * (b - a)[None, :]


class Checker:
    """Brute-force clearance and limit checks of trajectories on one CT, structure set and preset.

    Voxel centres are computed once per structure and kept; each check crops them to the
    segment's neighbourhood before building a KD-tree.
    """

    def __init__(self, ct: Any, sset: Any, preset: Any):
        if tuple(sset.shape) != tuple(ct.shape):
            raise ValueError(f"structure grid {sset.shape} is not the CT grid {ct.shape}")
        if not np.allclose(np.asarray(sset.affine), np.asarray(ct.affine), atol=1e-6):
            raise ValueError("structure set affine differs from the CT affine")
        self.affine = np.array(ct.affine, dtype=np.float64)
        self.shape = tuple(int(n) for n in ct.shape)
        self.preset = preset
        self.radius = max(float(n.outer_diameter_mm) for n in preset.needles) / 2.0
        self.rules = rule_structures(sset, preset)
        self._centres: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for _, members in self.rules:
            for s in members:
                self._boxes[s.name] = self._lps_box(s)
        self._structs = {s.name: s for _, members in self.rules for s in members}

    # --- geometry ---------------------------------------------------------------------------
    def kji_to_lps(self, kji: np.ndarray) -> np.ndarray:
        kji = np.asarray(kji, dtype=np.float64).reshape(-1, 3)
        ijk = kji[:, ::-1]
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_ijk(self, lps: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        p = np.asarray(lps, float).reshape(-1, 3)
        return p @ inv[:3, :3].T + inv[:3, 3]

    def _lps_box(self, s: Any) -> tuple[np.ndarray, np.ndarray]:
        lo = np.asarray(s.offset, float)
        hi = lo + np.asarray(s.mask.shape, float) - 1.0
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        lps = self.kji_to_lps(corners)
        return lps.min(axis=0), lps.max(axis=0)

    def _voxels(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(kji (n, 3) int, lps (n, 3) float) of every voxel of a structure."""
        if name not in self._centres:
            s = self._structs[name]
            kji = np.argwhere(np.asarray(s.mask, bool)) + np.asarray(s.offset, dtype=np.int64)
            self._centres[name] = (kji, self.kji_to_lps(kji))
        return self._centres[name]

    # --- clearance ----------------------------------------------------------------------------
    def clearances(self, entry: Iterable[float], target: Iterable[float]) -> list[Clearance]:
        """The closest approach of each rule's structures to the segment entry -> target."""
        a = np.asarray(entry, float).reshape(3)
        b = np.asarray(target, float).reshape(3)
        samples = sample_segment(a, b)
        seg_lo, seg_hi = np.minimum(a, b), np.maximum(a, b)
        out = []
        for rule, members in self.rules:
            required = float(rule.margin_mm) + self.radius
            reach = required + 1.0
            names, kjis, pts = [], [], []
            for s in members:
                blo, bhi = self._boxes[s.name]
                if np.any(blo > seg_hi + reach) or np.any(bhi < seg_lo - reach):
                    continue
                kji, lps = self._voxels(s.name)
                near = np.all((lps >= seg_lo - reach) & (lps <= seg_hi + reach), axis=1)
                if np.any(near):
                    names.append(np.full(int(near.sum()), len(kjis)))
                    kjis.append((s.name, kji[near]))
                    pts.append(lps[near])
            if not pts:
                out.append(Clearance(_rule_key(rule), required, math.inf, math.inf))
                continue
            owner = np.concatenate(names)
            all_kji = np.concatenate([k for _, k in kjis])
            all_pts = np.concatenate(pts)
            tree = cKDTree(all_pts)
            bound = required + 2 * STEP_MM
            dist, _ = tree.query(samples, k=1, distance_upper_bound=bound)
            sampled = float(dist.min())
            if not np.isfinite(sampled):
                out.append(Clearance(_rule_key(rule), required, math.inf, math.inf))
                continue
            # Exact refinement: every voxel whose exact distance is the minimum lies within
            # sampled + STEP/2 of some sample, and only samples that close can hold it.
            radius = sampled + STEP_MM / 2 + 1e-9
            close = samples[dist <= radius]
            cand = sorted({i for idx in tree.query_ball_point(close, r=radius) for i in idx})
            exact = point_segment_distance(all_pts[cand], a, b)
            m = int(np.argmin(exact))
            v = cand[m]
            out.append(Clearance(
                _rule_key(rule), required, float(exact[m]), sampled, kjis[owner[v]][0],
                tuple(int(x) for x in all_kji[v]), tuple(float(x) for x in all_pts[v]),
            ))
        return out

    # --- everything ---------------------------------------------------------------------------
    def check(
        self,
        entry: Iterable[float],
        target: Iterable[float],
        *,
        length_mm: float | None = None,
        needle: Any = None,
        craniocaudal_deg: float | None = None,
        angle_from_skin_normal_deg: float | None = None,
        position: str | None = None,
    ) -> list[str]:
        """Violations of a trajectory (empty when it keeps every rule and limit)."""
        p = self.preset
        a = np.asarray(entry, float).reshape(3)
        b = np.asarray(target, float).reshape(3)
        bad: list[str] = []
        where = f"entry {np.round(a, 3).tolist()} -> target {np.round(b, 3).tolist()}"
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return [f"{where}: non-finite coordinates"]
        size_ijk = np.array(self.shape[::-1], float)
        for what, pt in (("entry", a), ("target", b)):
            ijk = self.lps_to_ijk(pt)[0]
            if np.any(ijk < -0.5 - 1e-6) or np.any(ijk > size_ijk - 0.5 + 1e-6):
                bad.append(f"{where}: {what} lies outside the CT grid (ijk {np.round(ijk, 2).tolist()})")
        length = float(np.linalg.norm(b - a))
        if length <= 0.0:
            return bad + [f"{where}: zero-length path"]
        if length_mm is not None and abs(float(length_mm) - length) > TOL_MM * max(1.0, length):
            bad.append(f"{where}: length_mm {length_mm!r} != |target - entry| = {length!r}")
        if length > p.max_depth_mm + TOL_MM:
            bad.append(f"{where}: length {length:.6f} mm beyond the deepest reach {p.max_depth_mm} mm")
        if needle is not None:
            if needle not in p.needles:
                bad.append(f"{where}: needle {needle!r} is not in the preset's catalogue")
            usable = float(needle.length_mm) - float(p.needle_reserve_mm)
            if length > usable + TOL_MM:
                bad.append(f"{where}: length {length:.6f} mm > usable {usable} mm of the {needle.length_mm} mm needle "
                           f"(reserve {p.needle_reserve_mm} mm)")
        cc = math.degrees(math.asin(min(1.0, abs(float(b[2] - a[2])) / length)))
        if cc > p.max_craniocaudal_deg + TOL_DEG:
            bad.append(f"{where}: craniocaudal angle {cc:.6f} deg > limit {p.max_craniocaudal_deg} deg")
        if craniocaudal_deg is not None and abs(abs(float(craniocaudal_deg)) - cc) > 1e-3:
            bad.append(f"{where}: reported craniocaudal angle {craniocaudal_deg!r} deg, geometry says {cc:.6f} deg")
        if angle_from_skin_normal_deg is not None and (
                not np.isfinite(angle_from_skin_normal_deg)
                or angle_from_skin_normal_deg > p.max_angle_from_skin_normal_deg + TOL_DEG):
            bad.append(f"{where}: angle from the skin normal {angle_from_skin_normal_deg!r} deg > limit "
                       f"{p.max_angle_from_skin_normal_deg} deg")
        if position is not None and position not in p.positions:
            bad.append(f"{where}: position {position!r} not allowed by the preset ({list(p.positions)})")
        for c in self.clearances(a, b):
            if not c.ok:
                bad.append(
                    f"{where}: {c.rule}: structure {c.structure!r} voxel kji {c.voxel_kji} at LPS "
                    f"{np.round(c.voxel_lps, 3).tolist()} lies {c.distance_mm:.6f} mm from the needle axis "
                    f"(sampled {c.sampled_mm:.6f}), required >= {c.required_mm:.6f} mm "
                    f"(margin {c.required_mm - self.radius:g} + needle radius {self.radius:g})"
                )
        return bad

    def check_trajectory(self, t: Any) -> list[str]:
        """All checks on a planner ``Trajectory`` (its own length, needle, angles and position)."""
        return self.check(
            t.entry, t.target, length_mm=t.length_mm, needle=t.needle, craniocaudal_deg=t.craniocaudal_deg,
            angle_from_skin_normal_deg=t.angle_from_skin_normal_deg, position=t.position,
        )


def check_trajectory(ct: Any, sset: Any, preset: Any, entry: Iterable[float], target: Iterable[float],
                     **limits: Any) -> list[str]:
    """Violations of the path entry -> target (LPS mm); see :meth:`Checker.check` for ``limits``."""
    return Checker(ct, sset, preset).check(entry, target, **limits)
