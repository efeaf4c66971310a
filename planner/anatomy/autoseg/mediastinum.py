"""Heart and descending aorta from CT by shape, on the ``[s, p, l]`` working grid.

No contrast is assumed: unenhanced blood and myocardium (30-60 HU) look like every other
soft tissue, so both organs are found by where they lie and what shape they have.

* **Heart**: the one large soft-tissue body between the two lungs, in front of the spine.
  Soft tissue that has lung on both its sides in its own row (left-right) and lies inside the
  lungs' convex hull in its slice is the mediastinum; eroding it by 12 mm cuts the great
  vessels, the oesophagus and the thymus off, the largest piece left is the heart's core, and a
  geodesic dilation inside the mediastinum gives it back its wall. Pericardial fat (-100 HU)
  bounds it in front and at the sides. Accepted only when its volume is that of a heart.
* **Descending aorta**: per axial slice, the centre of the roundest soft-tissue disc of 7-18 mm
  radius beside and in front of the vertebral body (left of it, where the aorta runs from the
  arch to the hiatus), tracked from slice to slice so that a jump of more than a few mm is
  refused, and drawn as those discs. The arch, the ascending aorta and the pulmonary trunk
  are not found this way; a note says so.

What is not found is left empty with a note, never guessed: an empty mask tells the planner
nothing is known there, which the report states.
"""

from __future__ import annotations

import edt
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from .grid import WorkGrid, bbox, dilate, erode, largest_component

#: Bone at most this far from the lungs is the chest wall (ribs, sternum, spine).
WALL_MM = 30.0
#: Forward extension of the between-lungs tissue (see ``between_lungs``), mm.
FRONT_MIN_MM = 50.0
FRONT_MAX_MM = 50.0
#: Soft tissue (blood, myocardium, vessel wall; contrast-enhanced blood up to 500 HU) after a
#: light smoothing; fat and lung are below, bone above.
SOFT_LOW_HU = -10.0
SOFT_HIGH_HU = 500.0
#: Erosion that separates the heart from the vessels leaving it (the aorta is < 40 mm across).
HEART_CORE_MM = 12.0
#: Depth (mm from its edge) of the cores that seed the split of heart from liver dome.
HEART_DEEP_MM = 22.0
#: Tissue with the right lung at most this far straight above it is liver dome, not heart.
LIVER_DOME_MM = 20.0
#: A heart, from a small adult's to a dilated one (ml); outside this range nothing is reported.
HEART_MIN_ML = 250.0
HEART_MAX_ML = 1600.0
#: Descending aorta: disc radius (mm) and where its centre may lie from the vertebral body
#: centre (mm): to the patient's left by AORTA_LEFT_MM, in front by AORTA_ANTERIOR_MM.
AORTA_RADIUS_MM = (7.0, 18.0)
AORTA_LEFT_MM = (-5.0, 40.0)
AORTA_ANTERIOR_MM = (12.0, 60.0)
#: Narrowest body cross-section (left-right, mm) searched for an aorta: a trunk, not a limb.
TRUNK_MIN_WIDTH_MM = 180.0
#: Mediastinal vessels: disc radius (mm), least share of free rim, shortest column (mm).
MED_VESSEL_RADIUS_MM = (4.0, 20.0)
MED_VESSEL_RIM_FREE = 0.5
MED_VESSEL_MIN_LENGTH_MM = 20.0
#: Least share of the ring just outside the disc that must be free of soft tissue.
AORTA_RIM_FREE = 0.4
#: Largest move of the centre between neighbouring slices (mm per mm along the body axis).
AORTA_MAX_SLOPE = 1.0
#: Shortest tracked column kept (mm along the body axis).
AORTA_MIN_RUN_MM = 40.0


def soft_tissue(hu: np.ndarray, bone: np.ndarray, sp) -> np.ndarray:
    """Soft tissue after a light smoothing, 2 mm clear of bone (compute once, pass to the steps)."""
    smooth = ndi.uniform_filter(hu.astype(np.float32), size=3)
    return (smooth > SOFT_LOW_HU) & (smooth < SOFT_HIGH_HU) & ~dilate(bone, 2.0, sp)


