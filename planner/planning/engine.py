"""Plan straight needle trajectories from the skin to a target.

Candidates are every skin voxel within reach of the longest needle (its usable length: length
minus the reserve kept outside the skin). Hard constraints, in the order a candidate meets
them: approach side (patient position), insertion angle to the skin, craniocaudal angle, then clearance from each avoided structure (margin plus
needle radius, checked with the safe lower bound of :mod:`.fields`). Feasible candidates get
soft criteria and a score (weights from the preset; lower is better); the result keeps the
best spatially distinct ones, the Pareto set, a risk map and the reasons for every rejection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..anatomy.registry import StructureClass
from ..anatomy.structures import StructureSet
from ..anatomy.target import Target
from ..images import Image
from . import fields as F
from .presets import AvoidRule, Needle, Preset

STEP_MM = 0.25  # sampling step along a path for the hard check
SOFT_STEP_MM = 0.5  # sampling step for the soft criteria
NEAR_VESSEL_MM = 5.0
DISTINCT_ENTRY_MM = 12.0

# Flags of the crop's label volume used for the soft criteria.
IN_LUNG, IN_FISSURE, IN_EMPHYSEMA = 1, 2, 4
LOBE_SHIFT = 4  # lobe index (1..7) in the high bits

LUNG_CLASSES = (StructureClass.LUNG, StructureClass.LOBE, StructureClass.FISSURE, StructureClass.EMPHYSEMA)


@dataclass
class Trajectory:
    """One feasible path; every position in LPS mm."""

    rank: int
    entry: np.ndarray
    target: np.ndarray
    length_mm: float
    needle: Needle
    position: str
    angle_from_vertical_deg: float
    craniocaudal_deg: float
    angle_from_skin_normal_deg: float
    score: float
    metrics: dict[str, float]
    clearance_mm: dict[str, float] = field(default_factory=dict)
    limiting: str = ""
    risk_factors: list[str] = field(default_factory=list)
    pareto: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "entry": [round(float(x), 2) for x in self.entry],
            "target": [round(float(x), 2) for x in self.target],
            "length_mm": round(self.length_mm, 1),
            "needle": self.needle.to_dict(),
            "clearance_mm": {k: round(v, 1) for k, v in sorted(self.clearance_mm.items(), key=lambda kv: kv[1])},
            "metrics": {k: round(float(v), 2) for k, v in self.metrics.items()},
            "patient_position": self.position,
            "angle_from_vertical_deg": round(self.angle_from_vertical_deg, 1),
            "craniocaudal_deg": round(self.craniocaudal_deg, 1),
            "angle_from_skin_normal_deg": round(self.angle_from_skin_normal_deg, 1),
            "score": round(self.score, 3),
            "limiting": self.limiting,
            "risk_factors": list(self.risk_factors),
            "pareto_optimal": self.pareto,
        }


@dataclass
class PlanResult:
    status: str  # "ok" | "no_safe_path"
    trajectories: list[Trajectory]
    rejected: dict[str, int]
    n_candidates: int
    explanation: list[str]
    risk_map: dict[str, np.ndarray]  # entries (n,3) LPS, score (n,) NaN if infeasible, reason (n,) str
    timings_s: dict[str, float]
    hard_margins_mm: dict[str, float]


@dataclass
class _Context:
    """Everything that depends on the image, the structures and the preset, not on the target."""

    crop: F.Crop
    rules: list[AvoidRule]
    fields: np.ndarray  # (g, nk, nj, ni) float32
    rule_masks: list[np.ndarray]  # the structures of each rule on the crop
    margins: np.ndarray
    labels: np.ndarray  # uint8 flags, crop grid
    vessel_field: np.ndarray | None
    lung_smooth: np.ndarray | None  # smoothed lung indicator: its gradient is the pleura's normal
    skin_lps: np.ndarray  # (n, 3) skin voxel centres (whole reach region)
    skin_normal: np.ndarray  # (n, 3) outward unit normals
    _trees: dict[int, F.VoxelTree] = field(default_factory=dict)

    def tree(self, r: int) -> F.VoxelTree:
        """KD-tree of rule ``r``'s voxel centres, built on first use and kept for re-planning."""
        if r not in self._trees:
            self._trees[r] = F.VoxelTree(self.rule_masks[r], self.crop.spacing)
        return self._trees[r]


