"""Bone, and its split into spine, ribs, sternum, scapulae, clavicles and pelvis where the
position relative to the lungs and the mid-line makes the split reliable."""

from __future__ import annotations

import edt
import numpy as np
from scipy import ndimage as ndi

from .grid import WorkGrid, bbox, closing, components, distance_inside, fill_holes_2d

#: Bone is grown from voxels above BONE_HU (block averages) into those above MARROW_HU.
BONE_HU = 200.0
MARROW_HU = 120.0
#: Full-resolution bone edge (HU) used to refine the boundary of the coarse mask.
BONE_EDGE_FULL_HU = 160.0
#: A bright component is bone (not a contrast-filled vessel) when it holds cortex: this many
#: voxels above CORTEX_HU, or this fraction of its voxels.
CORTEX_HU = 450.0
CORTEX_MIN_VOXELS = 3
CORTEX_MIN_FRACTION = 0.01
#: Smallest bone piece kept (ml): calcified plaques and noise are smaller.
BONE_MIN_ML = 0.05
#: Closing radius (mm) that joins cortex around cancellous bone before filling.
BONE_CLOSE_MM = 5.0
#: Holes left unfilled: the spinal canal (CSF and cord, -30..60 HU, near the mid-line).
CANAL_HU = (-30.0, 60.0)
CANAL_MIN_AREA_MM2 = 80.0
CANAL_MAX_OFFSET_MM = 20.0


def bone_work(hu: np.ndarray, body: np.ndarray, grid: WorkGrid) -> np.ndarray:
    """Bone (cortex, marrow and medullary cavities) on the working grid."""
    sp = grid.spacing_spl
    high = (hu > BONE_HU) & body
    lab, n, sizes = components(high)
    if n == 0:
        return np.zeros(grid.shape, bool)
    cortex = np.bincount(lab[hu > CORTEX_HU].ravel(), minlength=n + 1)
    keep = (cortex >= CORTEX_MIN_VOXELS) & (cortex >= CORTEX_MIN_FRACTION * sizes)
    keep &= sizes * grid.voxel_ml >= BONE_MIN_ML
    keep[0] = False
    seeds = keep[lab]
    # Grow into cancellous bone (hysteresis): low components that hold a seed.
    low = (hu > MARROW_HU) & body
    lab, n, _ = components(low)
    hit = np.zeros(n + 1, bool)
    hit[np.unique(lab[seeds])] = True
    hit[0] = False
    bone = hit[lab]
    bone = closing(bone, BONE_CLOSE_MM, sp)
    bone = ndi.binary_fill_holes(bone)
    bone = _fill_marrow_2d(bone, hu, body, grid)
    return bone & body


def _fill_marrow_2d(bone: np.ndarray, hu: np.ndarray, body: np.ndarray, grid: WorkGrid) -> np.ndarray:
    """Fill holes in each axial slice (marrow, medullary cavities) except the spinal canal:
    a tube of CSF-like content (median HU in CANAL_HU) near the mid-line."""
    sp = grid.spacing_spl
    holes = fill_holes_2d(bone, axis=0) & ~bone
    lab, n, sizes = components(holes)
    if n == 0:
        return bone
    where = np.flatnonzero(lab)
    lb = lab.ravel()[where]
    hv = hu.ravel()[where]
    below = np.bincount(lb, weights=hv <= CANAL_HU[0], minlength=n + 1)
    above = np.bincount(lb, weights=hv >= CANAL_HU[1], minlength=n + 1)
    csf_like = (below < 0.5 * sizes) & (above < 0.5 * sizes)
    mid = _midline_l(body)
    s_of, _, l_of = np.unravel_index(where, bone.shape)
    off = np.bincount(lb, weights=l_of - mid[s_of], minlength=n + 1)
    off = np.abs(off / np.maximum(sizes, 1)) * sp[2]
    n_slices = np.array([0] + [o[0].stop - o[0].start for o in ndi.find_objects(lab)])
    area = sizes / np.maximum(n_slices, 1) * float(sp[1] * sp[2])
    canal = csf_like & (area > CANAL_MIN_AREA_MM2) & (off < CANAL_MAX_OFFSET_MM)
    canal[0] = True
    return bone | ~canal[lab]


def _midline_l(body: np.ndarray) -> np.ndarray:
    """Per axial slice, the l index half-way across the body (the array middle where empty)."""
    cols = body.any(axis=1)
    out = np.full(body.shape[0], body.shape[2] / 2.0)
    for s in np.flatnonzero(cols.any(axis=1)):
        c = np.flatnonzero(cols[s])
        out[s] = 0.5 * (c[0] + c[-1])
    return out


