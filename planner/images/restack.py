"""Resample an irregular stack of parallel slices onto a regular, orthogonal grid.

Used for gantry tilt (slices stacked obliquely to their own plane) and for uneven slice
spacing or a small gap. Linear interpolation in-plane and along the normal.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from . import geometry


def restack_slices(
    volume: np.ndarray,
    s: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    row_cosine: Sequence[float],
    column_cosine: Sequence[float],
    pixel_spacing: Sequence[float],
    first_position: Sequence[float],
    step: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample slices to a regular grid.

    Parameters
    ----------
    volume : ndarray, shape (n, rows, cols)
        Slices sorted by ``s``.
    s : ndarray, shape (n,)
        Position of each slice along the normal, mm, relative to the first (ascending, s[0] = 0).
    u, v : ndarray, shape (n,)
        In-plane offset (mm) of each slice's first pixel relative to the first slice's, along
        the row direction (i) and the column direction (j). Non-zero and growing with ``s``
        under gantry tilt.
    row_cosine, column_cosine, pixel_spacing, first_position
        Geometry of the first slice (DICOM conventions; ``pixel_spacing`` is [row, column]).
    step : float
        Slice step of the output grid, mm; ``s[-1]`` must be a multiple of it.

    Returns
    -------
    volume : ndarray, shape (m, rows', cols')
        Same dtype as the input (values rounded for integer types). Pixels outside every input
        slice get the input's minimum value.
    affine : ndarray, shape (4, 4)
        Orthogonal voxel-to-LPS affine of the output grid.
    """
    n, rows, cols = volume.shape
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    pu, pv = np.asarray(u, float) / dx, np.asarray(v, float) / dy
    i0, j0 = int(np.floor(pu.min() + 1e-6)), int(np.floor(pv.min() + 1e-6))
    cols_out = cols + int(np.ceil(pu.max() - 1e-6)) - i0
    rows_out = rows + int(np.ceil(pv.max() - 1e-6)) - j0
    fill = float(volume.min())

    shifted_needed = not (np.allclose(pu, i0) and np.allclose(pv, j0) and rows_out == rows and cols_out == cols)
    cache: dict[int, np.ndarray] = {}

    def plane(k: int) -> np.ndarray:
        if k not in cache:
            src = volume[k].astype(np.float32)
            if shifted_needed:
                cache[k] = ndimage.affine_transform(
                    src, np.eye(2), offset=(j0 - pv[k], i0 - pu[k]), output_shape=(rows_out, cols_out),
                    order=1, mode="constant", cval=fill,
                )
            else:
                cache[k] = src
        return cache[k]

    m = int(round(float(s[-1]) / step)) + 1
    out = np.empty((m, rows_out, cols_out), dtype=volume.dtype)
    for q in range(m):
        t = min(q * step, float(s[-1]))
        k = int(np.searchsorted(s, t, side="right") - 1)
        k = min(max(k, 0), n - 2)
        w = (t - s[k]) / (s[k + 1] - s[k])
        w = min(max(w, 0.0), 1.0)
        val = plane(k) * (1.0 - w) + plane(k + 1) * w if w > 0 else plane(k)
        for old in [key for key in cache if key < k]:
            del cache[old]
        out[q] = np.rint(val) if np.issubdtype(out.dtype, np.integer) else val

    r = np.asarray(row_cosine, float)
    c = np.asarray(column_cosine, float)
    origin = np.asarray(first_position, float) + i0 * dx * r + j0 * dy * c
    affine = geometry.affine_from_dicom(r, c, pixel_spacing, origin, np.cross(r, c) * step)
    return out, affine
