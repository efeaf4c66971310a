"""Plan straight needle trajectories from the skin to a target.

Candidates are every skin voxel within reach of the longest needle (its usable length: length
minus the reserve kept outside the skin). Hard constraints, in the order a candidate meets
them: craniocaudal angle (the gantry plane), approach side (patient position; not for limbs,
where the preset fixes the position), insertion angle to the skin, the preset's approach
direction when it has one (a cone around e.g. "anterolateral"), then clearance from each
avoided structure (margin plus needle radius, checked with the safe lower bound of
:mod:`.fields`), and under ultrasound guidance a probe position whose plane holds the needle
(:mod:`.ultrasound`). Feasible candidates get
soft criteria and a score (weights from the preset; lower is better); the result keeps the
best spatially distinct ones, the Pareto set, a risk map and the reasons for every rejection.
"""

from __future__ import annotations

import math
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
EXACT_PIECE_MM = 4.0  # the exact check measures a stretch piece by piece (a box around each)
SOFT_STEP_MM = 0.5  # sampling step for the soft criteria
NEAR_VESSEL_MM = 5.0
#: Dense tissue no structure names (3-voxel mean above this, HU) on the lung stretch of a path:
#: a vessel the segmentation missed (hilar vessels without contrast), a nodule, consolidation.
UNIDENTIFIED_HU = -300.0
#: ...not counted this close to the target (mm beyond its radius): the lesion and its rim.
UNIDENTIFIED_TARGET_RIM_MM = 3.0
DISTINCT_ENTRY_MM = 12.0

# Flags of the crop's label volume used for the soft criteria.
IN_LUNG, IN_FISSURE, IN_EMPHYSEMA = 1, 2, 4
FISSURES_UNKNOWN = 8  # lung whose fissures are not known (no lobes, no fissure voxels in it)
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
    probe: Any = None  # ultrasound guidance: where the probe goes (.ultrasound.ProbePlacement)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "entry": [round(float(x), 2) for x in self.entry],
            "target": [round(float(x), 2) for x in self.target],
            "length_mm": round(self.length_mm, 1),
            "needle": self.needle.to_dict(),
            # rounded down: a clearance printed is never more than the one measured
            "clearance_mm": {k: math.floor(v * 10.0) / 10.0
                             for k, v in sorted(self.clearance_mm.items(), key=lambda kv: kv[1])},
            "metrics": {k: round(float(v), 2) for k, v in self.metrics.items()},
            "patient_position": self.position,
            "angle_from_vertical_deg": round(self.angle_from_vertical_deg, 1),
            "craniocaudal_deg": round(self.craniocaudal_deg, 1),
            "angle_from_skin_normal_deg": round(self.angle_from_skin_normal_deg, 1),
            "score": round(self.score, 3),
            "limiting": self.limiting,
            "risk_factors": list(self.risk_factors),
            "pareto_optimal": self.pareto,
            **({"ultrasound_probe": self.probe.to_dict()} if self.probe is not None else {}),
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
    rules: list[AvoidRule]  # the rules with a structure in reach
    rule_masks: list[np.ndarray]  # the structures of each rule on the crop
    margins: np.ndarray  # (r,) margin of each rule
    groups: list[list[int]]  # rules of equal margin share one distance field
    fields: np.ndarray  # (g, nk, nj, ni) float32, one per group
    group_labels: list[np.ndarray | None]  # uint8 (1 + index in the group) of each voxel; None for one rule
    labels: np.ndarray  # uint8 flags, crop grid
    vessel_field: np.ndarray | None
    lung_smooth: np.ndarray | None  # uint8 lung indicator: its smoothed gradient is the pleura's normal
    unidentified: np.ndarray | None  # uint8 1 = dense tissue in no structure, within the lungs' box
    skin_lps: np.ndarray  # (n, 3) skin voxel centres (whole reach region)
    skin_normal: np.ndarray  # (n, 3) outward unit normals
    outer_skin_lps: np.ndarray  # (m, 3) skin beyond the craniocaudal slab: too steep for any needle
    pool: np.ndarray = field(default_factory=lambda: np.ones(3, np.int64))  # block (i, j, k) of the fields

    @property
    def field_spacing(self) -> np.ndarray:
        """Spacing (i, j, k) of the fields' pooled grid, mm."""
        return self.crop.spacing * self.pool

    @property
    def field_cell(self) -> float:
        """How far a field value may be from the true distance at its grid point, mm."""
        return F.cell_slack(self.pool, self.crop.spacing)

    @property
    def field_affine(self) -> np.ndarray:
        """Pooled index (i, j, k, 1) -> LPS."""
        a = np.asarray(self.crop.affine, float).copy()
        a[:3, 3] = a[:3, :3] @ ((self.pool - 1.0) / 2.0) + a[:3, 3]
        a[:3, :3] = a[:3, :3] * self.pool
        return a

    @property
    def group_margins(self) -> np.ndarray:
        return np.array([self.margins[g[0]] for g in self.groups], dtype=np.float64)

    def group_volume(self, g: int) -> np.ndarray:
        """uint8 [k, j, i] of group ``g``: 1 + the index in the group of the rule whose structure is there."""
        lab = self.group_labels[g]
        return lab if lab is not None else self.rule_masks[self.groups[g][0]].view(np.uint8)

    def rule_at(self, g: int, points: np.ndarray, radius_mm: float) -> np.ndarray:
        """The rule (index into ``rules``) of group ``g`` whose structure is nearest each point (crop i, j, k)."""
        members = self.groups[g]
        if len(members) == 1 or not len(points):
            return np.full(len(points), members[0], dtype=np.int64)
        lab = F.nearest_member(self.group_labels[g], np.ascontiguousarray(points, float), self.crop.spacing,
                               float(radius_mm))
        return np.array(members)[np.maximum(lab.astype(np.int64) - 1, 0)]  # 0 (none found): the first