def _in_front_of_spine(shape: tuple[int, ...], spine: np.ndarray, sp, mm: float = 10.0) -> np.ndarray:
    """``[s, p, l]`` voxels more than ``mm`` in front of the vertebral body centre of their slice
    (every voxel of a slice without one)."""
    pp = np.arange(shape[1])[None, :, None]
    front = np.where(np.isnan(spine[:, 0]), np.inf, spine[:, 0] - mm / sp[1])[:, None, None]
    return np.broadcast_to(pp < front, shape)


def _slice_discs(sl: np.ndarray, sp, radius_mm: tuple[float, float], rim_free: float,
                 where: np.ndarray | None = None) -> np.ndarray:
    """``(p, l, radius_mm)`` of the round pieces of a 2D mask: local maxima of the in-plane
    distance to its edge with a radius in ``radius_mm``, inside ``where``, whose outer ring is
    free of the mask for at least ``rim_free`` of its length (see :func:`_rim_free`)."""
    lo, hi = radius_mm
    size = (max(3, int(2 * lo / sp[1]) | 1), max(3, int(2 * lo / sp[2]) | 1))
    d = edt.edt(np.ascontiguousarray(sl), anisotropy=(float(sp[1]), float(sp[2])))
    peak = (d >= ndi.maximum_filter(d, size=size)) & (d >= lo) & (d <= hi)
    if where is not None:
        peak &= where
    p, l = np.nonzero(peak)
    keep = [k for k in range(len(p)) if _rim_free(sl, p[k], l[k], d[p[k], l[k]], sp) >= rim_free]
    return np.c_[p[keep], l[keep], d[p[keep], l[keep]]].astype(float)


def _disc(shape2d: tuple[int, int], p: float, l: float, r: float, sp) -> np.ndarray:
    """A disc of radius ``r`` mm (plus half a voxel) around ``(p, l)`` on a slice."""
    pp = np.arange(shape2d[0])[:, None]
    ll = np.arange(shape2d[1])[None, :]
    return ((pp - p) * sp[1]) ** 2 + ((ll - l) * sp[2]) ** 2 <= (r + 0.5 * float(sp[1:].mean())) ** 2


def _hull(mask2d: np.ndarray) -> np.ndarray:
    """Convex hull of a 2D mask, computed on its bounding box only."""
    out = np.zeros(mask2d.shape, bool)
    box = bbox(mask2d)
    if box is not None:
        out[box] = convex_hull_image(mask2d[box])
    return out