# --- split ---------------------------------------------------------------------------------------
def spine_centre(bone: np.ndarray, body: np.ndarray, grid: WorkGrid) -> np.ndarray:
    """Per axial slice, the centre ``(p, l)`` of the vertebral body (NaN where none): the
    deepest bone point near the mid-line in the posterior part of the body, smoothed along
    the spine and interpolated across slices without a detection."""
    sp = grid.spacing_spl
    ns = bone.shape[0]
    out = np.full((ns, 2), np.nan)
    ll = np.arange(bone.shape[2])
    pp = np.arange(bone.shape[1])
    mid_l = _midline_l(body)
    rows = body.any(axis=2)
    near = np.zeros(bone.shape, bool)
    for s in np.flatnonzero(rows.any(axis=1)):
        r = np.flatnonzero(rows[s])
        mid_p = 0.5 * (r[0] + r[-1])
        near[s] = (np.abs(ll - mid_l[s]) * sp[2] < 35.0)[None, :] & (pp >= mid_p - 10.0 / sp[1])[:, None]
    cand = bone & near
    box = bbox(cand, (0, 1, 1))
    if box is None:
        return out
    # In-plane distances only: a huge spacing along s keeps slices apart.
    depth = np.zeros(bone.shape, np.float32)
    depth[box] = edt.edt(np.ascontiguousarray(cand[box]), anisotropy=(1e6, float(sp[1]), float(sp[2])), parallel=2)
    flat = depth.reshape(ns, -1)
    best = flat.argmax(axis=1)
    ok = flat[np.arange(ns), best] >= 6.0  # vertebral bodies are > 12 mm across
    p, l = np.unravel_index(best, bone.shape[1:])
    out[ok, 0] = p[ok]
    out[ok, 1] = l[ok]
    good = ~np.isnan(out[:, 0])
    if good.sum() < 2:
        return out
    for a in range(2):
        v = out[:, a].copy()
        v[good] = ndi.median_filter(v[good], size=min(7, int(good.sum()) | 1), mode="nearest")
        first, last = np.flatnonzero(good)[[0, -1]]
        v[first:last + 1] = np.interp(np.arange(first, last + 1), np.flatnonzero(good), v[good])
        out[:, a] = v
    return out


#: Spine region around the vertebral body centre (mm): lateral half-width, anterior and
#: posterior reach (the spinous process ends ~70-90 mm behind the body centre).
SPINE_HALF_WIDTH_MM = 30.0
#: Below the lungs (lumbar transverse processes, no ribs to keep apart) the box is wider.
SPINE_HALF_WIDTH_LUMBAR_MM = 45.0
SPINE_ANTERIOR_MM = 25.0
SPINE_POSTERIOR_MM = 95.0
#: Sternum: within this distance (mm) of the mid-line and this far in front of the spine.
STERNUM_HALF_WIDTH_MM = 25.0
STERNUM_MIN_ANTERIOR_MM = 60.0
#: Ribs lie along the pleura; bone farther from the lungs than this (mm) is shoulder girdle.
RIB_MAX_LUNG_DISTANCE_MM = 18.0
#: Smallest shoulder girdle piece (ml; a scapula is ~100 ml), pelvis piece, and rib piece.
GIRDLE_MIN_ML = 15.0
PELVIS_MIN_ML = 30.0
RIB_MIN_ML = 0.3
#: Shoulder girdle in front of this line (mm in front of the vertebral body centre) is
#: clavicle (with the coracoid tip), behind it scapula (with the humeral head where it touches).
CLAVICLE_MIN_ANTERIOR_MM = 30.0
#: ...and no lower than this below the lung apex (mm): the scapula's lateral border also
#: reaches forward, lower down.
CLAVICLE_MAX_BELOW_APEX_MM = 40.0