def _rule_mask(sset: StructureSet, rule: AvoidRule, named: set[str], sl) -> np.ndarray:
    if rule.name is not None:
        return sset.union(names=[rule.name], region=sl)
    # A structure with a rule of its own by name follows that rule, not its class's.
    names = [s.name for s in sset.by_class(rule.cls) if s.name not in named]  # type: ignore[arg-type]
    return sset.union(names=names, region=sl)


def prepare(ct: Image, sset: StructureSet, preset: Preset, centre_lps: np.ndarray, body: np.ndarray,
            reach_mm: float | None = None) -> _Context:
    """Distance fields, labels and skin of the region a needle from ``centre_lps`` can reach."""
    reach = float(reach_mm if reach_mm is not None else preset.max_depth_mm) + 10.0
    crop = F.crop_around(ct.shape, ct.affine, np.asarray(centre_lps, float), reach)
    sl = crop.slices
    named = {r.name for r in preset.avoid if r.name}
    # Rules with no structure in reach can never be broken: they get no field.
    rules, rule_masks = [], []
    for r in preset.avoid:
        m = _rule_mask(sset, r, named, sl)
        if m.any():
            rules.append(r)
            rule_masks.append(m)
    fields = np.empty((len(rules),) + crop.shape, dtype=np.float32)
    for g, m in enumerate(rule_masks):
        fields[g] = F.distance_field(m, crop.spacing)
    margins = np.array([r.margin_mm for r in rules], dtype=np.float64)

    lung = sset.union(classes=LUNG_CLASSES, region=sl)
    labels = np.zeros(crop.shape, np.uint8)
    lobes = [s for s in sset if s.cls == StructureClass.LOBE]
    for idx, s in enumerate(lobes[:7], start=1):
        labels[sset.mask(s.name, region=sl)] |= np.uint8(idx << LOBE_SHIFT)
    labels[lung] |= IN_LUNG
    labels[sset.union(classes=[StructureClass.FISSURE], region=sl)] |= IN_FISSURE
    emph = sset.union(classes=[StructureClass.EMPHYSEMA], region=sl)
    if not emph.any() and lung.any():
        hu = ndimage.uniform_filter(ct.voxels[sl].astype(np.float32), size=3)
        emph = lung & (hu < -950)
    labels[emph & lung] |= IN_EMPHYSEMA

    vessels = sset.union(classes=[StructureClass.VESSEL], region=sl)
    vessel_field = F.distance_field(vessels, crop.spacing) if vessels.any() else None
    sigma = 2.0 / crop.spacing[::-1]
    lung_smooth = ndimage.gaussian_filter(lung.astype(np.float32), sigma=sigma, truncate=2.5) if lung.any() else None

    b = body[sl]
    surface = b & ~ndimage.binary_erosion(b, border_value=0)
    idx = np.argwhere(surface)
    body_smooth = ndimage.gaussian_filter(b.astype(np.float32), sigma=sigma, truncate=2.5)
    normal = -_gradient_lps(body_smooth, idx, crop)  # outward: against the gradient of the body indicator
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-6
    skin_lps = idx[ok][:, ::-1].astype(float) @ crop.affine[:3, :3].T + crop.affine[:3, 3]
    skin_normal = normal[ok] / norm[ok, None]
    return _Context(crop, rules, fields, rule_masks, margins, labels, vessel_field, lung_smooth, skin_lps, skin_normal)


