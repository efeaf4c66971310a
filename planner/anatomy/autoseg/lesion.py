"""A target from one click: region growing from a seed inside a nodule, mass or collection."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from ...errors import InputError
from ...images import Image
from .grid import components, dilate, erode, fill_holes_2d

#: Seed neighbourhood radius (mm) for the HU estimate.
SEED_RADIUS_MM = 3.0
#: Half-width of the HU window: this many robust standard deviations of the seed
#: neighbourhood, kept between the two bounds (HU).
WINDOW_SD = 4.0
WINDOW_HU = (90.0, 220.0)
#: Seeds in air or aerated lung are refused (HU, median of the neighbourhood).
MIN_SEED_HU = -300.0
#: Opening radii (mm) tried in turn to cut the lesion off vessels and walls it touches; the
#: first whose result stays off the limiting sphere wins.
OPENING_MM = (2.0, 3.0, 4.5, 6.0)
#: A result "leaks" when more than this fraction of its surface lies on the limiting sphere.
LEAK_FRACTION = 0.05


def segment_lesion(ct: Image, seed_lps, max_radius_mm: float = 40.0) -> np.ndarray:
    """Mask ``[k, j, i]`` of the lesion that holds ``seed_lps`` (LPS mm).

    Region growing within an HU window around the seed neighbourhood's median, inside a
    sphere of ``max_radius_mm`` around the seed, with a morphological opening that detaches
    the lesion from vessels, bronchi and walls of similar density.

    Raises
    ------
    InputError
        The seed is outside the scan, in air or aerated lung, or nothing can be grown.
    """
    seed = np.asarray(seed_lps, float).reshape(-1)
    if seed.shape != (3,) or not np.all(np.isfinite(seed)):
        raise InputError(f"lesion seed must be three finite LPS coordinates in mm, got {seed_lps!r}")
    if not (np.isfinite(max_radius_mm) and max_radius_mm > 0):
        raise InputError(f"max_radius_mm must be a positive number, got {max_radius_mm!r}")
    if not ct.contains_lps(seed):
        raise InputError(f"lesion seed {np.round(seed, 1).tolist()} mm (LPS) lies outside the scan")
    sp = ct.spacing[::-1]  # mm along array axes k, j, i
    ijk = ct.lps_to_ijk(seed)
    centre = np.array([ijk[2], ijk[1], ijk[0]])
    half = np.ceil(max_radius_mm / sp).astype(int) + 2
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + half + 1, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = ndi.gaussian_filter(np.asarray(ct.voxels[box], np.float32), sigma=0.6 / sp, mode="nearest")
    grid = np.ogrid[tuple(slice(0, int(b - a)) for a, b in zip(lo, hi))]
    rel = [(g + a - c) * s for g, a, c, s in zip(grid, lo, centre, sp)]
    dist2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
    sphere = dist2 <= max_radius_mm**2
    near = dist2 <= max(SEED_RADIUS_MM, float(sp.max())) ** 2
    vals = sub[near]
    med = float(np.median(vals))
    if med < MIN_SEED_HU:
        raise InputError(
            f"lesion seed {np.round(seed, 1).tolist()} mm (LPS) lies in air or aerated lung "
            f"(median {med:.0f} HU around it); place the seed inside the lesion"
        )
    mad = float(np.median(np.abs(vals - med))) * 1.4826
    w = float(np.clip(WINDOW_SD * mad, *WINDOW_HU))
    window = (sub >= med - w) & (sub <= med + w) & sphere
    seed_sub = tuple(int(round(c - a)) for c, a in zip(centre, lo))
    seed_sub = tuple(min(max(s, 0), n - 1) for s, n in zip(seed_sub, sub.shape))
    rim = sphere & ~erode(sphere, 1.5 * float(sp.max()), sp)
    best = None
    for r in OPENING_MM:
        region = _grow(window, seed_sub, r, sp)
        if region is None:
            continue
        best = region
        surface = region & ~erode(region, 0.5 * float(sp.min()), sp)
        on_rim = np.count_nonzero(surface & rim) / max(1, np.count_nonzero(surface))
        if on_rim <= LEAK_FRACTION:
            break
    if best is None:
        raise InputError(
            f"nothing could be grown from the lesion seed {np.round(seed, 1).tolist()} mm (LPS) "
            f"(HU window {med - w:.0f}..{med + w:.0f}); the seed may lie on the lesion's edge"
        )
    best = ndi.binary_fill_holes(best)
    best = fill_holes_2d(best, axis=0) & sphere
    out = np.zeros(ct.shape, bool)
    out[box] = best
    return out


def _grow(window: np.ndarray, seed: tuple[int, ...], r_mm: float, sp) -> np.ndarray | None:
    """The part of ``window`` connected to the seed after an opening of radius ``r_mm``,
    grown back to the window's boundary; None when the opening removes the seed's part."""
    core = erode(window, r_mm, sp)
    lab, n, _ = components(core)
    if n == 0:
        return None
    lbl = int(lab[seed])
    if lbl == 0:
        # Seed near the edge: take the core component nearest to it within the radius.
        d = ndi.distance_transform_edt(lab == 0, sampling=sp, return_distances=True, return_indices=True)
        dist, idx = d
        if dist[seed] > r_mm + float(max(sp)):
            return None
        lbl = int(lab[tuple(i[seed] for i in idx)])
    part = lab == lbl
    grown = dilate(part, r_mm + 0.5 * float(min(sp)), sp) & window
    lab2, _, _ = components(grown)
    keep = np.unique(lab2[part])
    return np.isin(lab2, keep[keep > 0])


def lesion_measurements(mask: np.ndarray, ct: Image) -> dict:
    """Size and position of a lesion mask ``[k, j, i]`` on the CT grid.

    Returns ``volume_ml``, ``diameter_mm`` (of the sphere of equal volume), ``max_diameter_mm``
    (largest extent: the longest chord between voxel centres plus one voxel along it) and
    ``centroid_lps`` (mm).
    """
    m = np.asarray(mask, bool)
    if m.shape != ct.shape:
        raise InputError(f"lesion mask shape {m.shape} does not match the CT grid {ct.shape}")
    n = int(np.count_nonzero(m))
    if n == 0:
        raise InputError("the lesion mask is empty")
    sp = ct.spacing
    vol_mm3 = n * float(np.prod(sp))
    kji = np.argwhere(m)
    ijk = kji[:, ::-1].astype(float)
    lps = ct.ijk_to_lps(ijk)
    centroid = lps.mean(axis=0)
    pts = lps
    if len(pts) >= 5:
        try:
            pts = lps[ConvexHull(lps).vertices]
        except QhullError:  # flat or degenerate: fall back on all points
            pts = lps
    if len(pts) > 3000:
        pts = pts[np.linspace(0, len(pts) - 1, 3000).astype(int)]
    diff = pts[:, None, :] - pts[None, :, :]
    d2 = np.einsum("abi,abi->ab", diff, diff)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    chord = float(np.sqrt(d2[a, b]))
    if chord > 0:
        u = (pts[b] - pts[a]) / chord
        axes = ct.direction * sp  # columns: voxel edge vectors along i, j, k in LPS
        extra = float(np.sum(np.abs(u @ axes)))
    else:
        extra = float(np.min(sp))
    return {
        "volume_ml": vol_mm3 / 1000.0,
        "diameter_mm": float((6.0 * vol_mm3 / np.pi) ** (1.0 / 3.0)),
        "max_diameter_mm": chord + extra,
        "centroid_lps": [float(x) for x in centroid],
    }
