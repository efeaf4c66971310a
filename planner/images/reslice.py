"""Axial, coronal and sagittal planes through a point, sampled in patient space.

Sampling goes through LPS, so a scan stored prone, feet-first or oblique shows the same
anatomy the same way up. Display conventions (radiological): axial seen from the feet
(patient's right on the image's left, anterior up); coronal seen from the front (right on the
left, superior up); sagittal seen from the patient's left (anterior on the left, superior up).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from .image import Image

Plane = Literal["axial", "coronal", "sagittal"]

# For each plane: LPS direction of the image's columns (left -> right on screen) and of its
# rows (top -> bottom on screen).
_PLANE_AXES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1, 0, 0), (0, 1, 0)),  # screen right = patient left (L); screen down = posterior
    "coronal": ((1, 0, 0), (0, 0, -1)),  # screen right = L; screen down = inferior
    "sagittal": ((0, 1, 0), (0, 0, -1)),  # seen from the patient's left: screen right = posterior
}


def plane_axes(plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    """LPS unit vectors of screen-right and screen-down for a standard plane."""
    right, down = _PLANE_AXES[plane]
    return np.array(right, float), np.array(down, float)


def plane_through(
    image: Image,
    plane: Plane,
    point_lps: Sequence[float] | None = None,
    pixel_mm: float | None = None,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the image on a standard plane through a point.

    Parameters
    ----------
    image : Image
    plane : 'axial', 'coronal' or 'sagittal'
    point_lps : (3,), optional
        A point of the plane; the image centre by default.
    pixel_mm : float, optional
        Size of a screen pixel; the smallest voxel spacing by default.
    order : int
        Interpolation order (0 nearest, 1 linear).

    Returns
    -------
    pixels : ndarray, shape (rows, cols)
        Sampled values; outside the volume the image minimum.
    to_lps : ndarray, shape (3, 3)
        Maps (col, row, 1) of the result to LPS mm: ``lps = to_lps @ [c, r, 1]``.
    """
    right, down = plane_axes(plane)
    corners = image.corners()
    centre = corners.mean(axis=0) if point_lps is None else np.asarray(point_lps, float)
    px = float(pixel_mm or image.spacing.min())
    # Projections of the box corners give the full extent whatever the axis signs.
    proj_r = (corners - centre) @ right
    proj_d = (corners - centre) @ down
    r_lo, r_hi = float(proj_r.min()), float(proj_r.max())
    d_lo, d_hi = float(proj_d.min()), float(proj_d.max())
    ncols = int(np.floor((r_hi - r_lo) / px)) + 1
    nrows = int(np.floor((d_hi - d_lo) / px)) + 1
    origin = centre + r_lo * right + d_lo * down
    cc, rr = np.meshgrid(np.arange(ncols), np.arange(nrows))
    pts = origin + cc[..., None] * px * right + rr[..., None] * px * down
    ijk = image.lps_to_ijk(pts.reshape(-1, 3))
    coords = ijk[:, ::-1].T  # array axes are [k, j, i]
    fill = float(image.voxels.min())
    vals = ndimage.map_coordinates(image.voxels, coords, order=order, mode="constant", cval=fill)
    to_lps = np.column_stack([px * right, px * down, origin])
    return vals.reshape(nrows, ncols), to_lps


def window(pixels: np.ndarray, level: float, width: float) -> np.ndarray:
    """Apply a display window; returns uint8 grey values."""
    lo = level - width / 2.0
    out = (np.asarray(pixels, float) - lo) / width * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


#: Display windows (level, width) in HU used across the project.
WINDOWS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft-tissue": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}


def mr_window(image) -> tuple[float, float]:
    """(level, width) of an MR, which has no fixed scale: its 1st to 99.5th percentile of the signal
    above the background (5 % of the maximum), from up to 24 of its slices."""
    v = np.asarray(image.voxels)[:: max(1, image.shape[0] // 24)].astype(np.float32).ravel()
    v = v[v > 0.05 * float(v.max())] if v.size and v.max() > 0 else v
    lo, hi = (np.percentile(v, [1.0, 99.5]) if v.size else (0.0, 1.0))
    return float((lo + hi) / 2.0), float(max(hi - lo, 1.0))