def split_bone(
    bone: np.ndarray, body: np.ndarray, lungs: np.ndarray | None, grid: WorkGrid
) -> dict[str, np.ndarray]:
    """Split a bone mask into named parts on the working grid.

    Names: ``vertebrae``, ``ribs_left``/``_right``, ``sternum``, ``scapula_left``/``_right``,
    ``clavicula_left``/``_right``, ``hip_left``/``_right``. Rules, in order: the box around the
    vertebral body centre line is spine (rib heads included); bone close to the lungs is rib,
    except a mid-line anterior column (sternum); the rest beside the chest is shoulder girdle
    (clavicle in front, scapula behind); lateral bone well below the lungs is pelvis (hip, with
    the femoral head where it touches). Bone no rule fits stays in the union only.
    """
    sp = grid.spacing_spl
    shape = bone.shape
    centre = spine_centre(bone, body, grid)
    has = ~np.isnan(centre[:, 0])
    _, p_idx, l_idx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    if has.any():
        cp_all = np.where(has, centre[:, 0], np.nanmedian(centre[:, 0]))
        cl_all = np.where(has, centre[:, 1], np.nanmedian(centre[:, 1]))
    else:
        cp_all = np.full(shape[0], shape[1] * 0.6)
        cl_all = np.full(shape[0], shape[2] / 2.0)
    dl = (l_idx - cl_all[:, None, None]) * sp[2]  # + towards the patient's left
    dp = (p_idx - cp_all[:, None, None]) * sp[1]  # + towards posterior
    has_lungs = lungs is not None and lungs.any()
    half_width = np.full(shape[0], SPINE_HALF_WIDTH_LUMBAR_MM)
    if has_lungs:
        rows = np.flatnonzero(lungs.any(axis=(1, 2)))
        lung_lo, lung_hi = int(rows[0]), int(rows[-1])
        half_width[lung_lo:] = SPINE_HALF_WIDTH_MM
    spine_box = (np.abs(dl) <= half_width[:, None, None]) & (dp >= -SPINE_ANTERIOR_MM) & (dp <= SPINE_POSTERIOR_MM)
    spine = bone & spine_box & has[:, None, None]
    rest = bone & ~spine
    left_side = dl > 0
    parts: dict[str, np.ndarray] = {"vertebrae": spine}
    empty = np.zeros(shape, bool)
    for k in ("ribs_left", "ribs_right", "sternum", "scapula_left", "scapula_right",
              "clavicula_left", "clavicula_right", "hip_left", "hip_right"):
        parts[k] = empty.copy()
    if has_lungs:
        chest = np.zeros(shape[0], bool)
        chest[max(0, lung_lo - int(30.0 / sp[0])): min(shape[0], lung_hi + int(60.0 / sp[0]) + 1)] = True
        d_lung = np.full(shape, np.inf, np.float32)
        box = _chest_box(lungs, rest, chest)
        d_lung[box] = distance_inside(~lungs[box], sp)
        chest_bone = rest & chest[:, None, None]
        sternum = chest_bone & (np.abs(dl) <= STERNUM_HALF_WIDTH_MM) & (dp <= -STERNUM_MIN_ANTERIOR_MM)
        sternum = _largest_parts(sternum, 0.2)
        ribs = chest_bone & ~sternum & (d_lung <= RIB_MAX_LUNG_DISTANCE_MM)
        girdle = chest_bone & ~sternum & ~ribs
        parts["sternum"] = sternum
        parts["ribs_left"] = ribs & left_side
        parts["ribs_right"] = ribs & ~left_side
        # Large pieces far from the lungs are shoulder girdle; small ones are rib segments
        # beyond the lung bases.
        big = _largest_parts(girdle, 0.0, min_voxels=GIRDLE_MIN_ML / grid.voxel_ml)
        small = girdle & ~big
        parts["ribs_left"] |= small & left_side
        parts["ribs_right"] |= small & ~left_side
        front = dp < -CLAVICLE_MIN_ANTERIOR_MM
        front &= (np.arange(shape[0]) >= lung_hi - CLAVICLE_MAX_BELOW_APEX_MM / sp[0])[:, None, None]
        for side, sel in (("left", left_side), ("right", ~left_side)):
            parts[f"clavicula_{side}"] = big & front & sel
            parts[f"scapula_{side}"] = big & ~front & sel
        below = ~chest
        below[lung_hi:] = False
    else:
        below = np.ones(shape[0], bool)
    # Below the chest: large lateral pieces are pelvis (ilium, pubis, ischium, with the sacral
    # alae and the femoral heads where they touch on the grid); thin pieces above the pelvis
    # are the lower ribs.
    low = rest & below[:, None, None]
    lab, n, sizes = components(low, connectivity=2)
    is_big = sizes * grid.voxel_ml >= PELVIS_MIN_ML
    is_big[0] = False
    pelvis = is_big[lab]
    rows = np.flatnonzero(pelvis.any(axis=(1, 2)))
    top = int(rows[-1]) if len(rows) else -1
    small = low & ~pelvis
    small[: top + 1] = False
    small = _largest_parts(small, 0.0, min_voxels=RIB_MIN_ML / grid.voxel_ml)
    parts["hip_left"] = pelvis & left_side
    parts["hip_right"] = pelvis & ~left_side
    parts["ribs_left"] |= small & left_side
    parts["ribs_right"] |= small & ~left_side
    return parts


def _chest_box(lungs: np.ndarray, bone: np.ndarray, chest: np.ndarray) -> tuple[slice, ...]:
    m = (lungs | bone) & chest[:, None, None]
    box = bbox(m, 2)
    return box if box is not None else tuple(slice(0, n) for n in lungs.shape)


def _largest_parts(mask: np.ndarray, fraction: float, min_voxels: float = 0) -> np.ndarray:
    """Components at least ``fraction`` of the largest one and ``min_voxels`` large."""
    lab, n, sizes = components(mask, connectivity=2)
    if n == 0:
        return mask
    keep = (sizes >= fraction * sizes.max()) & (sizes >= min_voxels)
    keep[0] = False
    return keep[lab]
