"""Airways (trachea and bronchi) and the two lungs, on the working grid ``[s, p, l]``."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .grid import WorkGrid, closing, components, dilate, distance_inside, fill_holes_2d

#: Air-like threshold (HU, block averages): aerated lung is about -850, soft tissue above -100.
AIR_HU = -400.0
#: Full-resolution edges (HU): the lung boundary and the airway lumen boundary.
LUNG_EDGE_FULL_HU = -400.0
AIR_LUMEN_FULL_HU = -500.0
#: An air pocket is lung (not bowel gas) when its median HU is above this: lung parenchyma
#: carries vessels and septa (median about -850, -930 in severe emphysema), gas is near -1000.
LUNG_MEDIAN_MIN_HU = -945.0
#: Smallest lung piece kept (ml); lung bases cut by an abdominal field of view can be small.
LUNG_MIN_ML = 15.0
#: Closing radius (mm) that brings intrapulmonary vessels and nodules into the lung volume.
LUNG_CLOSE_MM = 5.0
#: Region growing for the airway lumen: thresholds tried, from strict to loose (HU, blocks).
AIRWAY_THRESHOLDS = tuple(range(-990, -599, 15))
#: A step is a leak when the volume grows by more than this factor (and this many ml)...
AIRWAY_LEAK_FACTOR = 1.6
AIRWAY_LEAK_MIN_ML = 15.0
#: ...or when the tree exceeds this volume (ml): the lumen of trachea and bronchi is ~100-250 ml.
AIRWAY_MAX_ML = 400.0
#: Smallest tree accepted as an airway (ml, and mm from top to bottom).
AIRWAY_MIN_ML = 5.0
AIRWAY_MIN_LENGTH_MM = 30.0
#: Trachea cross-section limits: area (mm2) and distance from the body's mid-line (mm).
TRACHEA_AREA_MM2 = (60.0, 900.0)
TRACHEA_MAX_OFFSET_MM = 40.0


def find_trachea_seed(hu: np.ndarray, body: np.ndarray, grid: WorkGrid) -> tuple[int, int, int] | None:
    """A voxel ``[s, p, l]`` in the trachea: the topmost round air region near the body's
    mid-line that continues through the next slices; None when the scan has no trachea."""
    sp = grid.spacing_spl
    px_area = float(sp[1] * sp[2])
    slices = np.flatnonzero(body.any(axis=(1, 2)))
    if len(slices) == 0:
        return None
    top, bottom = int(slices[-1]), int(slices[0])
    # Only the upper 60 % of the body's height: the trachea ends well above the diaphragm.
    lowest = int(bottom + 0.4 * (top - bottom))
    air = (hu < -600) & body
    need = max(2, int(round(6.0 / sp[0])))  # the tube must continue for ~6 mm
    found: list[tuple[int, float, float]] = []
    for s in range(top, lowest - 1, -1):
        bsl = body[s]
        if bsl.sum() * px_area < 100e2:  # less than 100 cm2 of body: head or cut edge
            continue
        cols = np.flatnonzero(bsl.any(axis=0))
        mid_l = 0.5 * (cols[0] + cols[-1])
        lab, n = ndi.label(air[s])
        if n == 0:
            found = []
            continue
        best = None
        areas = np.bincount(lab.ravel())
        for lbl in range(1, n + 1):
            area = areas[lbl] * px_area
            if not (TRACHEA_AREA_MM2[0] <= area <= TRACHEA_AREA_MM2[1]):
                continue
            pp, ll = np.nonzero(lab == lbl)
            cp, cl = pp.mean(), ll.mean()
            if abs(cl - mid_l) * sp[2] > TRACHEA_MAX_OFFSET_MM:
                continue
            # Round: the blob fills most of the circle of its largest extent.
            ext = max(np.ptp(pp) * sp[1], np.ptp(ll) * sp[2]) + min(sp[1], sp[2])
            if area < 0.45 * np.pi * (ext / 2.0) ** 2:
                continue
            if best is None or area > best[0]:
                best = (area, cp, cl)
        if best is None:
            found = []
            continue
        if found and np.hypot((best[1] - found[-1][1]) * sp[1], (best[2] - found[-1][2]) * sp[2]) > 10.0:
            found = []
        found.append((s, best[1], best[2]))
        if len(found) >= need:
            s0, p0, l0 = found[0]
            return s0, int(round(p0)), int(round(l0))
    return None


def airway_work(hu: np.ndarray, body: np.ndarray, grid: WorkGrid, seed=None) -> np.ndarray:
    """Airway lumen (trachea and the bronchi that can be followed) on the working grid.

    Region growing from the trachea seed with a threshold raised step by step; the last
    threshold before the volume jumps (a leak into the lung) is kept.
    """
    if seed is None:
        seed = find_trachea_seed(hu, body, grid)
    out = np.zeros(grid.shape, bool)
    if seed is None:
        return out
    region = (hu < AIR_HU) & body
    lab, _, _ = components(region)
    if lab[seed] == 0:
        return out
    # The trachea leads to the lungs (same air component) or leaves the scan at the top.
    comp = lab == lab[seed]
    lung_like = np.median(hu[comp]) > LUNG_MEDIAN_MIN_HU and comp.sum() * grid.voxel_ml > LUNG_MIN_ML
    if not lung_like and not comp[-1].any():
        return out
    box = _box_of(lab, int(lab[seed]))
    sub_hu = hu[box]
    sub_ok = lab[box] == lab[seed]
    sseed = tuple(int(s - b.start) for s, b in zip(seed, box))
    best = None
    prev_ml = 0.0
    for t in AIRWAY_THRESHOLDS:
        m = (sub_hu < t) & sub_ok
        if not m[sseed]:
            continue
        l2, _ = ndi.label(m)
        grown = l2 == l2[sseed]
        ml = float(grown.sum()) * grid.voxel_ml
        if ml > AIRWAY_MAX_ML:
            break
        if best is not None and ml > AIRWAY_LEAK_FACTOR * prev_ml and ml - prev_ml > AIRWAY_LEAK_MIN_ML:
            break
        best, prev_ml = grown, ml
    if best is None:
        return out
    rows = np.flatnonzero(best.any(axis=(1, 2)))
    if best.sum() * grid.voxel_ml < AIRWAY_MIN_ML or (rows[-1] - rows[0] + 1) * grid.spacing_spl[0] < AIRWAY_MIN_LENGTH_MM:
        return out
    out[box] = best
    return out


def _box_of(lab: np.ndarray, value: int) -> tuple[slice, ...]:
    objs = ndi.find_objects(lab, max_label=int(value))
    return objs[int(value) - 1]


def split_trachea(airway: np.ndarray, grid: WorkGrid) -> tuple[np.ndarray, np.ndarray]:
    """(trachea, bronchi): the trachea is the airway above the carina, the first slice (going
    down) where the airway shows two separate lumens."""
    sp = grid.spacing_spl
    px_area = float(sp[1] * sp[2])
    rows = np.flatnonzero(airway.any(axis=(1, 2)))
    trachea = np.zeros_like(airway)
    if len(rows) == 0:
        return trachea, airway.copy()
    carina = int(rows[0])
    for s in range(int(rows[-1]), int(rows[0]) - 1, -1):
        lab, n = ndi.label(airway[s])
        if n >= 2:
            areas = np.bincount(lab.ravel())[1:] * px_area
            if np.sum(areas >= 15.0) >= 2:
                carina = s
                break
    trachea[carina + 1:] = airway[carina + 1:]
    return trachea, airway & ~trachea


def lung_air_candidates(hu: np.ndarray, body: np.ndarray, grid: WorkGrid) -> np.ndarray:
    """Air inside the body that looks like lung (not bowel gas, not small pockets)."""
    air = (hu < AIR_HU) & body
    lab, n, sizes = components(air)
    out = np.zeros(grid.shape, bool)
    min_vox = LUNG_MIN_ML / grid.voxel_ml
    for lbl in np.flatnonzero(sizes >= min_vox):
        if lbl == 0:
            continue
        comp = lab == lbl
        if np.median(hu[comp]) > LUNG_MEDIAN_MIN_HU:
            out |= comp
    return out


def lungs_work(hu: np.ndarray, body: np.ndarray, airway: np.ndarray, grid: WorkGrid) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lungs on the working grid, vessels and nodules inside them included."""
    sp = grid.spacing_spl
    air = lung_air_candidates(hu, body, grid)
    if airway.any():
        air &= ~dilate(airway, 1.5 * float(sp.max()), sp)
    lab, n, sizes = components(air)
    min_vox = LUNG_MIN_ML / grid.voxel_ml
    big = [int(x) for x in np.flatnonzero(sizes >= min_vox) if x != 0]
    air = np.isin(lab, big)
    parts = _two_lungs(air, grid)
    x_of = [_mean_x(p, grid) for p in parts]
    left_x = _midline_x(body, grid)
    left = np.zeros(grid.shape, bool)
    right = np.zeros(grid.shape, bool)
    for p, x in zip(parts, x_of):
        if x is None:
            continue
        if len(parts) == 2:
            is_left = x == max(v for v in x_of if v is not None)
        else:
            is_left = x > left_x
        if is_left:
            left |= p
        else:
            right |= p
    left = _fill_lung(left, sp)
    right = _fill_lung(right, sp)
    both = left & right
    if both.any():  # closing can meet at the anterior junction: give shared voxels to neither side's gain
        d_l = distance_inside(~_core(left, both), sp)
        d_r = distance_inside(~_core(right, both), sp)
        left &= ~(both & (d_r < d_l))
        right &= ~(both & (d_l <= d_r))
    return left, right