def _gradient_lps(field: np.ndarray, kji: np.ndarray, crop: F.Crop) -> np.ndarray:
    """Gradient (per mm, in LPS) of a crop array at integer voxels ``kji`` (n, 3), central differences."""
    shape = np.array(field.shape)
    g = np.zeros((len(kji), 3))
    for axis in range(3):  # array axes k, j, i
        hi = kji.copy()
        lo = kji.copy()
        hi[:, axis] = np.minimum(hi[:, axis] + 1, shape[axis] - 1)
        lo[:, axis] = np.maximum(lo[:, axis] - 1, 0)
        step = (hi[:, axis] - lo[:, axis]) * crop.spacing[2 - axis]
        diff = field[tuple(hi.T)] - field[tuple(lo.T)]
        g[:, 2 - axis] = np.where(step > 0, diff / np.maximum(step, 1e-9), 0.0)  # column order i, j, k
    direction = crop.affine[:3, :3] / crop.spacing  # unit axis vectors as columns
    return g @ direction.T


def _position_of(normals: np.ndarray) -> np.ndarray:
    """The patient position that puts each entry up: the axial direction of its skin normal."""
    nx, ny = normals[:, 0], normals[:, 1]
    out = np.where(np.abs(ny) >= np.abs(nx), np.where(ny < 0, "supine", "prone"),
                   np.where(nx > 0, "decubitus_right", "decubitus_left"))
    return out


