"""The patient's body: everything inside the skin, without the table, cushions and blankets."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .grid import WorkGrid, components, dilate, distance_inside, fill_holes_2d

#: Tissue threshold (HU): skin and fat are above it, air, foam cushions and most blankets below.
BODY_HU = -400.0
#: Erosion radius (mm) that cuts thin things touching the patient (table shells, blankets, tubes).
CUT_MM = 4.0
#: A separate part (an arm beside the trunk) is kept when its core is at least this thick (mm
#: inscribed radius) and at least this fraction of the largest part's volume.
PART_MIN_RADIUS_MM = 12.0
PART_MIN_FRACTION = 0.03


def body_work(hu: np.ndarray, grid: WorkGrid) -> np.ndarray:
    """Body mask on the working grid ``[s, p, l]`` from block-averaged HU."""
    sp = grid.spacing_spl
    tissue = hu > BODY_HU
    # A thin shell cannot survive the erosion; the patient's trunk can.
    depth = distance_inside(tissue, sp)
    core = depth > CUT_MM
    lab, n, sizes = components(core)
    if n == 0:
        return np.zeros(grid.shape, bool)
    sizes[0] = 0
    biggest = int(np.argmax(sizes))
    keep = np.zeros(n + 1, bool)
    keep[biggest] = True
    for lbl in np.flatnonzero(sizes >= PART_MIN_FRACTION * sizes[biggest]):
        if lbl != biggest and depth[lab == lbl].max() >= PART_MIN_RADIUS_MM:
            keep[lbl] = True
    chosen = keep[lab]
    # Grow back to the tissue boundary, but only as far as the erosion took away.
    body = dilate(chosen, CUT_MM + 0.75 * float(sp.max()), sp) & tissue
    body |= chosen
    # Keep the pieces connected to the chosen parts (the regrowth may touch loose bits).
    lab, n, _ = components(body)
    hit = np.unique(lab[chosen])
    body = np.isin(lab, hit[hit > 0])
    # Lungs, airways and bowel gas are inside: fill axial slice by slice, then in 3D.
    body = fill_holes_2d(body, axis=0)
    body = ndi.binary_fill_holes(body)
    return body


def refine_to_ct(work_mask: np.ndarray, grid: WorkGrid, inside_full: np.ndarray) -> np.ndarray:
    """Bring a working-grid mask to the CT grid with its boundary taken from the full-resolution
    test ``inside_full`` (e.g. HU > -400) within one working voxel of the coarse boundary."""
    ball = ndi.generate_binary_structure(3, 1)
    inner = grid.up(ndi.binary_erosion(work_mask, ball, border_value=1))
    band = grid.up(ndi.binary_dilation(work_mask, ball))
    band &= ~inner
    band &= inside_full
    return inner | band