def _core(mask: np.ndarray, shared: np.ndarray) -> np.ndarray:
    return mask & ~shared


def _fill_lung(mask: np.ndarray, sp) -> np.ndarray:
    if not mask.any():
        return mask
    m = closing(mask, LUNG_CLOSE_MM, sp)
    return fill_holes_2d(m, axis=0)


def _mean_x(mask: np.ndarray, grid: WorkGrid) -> float | None:
    idx = np.argwhere(mask[:, :, :])
    if len(idx) == 0:
        return None
    return float(grid.spl_to_lps(idx.mean(axis=0))[0])


def _midline_x(body: np.ndarray, grid: WorkGrid) -> float:
    idx = np.argwhere(body[::2, ::2, ::2]) * 2
    if len(idx) == 0:
        return 0.0
    return float(grid.spl_to_lps(idx.mean(axis=0))[0])


def _two_lungs(air: np.ndarray, grid: WorkGrid) -> list[np.ndarray]:
    """The lung air split into its largest two pieces; when left and right touch (anterior or
    posterior junction), they are separated by eroding until two cores appear, then every
    voxel goes to the nearer core."""
    sp = grid.spacing_spl
    lab, n, sizes = components(air)
    if n == 0:
        return []
    sizes[0] = 0
    order = np.argsort(sizes)[::-1]
    total = float(sizes.sum())
    if n >= 2 and sizes[order[1]] >= 0.15 * sizes[order[0]]:
        parts = [lab == order[0], lab == order[1]]
        rest = air & ~parts[0] & ~parts[1]
        return _assign_rest(parts, rest, sp)
    depth = distance_inside(air, sp)
    for t in (2.0, 4.0, 6.0, 8.0, 11.0, 14.0, 18.0):
        lab2, n2, s2 = components(depth > t)
        if n2 < 2:
            continue
        s2[0] = 0
        o2 = np.argsort(s2)[::-1]
        if s2[o2[1]] >= 0.1 * s2[o2[0]] and s2[o2[1]] * grid.voxel_ml >= 0.02 * total * grid.voxel_ml:
            cores = [lab2 == o2[0], lab2 == o2[1]]
            return _assign_rest(cores, air & ~cores[0] & ~cores[1], sp)
    return [air]


def _assign_rest(parts: list[np.ndarray], rest: np.ndarray, sp) -> list[np.ndarray]:
    if not rest.any():
        return parts
    d0 = distance_inside(~parts[0], sp)
    d1 = distance_inside(~parts[1], sp)
    to0 = rest & (d0 <= d1)
    return [parts[0] | to0, parts[1] | (rest & ~to0)]
