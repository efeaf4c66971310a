"""Bring an array from one voxel grid onto another, with the right geometry.

Two cases: grids on the same lattice (differing by axis order, flips and whole-voxel shifts,
as a RAS NIfTI of a DICOM CT is) are remapped exactly, with no interpolation; any other grid
is sampled at the target voxel centres (linear or nearest), only inside the region the source
occupies.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LATTICE_TOL = 1e-3  # voxels


def index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix taking a target (dst) index (i, j, k, 1) to a source index."""
    return np.linalg.inv(np.asarray(src_affine, float)) @ np.asarray(dst_affine, float)


def lattice_map(m: np.ndarray) -> tuple[list[int], list[int], list[int]] | None:
    """If ``m`` maps whole voxels to whole voxels (signed permutation, integer shift), return
    (source axis, sign, offset) for each target axis i, j, k; else None."""
    r = m[:3, :3]
    if not np.allclose(r, np.round(r), atol=LATTICE_TOL) or not np.allclose(m[:3, 3], np.round(m[:3, 3]), atol=LATTICE_TOL):
        return None
    ri = np.round(r).astype(int)
    perm, sign = [], []
    for a in range(3):
        col = ri[:, a]
        if np.count_nonzero(col) != 1 or abs(col).sum() != 1:
            return None
        b = int(np.flatnonzero(col)[0])
        perm.append(b)
        sign.append(int(col[b]))
    if sorted(perm) != [0, 1, 2]:
        return None
    return perm, sign, [int(round(x)) for x in m[:3, 3]]


def resample_to_grid(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Values of ``array`` (indexed [k, j, i] on ``src_affine``) on the target grid.

    Parameters
    ----------
    array : ndarray, shape (nk, nj, ni)
    src_affine, dst_affine : (4, 4)
        Voxel-to-LPS affines of the source and the target grids.
    dst_shape : (nk, nj, ni)
    order : int
        0 nearest, 1 linear (ignored on the exact lattice path).
    cval : float
        Value outside the source.

    Returns
    -------
    ndarray, shape ``dst_shape``; same dtype as ``array`` on the lattice path, float32 after
    interpolation (threshold it for masks).
    """
    m = index_map(src_affine, dst_affine)
    lat = lattice_map(m)
    if lat is not None:
        return _lattice_remap(array, lat, dst_shape, cval)
    return _interpolate(array, m, dst_shape, order, cval)


def _lattice_remap(array: np.ndarray, lat, dst_shape, cval) -> np.ndarray:
    perm, sign, offset = lat
    # Reorder source array axes to target order: target array position p is target axis 2 - p.
    src = array.transpose([2 - perm[2 - p] for p in range(3)])
    out = np.full(dst_shape, cval, dtype=array.dtype)
    src_sl, dst_sl = [], []
    for p in range(3):
        a = 2 - p  # target axis (i, j, k) at array position p
        n_dst, n_src = dst_shape[p], src.shape[p]
        s, t = sign[a], offset[perm[a]]
        # source index = s * dst_index + t must lie in [0, n_src)
        if s > 0:
            lo, hi = max(0, -t), min(n_dst, n_src - t)
        else:
            lo, hi = max(0, t - n_src + 1), min(n_dst, t + 1)
        if hi <= lo:
            return out
        dst_sl.append(slice(lo, hi))
        first, last = s * lo + t, s * (hi - 1) + t
        src_sl.append(slice(first, last + 1) if s > 0 else slice(first, (last - 1) if last > 0 else None, -1))
    out[tuple(dst_sl)] = src[tuple(src_sl)]
    return out


def _interpolate(array: np.ndarray, m: np.ndarray, dst_shape, order: int, cval: float) -> np.ndarray:
    out = np.full(dst_shape, cval, dtype=np.float32)
    nz = np.argwhere(array != cval)
    if nz.size == 0:
        return out
    lo_kji, hi_kji = nz.min(axis=0), nz.max(axis=0)
    # Target-index bounding box of the source's occupied region (one voxel of slack).
    corners = np.array([[i, j, k] for i in (lo_kji[2] - 1, hi_kji[2] + 1) for j in (lo_kji[1] - 1, hi_kji[1] + 1)
                        for k in (lo_kji[0] - 1, hi_kji[0] + 1)], float)
    inv = np.linalg.inv(m)
    dst_ijk = corners @ inv[:3, :3].T + inv[:3, 3]
    lo = np.maximum(np.floor(dst_ijk.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(dst_ijk.max(axis=0)).astype(int) + 1, np.array(dst_shape[::-1]) - 1)
    if np.any(hi < lo):
        return out
    ii, jj, kk = np.meshgrid(*(np.arange(lo[a], hi[a] + 1) for a in range(3)), indexing="ij")
    pts = np.stack([ii, jj, kk], -1).reshape(-1, 3).astype(float)
    src_ijk = pts @ m[:3, :3].T + m[:3, 3]
    vals = ndimage.map_coordinates(
        np.asarray(array, dtype=np.float32), src_ijk[:, ::-1].T, order=order, mode="constant", cval=cval
    )
    block = vals.reshape(ii.shape).transpose(2, 1, 0)  # (k, j, i)
    out[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = block
    return out