def plan(
    ct: Image,
    sset: StructureSet,
    target: Target,
    preset: Preset,
    body: np.ndarray,
    n_best: int = 5,
    context: _Context | None = None,
) -> PlanResult:
    """Plan trajectories to ``target``; ``context`` from :func:`prepare` may be reused to re-plan."""
    t0 = time.perf_counter()
    tgt = np.asarray(target.point, float)
    ctx = context or prepare(ct, sset, preset, tgt, body)
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()

    vec = tgt - ctx.skin_lps
    length = np.linalg.norm(vec, axis=1)
    # Candidates: the skin points the longest needle reaches (with its reserve outside the skin).
    keep = (length > 1.0) & (length <= preset.max_depth_mm)
    entries, normals, vec, length = ctx.skin_lps[keep], ctx.skin_normal[keep], vec[keep], length[keep]
    d = vec / length[:, None]
    n = len(entries)
    reason = np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, why: str) -> None:
        reason[(reason == "") & mask] = why

    positions = _position_of(normals)
    reject(~np.isin(positions, preset.positions), "approach_side")
    skin_angle = np.degrees(np.arccos(np.clip(-(d * normals).sum(axis=1), -1, 1)))
    reject(skin_angle > preset.max_angle_from_skin_normal_deg, "insertion_angle")
    cc_angle = np.degrees(np.arcsin(np.clip(np.abs(d[:, 2]), 0, 1)))
    reject(cc_angle > preset.max_craniocaudal_deg, "craniocaudal_angle")

    todo = np.flatnonzero(reason == "")
    starts = ctx.crop.lps_to_ijk(entries[todo])
    tip = ctx.crop.lps_to_ijk(tgt[None])[0]
    ends = np.repeat(tip[None], len(todo), axis=0)
    need = preset.needle_radius_mm + STEP_MM / 2.0
    min_clear = np.full((n, len(ctx.rules)), np.nan, np.float32)
    if len(todo) and len(ctx.rules):
        fail, uncertain, mc = F.march_clearance(ctx.fields, ctx.margins, ctx.crop.spacing, starts, ends, STEP_MM, need)
        for r, rule in enumerate(ctx.rules):
            # Where the field cannot decide (within a voxel of the margin), decide exactly.
            ask = np.flatnonzero((fail == -1) & uncertain[:, r])
            if len(ask):
                bad, dmin = F.exact_violations(ctx.tree(r), starts[ask], ends[ask], STEP_MM, ctx.margins[r] + need)
                fail[ask[bad]] = r
                mc[ask, r] = np.maximum(mc[ask, r], np.minimum(dmin, F.BIG)).astype(np.float32)
        min_clear[todo] = mc
        for r, rule in enumerate(ctx.rules):
            reason[todo[fail == r]] = rule.key
    feasible = np.flatnonzero(reason == "")
    t_hard = time.perf_counter() - t1

    # Soft criteria of the feasible candidates.
    t2 = time.perf_counter()
    metrics = _soft_criteria(ctx, entries[feasible], tgt, d[feasible], length[feasible])
    excess = (min_clear[feasible] - ctx.margins[None, :]).min(axis=1) if len(ctx.rules) else np.full(len(feasible), 99.0)
    metrics["min_clearance_excess_mm"] = excess
    w = preset.weights
    score = np.zeros(len(feasible))
    for key, weight in w.items():
        if key == "clearance_deficit_mm":
            score += weight * np.maximum(0.0, 10.0 - excess)
        elif key == "pleura_crossings_beyond_first":
            score += weight * np.maximum(0.0, metrics["pleura_crossings"] - 1)
        elif key in metrics:
            score += weight * metrics[key]
    all_scores = np.full(n, np.nan)
    all_scores[feasible] = score
    t_soft = time.perf_counter() - t2

    # Best distinct trajectories.
    chosen: list[int] = []
    for f in np.argsort(score, kind="stable"):
        e = entries[feasible[f]]
        if all(np.linalg.norm(e - entries[feasible[c]]) >= DISTINCT_ENTRY_MM for c in chosen):
            chosen.append(int(f))
        if len(chosen) >= n_best:
            break
    pareto = _pareto(np.column_stack([length[feasible], metrics["lung_mm"], metrics["fissures"], -excess])) \
        if len(feasible) else np.zeros(0, bool)

    trajectories = []
    for rank, f in enumerate(chosen, start=1):
        c = feasible[f]
        m = {k: float(v[f]) for k, v in metrics.items()}
        needle = preset.needle_for(float(length[c]))
        assert needle is not None  # every candidate is within the longest needle's reach
        traj = Trajectory(
            rank=rank, entry=entries[c], target=tgt, length_mm=float(length[c]), needle=needle,
            position=str(positions[c]),
            angle_from_vertical_deg=float(np.degrees(np.arctan2(abs(d[c, 0]), abs(d[c, 1])))),
            craniocaudal_deg=float(np.degrees(np.arcsin(np.clip(d[c, 2], -1, 1)))),
            angle_from_skin_normal_deg=float(skin_angle[c]), score=float(score[f]), metrics=m,
            pareto=bool(pareto[f]),
        )
        trajectories.append(traj)

    rejected: dict[str, int] = {}
    for why in reason[reason != ""]:
        rejected[why] = rejected.get(why, 0) + 1
    explanation = _explain(n, rejected, len(feasible))
    return PlanResult(
        status="ok" if trajectories else "no_safe_path",
        trajectories=trajectories, rejected=dict(sorted(rejected.items(), key=lambda kv: -kv[1])),
        n_candidates=n, explanation=explanation,
        risk_map={"entries": entries, "score": all_scores, "reason": reason.astype(str)},
        timings_s={"prepare": t_prep, "hard": t_hard, "soft": t_soft, "total": time.perf_counter() - t0},
        hard_margins_mm={r.key: r.margin_mm + preset.needle_radius_mm for r in ctx.rules},
    )