def _rule_mask(sset: StructureSet, rule: AvoidRule, named: set[str], sl) -> np.ndarray:
    if rule.name is not None:
        return sset.union(names=[rule.name], region=sl)
    # A structure with a rule of its own by name follows that rule, not its class's.
    names = [s.name for s in sset.by_class(rule.cls) if s.name not in named]  # type: ignore[arg-type]
    return sset.union(names=names, region=sl)


def prepare(ct: Image, sset: StructureSet, preset: Preset, centre_lps: np.ndarray, body: np.ndarray,
            reach_mm: float | None = None) -> _Context:
    """Distance fields, labels and skin of the region a needle from ``centre_lps`` can reach.

    The region is the box of half-width ``reach`` around the centre in L and P, and in S only
    as far as the craniocaudal limit lets a needle go (every path steeper than that is ruled
    out by angle alone, before any clearance is looked at). The skin beyond that slab is still
    found, so such candidates are counted under ``craniocaudal_angle``.

    Steps: the region (:func:`_reach_region`), the rules with a structure in it
    (:func:`_rules_in_reach`), one distance field per distinct margin (:func:`_clearance_fields`),
    the labels the soft criteria read (:func:`_path_labels`), the vessel field
    (:func:`_vessel_field`) and the skin with its normals (:func:`_skin`).
    """
    centre = np.asarray(centre_lps, float)
    reach = float(reach_mm if reach_mm is not None else preset.max_depth_mm) + 10.0
    crop, half_z = _reach_region(ct, sset, preset, centre, body, reach)
    rules, rule_masks = _rules_in_reach(sset, preset, crop)
    margins = np.array([r.margin_mm for r in rules], dtype=np.float64)
    groups, fields, group_labels, pool = _clearance_fields(crop, rule_masks, margins)
    labels, lung, unidentified = _path_labels(ct, sset, crop)
    vessel_field = _vessel_field(sset, crop, rules, rule_masks, groups, fields, pool)
    lung_smooth = lung.view(np.uint8) if lung.any() else None
    skin_lps, skin_normal, outer = _skin(ct, body, crop, centre, reach, half_z)
    return _Context(crop, rules, rule_masks, margins, groups, fields, group_labels, labels, vessel_field,
                    lung_smooth, unidentified, skin_lps, skin_normal, outer, pool)


def _reach_region(ct: Image, sset: StructureSet, preset: Preset, centre: np.ndarray, body: np.ndarray,
                  reach: float) -> tuple[F.Crop, float | None]:
    """The crop a needle can reach (the craniocaudal slab; shrunk to what holds anything) and
    the slab's half-height (None when the preset sets no craniocaudal limit)."""
    half_z = None
    if preset.max_craniocaudal_deg < 90.0:
        half_z = float(reach - 10.0) * float(np.sin(np.radians(preset.max_craniocaudal_deg))) + 10.0
    crop = _shrink_to_content(F.crop_around(ct.shape, ct.affine, centre, reach, half_z), body, sset)
    return crop, half_z