def between_lungs(left: np.ndarray, right: np.ndarray, wall: np.ndarray | None = None,
                  spine_p: np.ndarray | None = None, sp=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels whose nearest lung in their own row is the right lung on their right and the left
    lung on their left (and not lung themselves), and those in front of them up to ``wall``
    (the bony chest wall, when given: the heart often reaches further forward than the lungs),
    all inside the convex hull of the lungs (and the wall) in their slice. The forward extension is made
    only in columns where the between-lungs tissue already reaches FRONT_MIN_MM in front of
    the vertebral body centre (``spine_p``, per slice; ``sp`` the voxel size), and by at most
    FRONT_MAX_MM: the heart, not the posterior mediastinum above the liver and stomach.

    The liver dome, which bulges up into the right lung's base, has the right lung on both
    sides in its rows, so it is not between the lungs; the heart is.
    """
    out = np.zeros(left.shape, bool)
    cols = np.arange(left.shape[2])
    rows = np.arange(left.shape[1])[:, None]
    for s in np.flatnonzero(left.any(axis=(1, 2)) & right.any(axis=(1, 2))):
        lab = np.where(right[s], 1, 0) + np.where(left[s], 2, 0)
        lungs = lab > 0
        # columns l grow to the patient's left: the nearest lung at smaller l is on the right
        last = np.maximum.accumulate(np.where(lungs, cols[None, :], -1), axis=1)
        right_side = np.take_along_axis(lab, np.maximum(last, 0), axis=1) * (last >= 0)
        nxt = np.minimum.accumulate(np.where(lungs, cols[None, :], cols.size)[:, ::-1], axis=1)[:, ::-1]
        left_side = np.take_along_axis(lab, np.minimum(nxt, cols.size - 1), axis=1) * (nxt < cols.size)
        mid = (right_side == 1) & (left_side == 2) & ~lungs
        if not mid.any():
            continue
        if wall is None:
            out[s] = mid & _hull(lungs)
            continue
        top = np.where(mid.any(axis=0), mid.argmax(axis=0), -1)[None, :]
        front = (rows < top) & (rows >= top - FRONT_MAX_MM / sp[1])
        if spine_p is not None:
            ref = spine_p[s] if not np.isnan(spine_p[s]) else np.inf
            front &= (ref - top) * sp[1] >= FRONT_MIN_MM
        out[s] = (mid | front) & _hull(lungs | wall[s]) & ~lungs
    return out


def _below(lung: np.ndarray, tissue: np.ndarray, step_mm: float) -> np.ndarray:
    """Per voxel, how far (mm) up the body axis the lung is through ``tissue`` alone (inf when
    something else comes first)."""
    out = np.full(lung.shape, np.inf, np.float32)
    for s in range(lung.shape[0] - 2, -1, -1):
        nxt = np.where(lung[s + 1], 0.0, out[s + 1])
        out[s] = np.where(tissue[s], nxt + step_mm, np.inf)
    return out


def heart_work(hu: np.ndarray, left: np.ndarray, right: np.ndarray, bone: np.ndarray, airway: np.ndarray,
               spine: np.ndarray, grid: WorkGrid, soft: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
    """``(heart, note)`` on the working grid; an empty mask and the reason when not found.
    ``soft``: :func:`soft_tissue` of the scan, when already computed."""
    sp = grid.spacing_spl
    empty = np.zeros(hu.shape, bool)
    if not (left.any() and right.any()):
        return empty, None  # no chest in the scan: nothing to find, nothing to say
    lungs = left | right
    wall = bone & (edt.edt(np.ascontiguousarray(~lungs), anisotropy=tuple(float(x) for x in sp), parallel=2)
                   <= WALL_MM)
    soft = soft_tissue(hu, bone, sp) if soft is None else soft
    medi = (between_lungs(left, right, wall, spine[:, 0], sp) & soft & ~dilate(airway, 3.0, sp)
            & _in_front_of_spine(hu.shape, spine, sp))
    core = erode(medi, HEART_CORE_MM, sp)
    if not core.any():
        return empty, "heart not found: no soft tissue between the lungs wide enough for a heart"
    core = largest_component(core)
    it = int(np.ceil(HEART_CORE_MM / float(sp.min()))) + 1
    region = np.zeros(core.shape, bool)
    cb = bbox(core, it + 1)
    region[cb] = ndi.binary_dilation(core[cb], ndi.generate_binary_structure(3, 1), iterations=it, mask=medi[cb])
    # The liver dome bulges up into the right lung's base and can touch the heart's underside
    # across the diaphragm. Its tissue has the right lung straight above it; the heart's core
    # has not. Split the region between those two kinds of seed (watershed of the distance to
    # the region's edge) and keep the heart's basin.
    box = bbox(region, 2)
    sub = region[box]
    depth = edt.edt(np.ascontiguousarray(sub), anisotropy=tuple(float(x) for x in sp), parallel=2)
    below_lung = _below(right[box], sub, float(sp[0])) <= LIVER_DOME_MM
    seeds = np.zeros(sub.shape, np.int32)
    seeds[below_lung & (depth >= 0.5 * HEART_CORE_MM)] = 2
    heart_core = (depth >= HEART_DEEP_MM) & (seeds == 0)
    heart = np.zeros(hu.shape, bool)
    if heart_core.any():
        seeds[largest_component(heart_core)] = 1
        heart[box] = watershed(-depth, seeds, mask=sub) == 1
    heart = ndi.binary_fill_holes(heart)
    ml = float(heart.sum()) * grid.voxel_ml
    if ml == 0.0:
        return empty, "heart not found between the lungs (the scan may not reach it)"
    if not HEART_MIN_ML <= ml <= HEART_MAX_ML:
        return empty, f"heart not found: the soft tissue between the lungs ({ml:.0f} ml) is not heart-sized"
    return heart, None


def _aorta_candidates(soft: np.ndarray, spine: np.ndarray, sp) -> list[np.ndarray]:
    """Per slice, the ``(p, l, radius_mm)`` of every aorta-sized disc of soft tissue beside
    the vertebral body (see :func:`_slice_discs`)."""
    out: list[np.ndarray] = [np.zeros((0, 3)) for _ in range(soft.shape[0])]
    pp = np.arange(soft.shape[1])[:, None]
    ll = np.arange(soft.shape[2])[None, :]
    for s in range(soft.shape[0]):
        if np.isnan(spine[s, 0]):
            continue
        ant = (spine[s, 0] - pp) * sp[1]
        lat = (ll - spine[s, 1]) * sp[2]
        window = (ant >= AORTA_ANTERIOR_MM[0]) & (ant <= AORTA_ANTERIOR_MM[1]) & \
                 (lat >= AORTA_LEFT_MM[0]) & (lat <= AORTA_LEFT_MM[1])
        if (soft[s] & window).any():
            out[s] = _slice_discs(soft[s], sp, AORTA_RADIUS_MM, AORTA_RIM_FREE, window)
    return out


def _rim_free(soft_slice: np.ndarray, p: int, l: int, r: float, sp) -> float:
    """Share of the ring 3 mm outside a disc that is not soft tissue (fat, lung, bone): high for
    a vessel, low for a disc fitted into a larger mass."""
    ang = np.linspace(0.0, 2 * np.pi, 36, endpoint=False)
    rr = r + 3.0
    pi = np.rint(p + rr * np.sin(ang) / sp[1]).astype(int)
    li = np.rint(l + rr * np.cos(ang) / sp[2]).astype(int)
    inside = (pi >= 0) & (pi < soft_slice.shape[0]) & (li >= 0) & (li < soft_slice.shape[1])
    free = np.ones(ang.size, bool)
    free[inside] = ~soft_slice[pi[inside], li[inside]]
    return float(free.mean())


def _track(cands: list[np.ndarray], sp) -> np.ndarray:
    """The smoothest long column through the candidates (dynamic programming: each slice's
    disc adds its radius, a chain may skip up to two slices, and may move at most
    ``AORTA_MAX_SLOPE`` mm per mm along the body axis); ``(p, l, r)`` per slice, NaN off it."""
    ns = len(cands)
    score = [np.zeros(len(c)) for c in cands]
    back: list[list[tuple[int, int] | None]] = [[None] * len(c) for c in cands]
    tol = 2.0 * float(max(sp[1], sp[2]))
    for s in range(ns):
        for a, (p, l, r) in enumerate(cands[s]):
            best, arg = 0.0, None
            for gap in (1, 2, 3):
                q = s - gap
                if q < 0 or not len(cands[q]):
                    continue
                c = cands[q]
                step = np.hypot((c[:, 0] - p) * sp[1], (c[:, 1] - l) * sp[2])
                ok = step <= AORTA_MAX_SLOPE * gap * sp[0] + tol
                if ok.any():
                    val = np.where(ok, score[q], -np.inf)
                    b = int(np.argmax(val))
                    if val[b] - (gap - 1) * AORTA_RADIUS_MM[0] > best:
                        best, arg = float(val[b]) - (gap - 1) * AORTA_RADIUS_MM[0], (q, b)
            score[s][a] = r + best
            back[s][a] = arg
    out = np.full((ns, 3), np.nan)
    ends = [(score[s][a], s, a) for s in range(ns) for a in range(len(cands[s]))]
    if not ends:
        return out
    _, s, a = max(ends)
    chain = []
    node: tuple[int, int] | None = (s, a)
    while node is not None:
        chain.append(node)
        node = back[node[0]][node[1]]
    chain.reverse()
    idx = [q for q, _ in chain]
    if (idx[-1] - idx[0] + 1) * sp[0] < AORTA_MIN_RUN_MM:
        return out
    vals = np.array([cands[q][b] for q, b in chain])
    full = np.arange(idx[0], idx[-1] + 1)
    for k in range(3):
        out[full, k] = np.interp(full, idx, vals[:, k])
    return out


def aorta_work(hu: np.ndarray, bone: np.ndarray, spine: np.ndarray, grid: WorkGrid,
               heart: np.ndarray | None = None, body: np.ndarray | None = None,
               soft: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
    """``(descending aorta, note)`` on the working grid (``heart``: left out of the search;
    ``body``: slices narrower than a trunk, TRUNK_MIN_WIDTH_MM, are not searched, so that a
    femur in a knee scan is not taken for a vertebra)."""
    sp = grid.spacing_spl
    empty = np.zeros(hu.shape, bool)
    if body is not None:
        cols = body.any(axis=1)
        width = np.where(cols.any(axis=1), (cols.shape[1] - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)), 0)
        spine = np.where((width * sp[2] >= TRUNK_MIN_WIDTH_MM)[:, None], spine, np.nan)
    if np.isnan(spine[:, 0]).all():
        return empty, None  # no spine in the scan (a limb): no aorta to find
    soft = soft_tissue(hu, bone, sp) if soft is None else soft.copy()
    if heart is not None and heart.any():
        soft &= ~dilate(heart, 2.0, sp)
    track = _track(_aorta_candidates(soft, spine, sp), sp)
    if np.isnan(track[:, 0]).all():
        return empty, "aorta not found: no round soft-tissue column beside the spine"
    out = np.zeros(hu.shape, bool)
    for s in np.flatnonzero(~np.isnan(track[:, 0])):
        out[s] = _disc(hu.shape[1:], *track[s], sp) & (hu[s] > SOFT_LOW_HU)
    return out, None


def mediastinal_vessels_work(hu: np.ndarray, left: np.ndarray, right: np.ndarray, bone: np.ndarray,
                             airway: np.ndarray, spine: np.ndarray, grid: WorkGrid,
                             exclude: np.ndarray | None = None, soft: np.ndarray | None = None) -> np.ndarray:
    """Round soft-tissue columns between the lungs: the great vessels above the heart (superior
    vena cava, ascending aorta, pulmonary trunk and arteries, brachiocephalic and subclavian
    vessels), which mediastinal fat outlines even without contrast.

    Per axial slice, every disc of soft tissue of MED_VESSEL_RADIUS_MM whose rim is mostly fat,
    lung or air (a local maximum of the in-plane distance to the tissue's edge); discs that
    stack into a column at least MED_VESSEL_MIN_LENGTH_MM long are kept (a lymph node is
    shorter). The oesophagus, when it holds no air, is such a column too: it is kept, as it
    must be avoided as well. ``exclude`` (heart, aorta already found) is left out.
    """
    sp = grid.spacing_spl
    out = np.zeros(hu.shape, bool)
    if not (left.any() and right.any()):
        return out
    # between the lungs proper (not the chest wall in front of them), in front of the spine
    soft = ((soft_tissue(hu, bone, sp) if soft is None else soft) & between_lungs(left, right)
            & _in_front_of_spine(hu.shape, spine, sp) & ~dilate(airway, 2.0, sp))
    if exclude is not None and exclude.any():
        soft &= ~exclude
    for s in np.flatnonzero(soft.any(axis=(1, 2))):
        for p, l, r in _slice_discs(soft[s], sp, MED_VESSEL_RADIUS_MM, MED_VESSEL_RIM_FREE):
            out[s] |= _disc(soft.shape[1:], p, l, r, sp) & soft[s]
    lab, n = ndi.label(out)
    if n:
        objs = ndi.find_objects(lab)
        keep = np.zeros(n + 1, bool)
        for i, o in enumerate(objs, start=1):
            keep[i] = (o[0].stop - o[0].start) * sp[0] >= MED_VESSEL_MIN_LENGTH_MM
        out = keep[lab]
    return out

