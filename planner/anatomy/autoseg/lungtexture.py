"""Inside the lungs: vessels (bright tubes), fissures (bright plates) and emphysema (dark)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .grid import bbox, components, dilate, erode, hessian_eigenvalues

#: Scales (mm, Gaussian sigma) of the vessel filter: vessels of about 1.5 to 6 mm radius.
VESSEL_SIGMAS_MM = (1.5, 2.5, 4.0)
#: Tube test (Sato et al. 1998): eigenvalues l1 <= l2 <= l3; a bright tube has l1 ~ l2 << 0,
#: l3 ~ 0. Penalty widths for l3 of each sign, in units of |l2|.
VESSEL_ALPHA = (0.25, 2.0)
#: Vesselness threshold (HU, scale-normalised second derivative) and the density a vessel
#: voxel must have (HU, block averages); blobs (nodules, the lesion) fail the l3 test.
VESSEL_MIN_RESPONSE = 20.0
VESSEL_MIN_HU = -650.0
VESSEL_MIN_ML = 0.05
#: Full-resolution vessel edge (HU) within one working voxel of the coarse vessel mask.
VESSEL_EDGE_FULL_HU = -500.0

#: Emphysema: lung below this density (HU) after a light in-plane smoothing.
EMPHYSEMA_HU = -950.0


def vesselness(hu: np.ndarray, lung: np.ndarray, spacing, sigmas=VESSEL_SIGMAS_MM) -> np.ndarray:
    """Multi-scale bright-tube response (float32, 0 outside ``lung``)."""
    out = np.zeros(hu.shape, np.float32)
    box = bbox(lung, 3)
    if box is None:
        return out
    sub = np.asarray(hu[box], np.float32)
    where = lung[box] & (sub > VESSEL_MIN_HU)
    if not where.any():
        return out
    best = np.zeros(int(where.sum()), np.float32)
    a_neg, a_pos = VESSEL_ALPHA
    for sigma in sigmas:
        e = hessian_eigenvalues(sub, sigma, spacing, where)
        l2, l3 = e[:, 1], e[:, 2]
        tube = l2 < 0
        width = np.where(l3 <= 0, a_neg, a_pos) * np.abs(l2)
        width = np.maximum(width, 1e-6)
        v = np.where(tube, -l2 * np.exp(-(l3 * l3) / (2.0 * width * width)), 0.0).astype(np.float32)
        np.maximum(best, v, out=best)
    res = np.zeros(where.shape, np.float32)
    res[where] = best
    out[box] = res
    return out


def vessel_work(hu: np.ndarray, lung: np.ndarray, spacing, voxel_ml: float) -> np.ndarray:
    """Intrapulmonary vessels: dense voxels next to a tube response, without round masses,
    small specks removed."""
    v = vesselness(hu, lung, spacing)
    tube = v > VESSEL_MIN_RESPONSE
    tube = ndi.binary_dilation(tube, ndi.generate_binary_structure(3, 1))
    m = tube & lung & (hu > VESSEL_MIN_HU)
    m &= ~round_masses(hu, lung, spacing)
    lab, n, sizes = components(m, connectivity=2)
    keep = sizes * voxel_ml >= VESSEL_MIN_ML
    keep[0] = False
    return keep[lab]


#: Masses: dense parts of the lung still present after an erosion of this radius (mm)...
MASS_CORE_MM = 3.5
#: ...whose core is round (largest spread / smallest spread below this).
MASS_MAX_ELONGATION = 2.5


def round_masses(hu: np.ndarray, lung: np.ndarray, spacing) -> np.ndarray:
    """Thick, round dense objects in the lung (nodules and masses, not tubes), slightly grown."""
    sp = np.asarray(spacing, float)
    dense = lung & (hu > VESSEL_MIN_HU)
    core = erode(dense, MASS_CORE_MM, sp)
    lab, n, sizes = components(core, connectivity=2)
    keep = np.zeros(n + 1, bool)
    objs = ndi.find_objects(lab)
    for lbl in range(1, n + 1):
        pts = np.argwhere(lab[objs[lbl - 1]] == lbl) * sp
        if len(pts) < 2:
            keep[lbl] = True
            continue
        pts -= pts.mean(axis=0)
        ev = np.sqrt(np.maximum(np.linalg.eigvalsh(pts.T @ pts / len(pts)), 0.0)) + 0.5 * float(sp.min())
        keep[lbl] = ev[2] <= MASS_MAX_ELONGATION * ev[0]
    cores = keep[lab]
    return dilate(cores, MASS_CORE_MM + 1.5 * float(sp.max()), sp) & dense


def emphysema_full(ct_hu: np.ndarray, lung_full: np.ndarray) -> np.ndarray:
    """Lung voxels below EMPHYSEMA_HU after a 3 x 3 in-plane mean (noise suppression)."""
    out = np.zeros(lung_full.shape, bool)
    box = bbox(lung_full)
    if box is None:
        return out
    sub = ndi.uniform_filter(np.asarray(ct_hu[box], np.float32), size=(1, 3, 3), mode="nearest")
    out[box] = (sub < EMPHYSEMA_HU) & lung_full[box]
    return out