def _rules_in_reach(sset: StructureSet, preset: Preset, crop: F.Crop) -> tuple[list[AvoidRule], list[np.ndarray]]:
    """The avoid rules with a structure in the crop, and those structures' masks on it: a rule
    with no structure in reach can never be broken, so it gets no field."""
    named = {r.name for r in preset.avoid if r.name}
    rules, rule_masks = [], []
    for r in preset.avoid:
        m = _rule_mask(sset, r, named, crop.slices)
        if m.any():
            rules.append(r)
            rule_masks.append(m)
    return rules, rule_masks


def _clearance_fields(crop: F.Crop, rule_masks: list[np.ndarray], margins: np.ndarray
                      ) -> tuple[list[list[int]], np.ndarray, list[np.ndarray | None], np.ndarray]:
    """One distance field per distinct margin: a path keeps every rule of a group exactly when
    it keeps the group's margin from the union of their structures.

    The fields are computed on blocks of the grid made about isotropic (any voxel of a block set
    sets the block): the bounds read from them are widened by the block's half-diagonal, and
    whatever they cannot decide is measured exactly on the full grid. Returns the groups (rule
    indices), the fields, each group's labels (1 + the index in the group of the rule whose
    structure is at a voxel; None for a group of one) and the block size (i, j, k).
    """
    groups: list[list[int]] = []
    for r in range(len(rule_masks)):
        same = next((g for g in groups if margins[g[0]] == margins[r]), None)
        if same is None:
            groups.append([r])
        else:
            same.append(r)
    pool = F.pooling_factors(crop.spacing)
    pooled_shape = tuple(-(-n // int(f)) for n, f in zip(crop.shape, pool[::-1]))
    fields = np.empty((len(groups),) + pooled_shape, dtype=np.float32)
    group_labels: list[np.ndarray | None] = []
    for g, members in enumerate(groups):
        if len(members) == 1:
            union = rule_masks[members[0]]
            group_labels.append(None)
        else:
            lab = np.zeros(crop.shape, np.uint8)
            for n, r in enumerate(members, start=1):
                lab[rule_masks[r]] = n
            union = lab > 0
            group_labels.append(lab)
        fields[g] = F.distance_field(F.pool_any(union, pool), crop.spacing * pool)
    return groups, fields, group_labels, pool


def _path_labels(ct: Image, sset: StructureSet, crop: F.Crop) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What the soft criteria read along a path: the label flags (lung, fissure, emphysema,
    fissures unknown, lobe index), the lung mask, and the dense tissue no structure names."""
    sl = crop.slices
    lung = sset.union(classes=LUNG_CLASSES, region=sl)
    labels = np.zeros(crop.shape, np.uint8)
    lobes = [s for s in sset if s.cls == StructureClass.LOBE]
    for idx, s in enumerate(lobes[:7], start=1):
        labels[sset.mask(s.name, region=sl)] |= np.uint8(idx << LOBE_SHIFT)
    labels[lung] |= IN_LUNG
    labels[sset.union(classes=[StructureClass.FISSURE], region=sl)] |= IN_FISSURE
    # A lung with neither lobes nor fissure voxels in it (its fissures were not found, or were
    # not given): crossings there cannot be counted, and each path says how far it runs there.
    mapped = [s for s in sset if s.cls in (StructureClass.LOBE, StructureClass.FISSURE)]
    for s in sset.by_class(StructureClass.LUNG):
        if not any(s.overlaps(m) for m in mapped):
            labels[sset.mask(s.name, region=sl)] |= FISSURES_UNKNOWN
    emph = sset.union(classes=[StructureClass.EMPHYSEMA], region=sl)
    if not emph.any() and lung.any():
        hu = ndimage.uniform_filter(ct.voxels[sl].astype(np.float32), size=3)
        emph = lung & (hu < -950)
    labels[emph & lung] |= IN_EMPHYSEMA
    return labels, lung, _unidentified_tissue(ct, sset, sl, lung)


def _vessel_field(sset: StructureSet, crop: F.Crop, rules: list[AvoidRule], rule_masks: list[np.ndarray],
                  groups: list[list[int]], fields: np.ndarray, pool: np.ndarray) -> np.ndarray | None:
    """The distance to the vessels (length near vessels, a soft criterion); None without vessels.
    The fields of the rules on vessels already hold it when they cover every vessel."""
    vessels = sset.union(classes=[StructureClass.VESSEL], region=crop.slices)
    if not vessels.any():
        return None
    of_vessels = [k for k, r in enumerate(rules)
                  if (sset[r.name].cls if r.name else r.cls) == StructureClass.VESSEL]
    covered = np.logical_or.reduce([rule_masks[k] for k in of_vessels]) if of_vessels else None
    alone = [g for g, members in enumerate(groups) if set(members) <= set(of_vessels)]
    if covered is not None and np.array_equal(covered, vessels) and \
            {k for g in alone for k in groups[g]} == set(of_vessels):
        return fields[alone].min(axis=0)
    return F.distance_field(F.pool_any(vessels, pool), crop.spacing * pool)


def _skin(ct: Image, body: np.ndarray, crop: F.Crop, centre: np.ndarray, reach: float, half_z: float | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The skin voxel centres of the crop (LPS) with their outward normals, and the skin beyond
    the craniocaudal slab but within reach (too steep for any needle, counted as such)."""
    lo, hi = np.array(crop.lo), np.array(crop.lo) + np.array(crop.shape)
    idx = F.skin_voxels(body, lo, hi)
    # outward: against the gradient of the smoothed body indicator (the body beyond the crop counts)
    normal = -_smoothed_gradient_lps(body, idx, ct.affine)
    idx -= np.array(crop.lo)
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-6
    skin_lps = idx[ok][:, ::-1].astype(float) @ crop.affine[:3, :3].T + crop.affine[:3, 3]
    skin_normal = normal[ok] / norm[ok, None]
    outer = np.zeros((0, 3))
    if half_z is not None:
        ball = F.crop_around(ct.shape, ct.affine, centre, reach)
        b_lo = np.array(ball.lo)
        kji = F.skin_voxels(body, b_lo, b_lo + np.array(ball.shape), lo, hi)  # the ball's box minus the slab
        outer = kji[:, ::-1].astype(float) @ ct.affine[:3, :3].T + ct.affine[:3, 3]
    return skin_lps, skin_normal, outer


def _unidentified_tissue(ct: Image, sset: StructureSet, sl: tuple[slice, slice, slice], lung: np.ndarray
                         ) -> np.ndarray | None:
    """Dense voxels (3-voxel mean above UNIDENTIFIED_HU) in no structure but the lungs and the body,
    within the box of the lungs on the crop (the lung stretch of any path lies in it)."""
    idx = [np.flatnonzero(lung.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(v) == 0 for v in idx):
        return None
    box = tuple(slice(int(v[0]), int(v[-1]) + 1) for v in idx)
    region = tuple(slice(s.start + b.start, s.start + b.stop) for s, b in zip(sl, box))
    hu = ndimage.uniform_filter(ct.voxels[region].astype(np.float32), size=3)
    named = sset.union(classes=[c for c in StructureClass if c not in (*LUNG_CLASSES, StructureClass.BODY)],
                       region=region)
    out = np.zeros(lung.shape, np.uint8)
    out[box] = (hu > UNIDENTIFIED_HU) & ~named
    return out


def _shrink_to_content(crop: F.Crop, body: np.ndarray, sset: StructureSet) -> F.Crop:
    """The part of ``crop`` that holds the body or any structure (nothing else can be met)."""
    lo = np.array(crop.lo)
    hi = lo + np.array(crop.shape)
    b = body[crop.slices]
    c_lo, c_hi = hi.copy(), lo.copy()
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(b.any(axis=other))
        if len(hit):
            c_lo[axis], c_hi[axis] = lo[axis] + hit[0], lo[axis] + hit[-1] + 1
    for s in sset:
        s_lo = np.array(s.offset)
        s_hi = s_lo + np.array(s.mask.shape)
        c_lo, c_hi = np.minimum(c_lo, np.maximum(s_lo, lo)), np.maximum(c_hi, np.minimum(s_hi, hi))
    c_lo, c_hi = np.maximum(c_lo - 1, lo), np.minimum(c_hi + 1, hi)
    if np.any(c_hi <= c_lo):
        return crop
    return F.sub_crop(crop, tuple(c_lo), tuple(c_hi - c_lo))  # type: ignore[arg-type]


def _smoothed_gradient_lps(mask: np.ndarray, kji: np.ndarray, affine: np.ndarray, sigma_mm: float = 2.0
                           ) -> np.ndarray:
    """Gradient (LPS) of ``mask``'s indicator smoothed by a Gaussian of ``sigma_mm``, at voxels ``kji`` (n, 3)."""
    sp = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    g = F.smoothed_gradient(mask.view(np.uint8), kji, sp, sigma_mm, 2.5 * sigma_mm)
    direction = np.asarray(affine, float)[:3, :3] / sp  # unit axis vectors as columns
    return g @ direction.T


def target_side(target: Target) -> str | None:
    """"left" or "right" when the target's label ends so (``knee_effusion_right``), else None."""
    return side_of_label(target.label)


def side_of_label(label: str | None) -> str | None:
    """"left" or "right" when a structure's label ends so, else None."""
    label = (label or "").lower()
    for side in ("left", "right"):
        if label.endswith("_" + side) or label.endswith(" " + side) or label == side:
            return side
    return None


def _position_of(normals: np.ndarray) -> np.ndarray:
    """The patient position that puts each entry up: the axial direction of its skin normal."""
    nx, ny = normals[:, 0], normals[:, 1]
    out = np.where(np.abs(ny) >= np.abs(nx), np.where(ny < 0, "supine", "prone"),
                   np.where(nx > 0, "decubitus_right", "decubitus_left"))
    return out


@dataclass
class _Candidates:
    """Every skin point within reach of the longest needle, with what each step decided of it."""

    entries: np.ndarray  # (n, 3) LPS
    normals: np.ndarray  # (n, 3) outward skin normals; NaN beyond the prepared slab
    d: np.ndarray  # (n, 3) unit direction entry -> target
    length: np.ndarray  # (n,) mm
    reason: np.ndarray  # (n,) object: "" while feasible, else the first hard constraint broken
    positions: np.ndarray | None = None  # (n,) the patient position that puts the entry up
    skin_angle: np.ndarray | None = None  # (n,) degrees between the needle and the skin normal

    def reject(self, mask: np.ndarray, why: str) -> None:
        """Rule out the candidates of ``mask`` not yet ruled out, for ``why``."""
        self.reason[(self.reason == "") & mask] = why

    @property
    def open(self) -> np.ndarray:
        return np.flatnonzero(self.reason == "")


def plan(
    ct: Image,
    sset: StructureSet,
    target: Target,
    preset: Preset,
    body: np.ndarray,
    n_best: int = 5,
    context: _Context | None = None,
    side: str | None = None,
    entry_near: tuple[Any, float] | None = None,
) -> PlanResult:
    """Plan trajectories to ``target``; ``context`` from :func:`prepare` may be reused to re-plan.

    ``side`` ("left" or "right" of the patient) resolves a lateral or medial approach; by
    default it is read from the target's label (``..._left`` / ``..._right``). ``entry_near``
    (a point, a radius in mm) keeps only the skin entries within that distance of the point:
    a new trajectory from a needle's current skin puncture (coaxial technique), checked like any.

    Steps, each ruling candidates out for one reason (the first broken is the one counted):
    :func:`_candidates`, :func:`_check_geometry` (craniocaudal angle, approach side, insertion
    angle, approach cone), :func:`_check_clearance`, :func:`_check_ultrasound`; then the feasible
    ones are scored (:func:`_score`) and the best distinct ones kept (:func:`_choose`).
    """
    t0 = time.perf_counter()
    tgt = np.asarray(target.point, float)
    ctx = context or prepare(ct, sset, preset, tgt, body)
    t_prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    cand = _candidates(ctx, tgt, preset, entry_near)
    _check_geometry(cand, preset, side if side is not None else target_side(target))
    min_clear = _check_clearance(ctx, cand, tgt, preset)
    probes = _check_ultrasound(ctx, cand, tgt, preset)
    feasible = cand.open
    t_hard = time.perf_counter() - t1

    t2 = time.perf_counter()
    radius = 0.5 * float(target.max_diameter_mm or target.diameter_mm or 0.0)
    metrics, score = _score(ctx, cand, feasible, tgt, radius, preset, min_clear)
    t_soft = time.perf_counter() - t2

    trajectories = _choose(cand, feasible, metrics, score, tgt, preset, probes, n_best)
    all_scores = np.full(len(cand.entries), np.nan)
    all_scores[feasible] = score
    rejected: dict[str, int] = {}
    for why in cand.reason[cand.reason != ""]:
        rejected[why] = rejected.get(why, 0) + 1
    n = len(cand.entries)
    return PlanResult(
        status="ok" if trajectories else "no_safe_path",
        trajectories=trajectories, rejected=dict(sorted(rejected.items(), key=lambda kv: -kv[1])),
        n_candidates=n, explanation=_explain(n, rejected, len(feasible)),
        risk_map={"entries": cand.entries, "score": all_scores, "reason": cand.reason.astype(str)},
        timings_s={"prepare": t_prep, "hard": t_hard, "soft": t_soft, "total": time.perf_counter() - t0},
        hard_margins_mm={r.key: r.margin_mm + preset.needle_radius_mm for r in ctx.rules},
    )


def _candidates(ctx: _Context, tgt: np.ndarray, preset: Preset, entry_near: tuple[Any, float] | None = None
                ) -> _Candidates:
    """The skin points the longest needle reaches (with its reserve outside the skin); the skin
    beyond the prepared slab has no normal (NaN) and is too steep for any needle. With
    ``entry_near`` only the skin points within its radius of its point."""
    all_skin = np.concatenate([ctx.skin_lps, ctx.outer_skin_lps])
    all_normals = np.concatenate([ctx.skin_normal, np.full((len(ctx.outer_skin_lps), 3), np.nan)])
    if entry_near is not None:
        near = np.linalg.norm(all_skin - np.asarray(entry_near[0], float), axis=1) <= float(entry_near[1])
        all_skin, all_normals = all_skin[near], all_normals[near]
    vec = tgt - all_skin
    length = np.linalg.norm(vec, axis=1)
    keep = (length > 1.0) & (length <= preset.max_depth_mm)
    entries, normals, vec, length = all_skin[keep], all_normals[keep], vec[keep], length[keep]
    return _Candidates(entries, normals, vec / length[:, None], length, np.full(len(entries), "", dtype=object))


def _check_geometry(cand: _Candidates, preset: Preset, side: str | None) -> None:
    """The gantry's limit first, then the patient's position, the skin angle and the approach cone."""
    d, normals = cand.d, cand.normals
    n = len(cand.entries)
    cc_angle = np.degrees(np.arcsin(np.clip(np.abs(d[:, 2]), 0, 1)))
    cand.reject(cc_angle > preset.max_craniocaudal_deg, "craniocaudal_angle")
    outside = np.isnan(normals[:, 0])
    if np.any(outside & (cand.reason == "")):  # pragma: no cover - the slab is sized so this cannot happen
        raise AssertionError("a candidate outside the prepared region passed the craniocaudal limit")
    if preset.fixed_position is not None:  # a limb: reached from any side, the patient stays put
        cand.positions = np.full(n, preset.fixed_position, dtype=object)
    else:
        cand.positions = np.where(outside, "", _position_of(np.nan_to_num(normals)))
        cand.reject(~np.isin(cand.positions, preset.positions), "approach_side")
    with np.errstate(invalid="ignore"):
        cand.skin_angle = np.degrees(np.arccos(np.clip(-(d * normals).sum(axis=1), -1, 1)))
    cand.reject(cand.skin_angle > preset.max_angle_from_skin_normal_deg, "insertion_angle")
    if preset.approach is not None:
        way = preset.approach.vector(side)
        off = np.degrees(np.arccos(np.clip(-(d @ way), -1, 1)))  # -d: from the target towards the entry
        cand.reject(off > preset.approach.max_angle_deg, "approach_direction")


def _check_clearance(ctx: _Context, cand: _Candidates, tgt: np.ndarray, preset: Preset) -> np.ndarray:
    """Clearance from every avoided structure (margin plus needle radius): the safe bounds of the
    distance fields first; where they cannot decide (within a block of the margin), the exact
    closed-form distance of that stretch of the path to the voxel centres. Returns (n, rules) a
    lower bound of each candidate's clearance from each rule's structures (NaN: not measured)."""
    n = len(cand.entries)
    todo = cand.open
    min_clear = np.full((n, len(ctx.rules)), np.nan, np.float32)
    if not (len(todo) and len(ctx.rules)):
        return min_clear
    starts = ctx.crop.lps_to_ijk(cand.entries[todo])
    tip = ctx.crop.lps_to_ijk(tgt[None])[0]
    ends = np.repeat(tip[None], len(todo), axis=0)
    need = preset.needle_radius_mm + STEP_MM / 2.0
    gm = ctx.group_margins
    fail, uncertain, mc, unc_lo, unc_hi, fail_at = F.march_clearance(
        ctx.fields, gm, ctx.field_spacing, F.to_pooled(starts, ctx.pool), F.to_pooled(ends, ctx.pool), STEP_MM,
        need, ctx.field_cell)
    path_mm = np.linalg.norm((ends - starts) * ctx.crop.spacing, axis=1)
    seg = ends - starts
    fail_rule = np.full(len(todo), -1, np.int64)
    for g in range(len(ctx.groups)):
        # A sure failure: the rule of the group whose structure is nearest where it happened.
        hit = np.flatnonzero(fail == g)
        if len(hit):
            at = starts[hit] + (fail_at[hit] / np.maximum(path_mm[hit], 1e-9))[:, None] * seg[hit]
            fail_rule[hit] = ctx.rule_at(g, at, gm[g] + need)
    for g in range(len(ctx.groups)):
        # Where the field cannot decide (within a voxel of the margin), decide exactly, on
        # the stretch of the path where it could not (the rest is proven clear).
        ask = np.flatnonzero((fail_rule == -1) & uncertain[:, g])
        if len(ask):
            span = np.maximum(path_mm[ask], 1e-9)
            u0 = np.clip((unc_lo[ask, g] - STEP_MM) / span, 0.0, 1.0)[:, None]
            u1 = np.clip((unc_hi[ask, g] + STEP_MM) / span, 0.0, 1.0)[:, None]
            # exact distance of the stretch to the voxel centres (closed form, no sampling);
            # the limit is the margin plus the needle radius, without the sampling slack
            limit = gm[g] + preset.needle_radius_mm
            dmin, lab = F.exact_segment_check(ctx.group_volume(g), starts[ask] + u0 * seg[ask],
                                              starts[ask] + u1 * seg[ask], ctx.crop.spacing, limit,
                                              EXACT_PIECE_MM)
            bad = dmin < limit
            members = np.array(ctx.groups[g])
            fail_rule[ask[bad]] = members[np.maximum(lab[bad].astype(np.int64) - 1, 0)]
            mc[ask, g] = np.maximum(mc[ask, g], np.minimum(dmin, F.BIG)).astype(np.float32)
    for g, members in enumerate(ctx.groups):
        min_clear[np.ix_(todo, members)] = mc[:, [g]]  # a lower bound for each rule of the group
    for r, rule in enumerate(ctx.rules):
        cand.reason[todo[fail_rule == r]] = rule.key
    return min_clear


def _check_ultrasound(ctx: _Context, cand: _Candidates, tgt: np.ndarray, preset: Preset) -> dict[int, Any]:
    """Under ultrasound guidance the needle must lie in the plane of a probe placed on the skin
    (see :mod:`.ultrasound`): the probe of each candidate that has one."""
    probes: dict[int, Any] = {}
    if preset.guidance != "us":
        return probes
    from .ultrasound import UltrasoundLimits, place_probes

    ok = cand.open
    placed = place_probes(cand.entries[ok], cand.normals[ok], tgt, ctx.skin_lps, ctx.skin_normal,
                          UltrasoundLimits.from_preset(preset.raw))
    for c, probe in zip(ok, placed):
        if probe is None:
            cand.reason[c] = "ultrasound_window"
        else:
            probes[int(c)] = probe
    return probes


def _score(ctx: _Context, cand: _Candidates, feasible: np.ndarray, tgt: np.ndarray, radius: float, preset: Preset,
           min_clear: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The soft criteria of the feasible candidates and their scores (the preset's weights;
    lower is better)."""
    metrics = _soft_criteria(ctx, cand.entries[feasible], tgt, cand.d[feasible], cand.length[feasible], radius)
    excess = (min_clear[feasible] - ctx.margins[None, :]).min(axis=1) if len(ctx.rules) \
        else np.full(len(feasible), 99.0)
    metrics["min_clearance_excess_mm"] = excess
    score = np.zeros(len(feasible))
    for key, weight in preset.weights.items():
        if key == "clearance_deficit_mm":
            score += weight * np.maximum(0.0, 10.0 - excess)
        elif key == "pleura_crossings_beyond_first":
            score += weight * np.maximum(0.0, metrics["pleura_crossings"] - 1)
        elif key in metrics:
            score += weight * metrics[key]
    return metrics, score


def _choose(cand: _Candidates, feasible: np.ndarray, metrics: dict[str, np.ndarray], score: np.ndarray,
            tgt: np.ndarray, preset: Preset, probes: dict[int, Any], n_best: int) -> list[Trajectory]:
    """The best spatially distinct feasible candidates (entries at least DISTINCT_ENTRY_MM apart),
    ranked, with the Pareto-optimal ones marked."""
    chosen: list[int] = []
    for f in np.argsort(score, kind="stable"):
        e = cand.entries[feasible[f]]
        if all(np.linalg.norm(e - cand.entries[feasible[c]]) >= DISTINCT_ENTRY_MM for c in chosen):
            chosen.append(int(f))
        if len(chosen) >= n_best:
            break
    length, d = cand.length, cand.d
    pareto = _pareto(np.column_stack([length[feasible], metrics["lung_mm"], metrics["fissures"],
                                      -metrics["min_clearance_excess_mm"]])) \
        if len(feasible) else np.zeros(0, bool)
    trajectories = []
    for rank, f in enumerate(chosen, start=1):
        c = feasible[f]
        needle = preset.needle_for(float(length[c]))
        assert needle is not None  # every candidate is within the longest needle's reach
        trajectories.append(Trajectory(
            rank=rank, entry=cand.entries[c], target=tgt, length_mm=float(length[c]), needle=needle,
            position=str(cand.positions[c]),  # type: ignore[index]
            angle_from_vertical_deg=float(np.degrees(np.arctan2(abs(d[c, 0]), abs(d[c, 1])))),
            craniocaudal_deg=float(np.degrees(np.arcsin(np.clip(d[c, 2], -1, 1)))),
            angle_from_skin_normal_deg=float(cand.skin_angle[c]),  # type: ignore[index]
            score=float(score[f]), metrics={k: float(v[f]) for k, v in metrics.items()},
            pareto=bool(pareto[f]), probe=probes.get(int(c)),
        ))
    return trajectories


def _soft_criteria(ctx: _Context, entries: np.ndarray, tgt: np.ndarray, d: np.ndarray, length: np.ndarray,
                   target_radius_mm: float = 0.0) -> dict[str, np.ndarray]:
    n = len(entries)
    out = {k: np.zeros(n) for k in ("length_mm", "lung_mm", "pleura_crossings", "fissures",
                                    "lung_mm_fissures_unknown", "emphysema_mm", "pleura_angle_deg",
                                    "vessel_near_mm", "unidentified_tissue_mm")}
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
    # Fissures crossed: changes of lobe along the path, plus, where the lung has no lobes (a lung
    # whose fissures were not found well enough to split it), entries into fissure voxels.
    lobe = np.where(valid, lab >> LOBE_SHIFT, 0)
    fis = np.zeros(n)
    for c in range(n):
        seq = lobe[c][lobe[c] > 0]
        fis[c] = np.count_nonzero(seq[1:] != seq[:-1]) if len(seq) > 1 else 0
    fm = ((lab & IN_FISSURE) > 0) & valid & (lobe == 0)
    fis += (fm[:, 1:] & ~fm[:, :-1]).sum(axis=1) + fm[:, 0]
    out["fissures"] = fis
    out["lung_mm_fissures_unknown"] = (((lab & FISSURES_UNKNOWN) > 0) & lung).sum(axis=1) * h
    if ctx.unidentified is not None:
        # Dense tissue in no structure between the first and the last lung sample of the path,
        # short of the target (its radius and a rim): what the segmentation may have missed.
        # The dense run the path ends in is the target itself (a lesion, named or not).
        ulab = F.march_labels(ctx.unidentified, starts, ends, ctx.crop.spacing, SOFT_STEP_MM)
        dense = ulab == 1
        m = ulab.shape[1]
        pos = np.arange(m)[None, :]
        first = np.where(lung.any(axis=1), lung.argmax(axis=1), m)[:, None]
        last = np.where(lung.any(axis=1), m - 1 - lung[:, ::-1].argmax(axis=1), -1)[:, None]
        from_end = (valid.sum(axis=1) - 1)[:, None] - pos  # samples back from the target
        end_run = np.where(~dense & (from_end >= 0), from_end, m).min(axis=1)  # the target's dense run
        keep_off = np.maximum(end_run * h, target_radius_mm) + UNIDENTIFIED_TARGET_RIM_MM
        counted = dense & (pos >= first) & (pos <= last) & (from_end * h[:, None] > keep_off[:, None])
        out["unidentified_tissue_mm"] = counted.sum(axis=1) * h
    if ctx.vessel_field is not None:  # on the pooled grid of the fields (a soft criterion)
        vlab = F.march_labels((ctx.vessel_field < NEAR_VESSEL_MM).astype(np.uint8), F.to_pooled(starts, ctx.pool),
                              F.to_pooled(ends, ctx.pool), ctx.field_spacing, SOFT_STEP_MM)
        out["vessel_near_mm"] = ((vlab == 1).sum(axis=1)) * h
    if ctx.lung_smooth is not None:
        first = np.where(lung.any(axis=1), lung.argmax(axis=1), -1)
        rows = np.flatnonzero(first >= 0)
        if len(rows):
            t = first[rows] / np.maximum(valid[rows].sum(axis=1) - 1, 1)
            p = starts[rows] + t[:, None] * (ends[rows] - starts[rows])
            ijk = np.clip(np.rint(p).astype(int), 0, np.array(ctx.labels.shape[::-1]) - 1)
            gn = _smoothed_gradient_lps(ctx.lung_smooth, ijk[:, ::-1], ctx.crop.affine)
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