def _soft_criteria(ctx: _Context, entries: np.ndarray, tgt: np.ndarray, d: np.ndarray, length: np.ndarray
                   ) -> dict[str, np.ndarray]:
    n = len(entries)
    out = {k: np.zeros(n) for k in ("length_mm", "lung_mm", "pleura_crossings", "fissures", "emphysema_mm",
                                    "pleura_angle_deg", "vessel_near_mm")}
    out["length_mm"] = length.astype(float)
    if n == 0:
        return out
    starts = ctx.crop.lps_to_ijk(entries)
    ends = np.repeat(ctx.crop.lps_to_ijk(tgt[None]), n, axis=0)
    lab = F.march_labels(ctx.labels, starts, ends, ctx.crop.spacing, SOFT_STEP_MM)
    valid = lab != 255
    lung = ((lab & IN_LUNG) > 0) & valid
    h = length / np.maximum(valid.sum(axis=1) - 1, 1)  # actual step of each path
    out["lung_mm"] = lung.sum(axis=1) * h
    enter = lung[:, 1:] & ~lung[:, :-1]
    out["pleura_crossings"] = enter.sum(axis=1) + lung[:, 0]
    out["emphysema_mm"] = (((lab & IN_EMPHYSEMA) > 0) & valid).sum(axis=1) * h
    lobe = np.where(valid, lab >> LOBE_SHIFT, 0)
    fis = np.zeros(n)
    for c in range(n):
        seq = lobe[c][lobe[c] > 0]
        fis[c] = np.count_nonzero(seq[1:] != seq[:-1]) if len(seq) > 1 else 0
    if not lobe.any():  # no lobes: count entries into fissure voxels
        fm = ((lab & IN_FISSURE) > 0) & valid
        fis = (fm[:, 1:] & ~fm[:, :-1]).sum(axis=1) + fm[:, 0]
    out["fissures"] = fis
    if ctx.vessel_field is not None:
        vlab = F.march_labels((ctx.vessel_field < NEAR_VESSEL_MM).astype(np.uint8), starts, ends,
                              ctx.crop.spacing, SOFT_STEP_MM)
        out["vessel_near_mm"] = ((vlab == 1).sum(axis=1)) * h
    if ctx.lung_smooth is not None:
        first = np.where(lung.any(axis=1), lung.argmax(axis=1), -1)
        rows = np.flatnonzero(first >= 0)
        if len(rows):
            t = first[rows] / np.maximum(valid[rows].sum(axis=1) - 1, 1)
            p = starts[rows] + t[:, None] * (ends[rows] - starts[rows])
            ijk = np.clip(np.rint(p).astype(int), 0, np.array(ctx.labels.shape[::-1]) - 1)
            gn = _gradient_lps(ctx.lung_smooth, ijk[:, ::-1], ctx.crop)
            norm = np.linalg.norm(gn, axis=1)
            cosang = np.abs((gn * d[rows]).sum(axis=1)) / np.maximum(norm, 1e-9)
            out["pleura_angle_deg"][rows] = np.where(norm > 1e-9, np.degrees(np.arccos(np.clip(cosang, 0, 1))), 0.0)
    return out


def _pareto(costs: np.ndarray) -> np.ndarray:
    """Non-dominated rows (every column is a cost to minimise)."""
    n = len(costs)
    keep = np.ones(n, bool)
    order = np.lexsort(costs.T[::-1])
    for a in order:
        if not keep[a]:
            continue
        dominated = np.all(costs[a] <= costs, axis=1) & np.any(costs[a] < costs, axis=1)
        keep[dominated] = False
    return keep


def _explain(n: int, rejected: dict[str, int], n_ok: int) -> list[str]:
    """Which constraint removed what share: each candidate is counted once, under the first
    constraint it breaks (geometry first, then clearances from the entry inwards)."""
    if n == 0:
        return ["no skin entry point within reach of the longest needle"]
    lines = [f"{n} skin entry points within reach; {n_ok} ({100.0 * n_ok / n:.1f} %) keep every hard constraint"]
    for why, count in sorted(rejected.items(), key=lambda kv: -kv[1]):
        lines.append(f"{why}: ruled out {count} ({100.0 * count / n:.1f} %)")
    clearance = {k: v for k, v in rejected.items() if k.startswith("clearance:")}
    reached = sum(clearance.values()) + n_ok
    if n_ok == 0 and reached:
        worst = max(clearance, key=clearance.get)  # type: ignore[arg-type]
        lines.append(
            f"of the {reached} candidates within the angle and side limits, {worst} ruled out "
            f"{clearance[worst]} ({100.0 * clearance[worst] / reached:.1f} %)"
        )
    elif n_ok == 0:
        lines.append("no candidate is within the angle and side limits of this procedure")
    return lines
