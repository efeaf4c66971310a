"""The coarse working grid and the mm-based array tools every segmentation step shares.

The working grid is the CT's own voxel grid with its axes reordered and flipped so that the
array axes run towards Superior, Posterior and Left (``[s, p, l]``), and with whole blocks of
voxels averaged (about 2 mm in each direction). Because it is derived from the CT's index grid
(no interpolation), a mask on the working grid maps back onto the CT exactly, block for block.
For an oblique scan the axes are the closest anatomical ones; only the words "superior",
"posterior" and "left" become approximate, never the geometry.

Distances and structuring elements are in millimetres and honour anisotropic spacing
(morphology is done with Euclidean distance transforms from ``edt``).
"""

from __future__ import annotations

import itertools

import edt
import numpy as np
from scipy import ndimage as ndi

from ...errors import InputError
from ...images import Image

#: Threads for the distance transforms (the project targets 2 cores).
THREADS = 2


class WorkGrid:
    """CT grid -> coarse ``[s, p, l]`` grid (block averages) and back.

    Parameters
    ----------
    ct : Image
    target_mm : float
        Wanted voxel size; each axis uses the whole number of CT voxels closest to it (>= 1).
    """

    def __init__(self, ct: Image, target_mm: float = 2.0):
        if target_mm <= 0:
            raise InputError(f"working grid voxel size must be positive, got {target_mm}")
        self.ct_shape = ct.shape
        d = ct.direction  # columns: i, j, k in LPS
        sp = ct.spacing
        best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[p[a], a]) for a in range(3)))
        self.lps_axis = list(best)  # original index axis a (0=i, 1=j, 2=k) -> LPS axis
        self.sign = [1 if d[best[a], a] >= 0 else -1 for a in range(3)]
        self.factor = [max(1, int(round(target_mm / sp[a]))) for a in range(3)]
        # work array axis q (0=S, 1=P, 2=L) holds original index axis a with lps_axis[a] == 2 - q
        self.src_index_axis = [self.lps_axis.index(2 - q) for q in range(3)]
        # ...which is CT array axis 2 - a
        self.transpose = [2 - a for a in self.src_index_axis]
        n_index = ct.size_ijk
        self.full_shape = tuple(n_index[a] for a in self.src_index_axis)  # before blocking, [s, p, l]
        self.fac = tuple(self.factor[a] for a in self.src_index_axis)
        self.shape = tuple(-(-n // f) for n, f in zip(self.full_shape, self.fac))
        m = np.zeros((4, 4))
        m[3, 3] = 1.0
        for q, a in enumerate(self.src_index_axis):
            s, f = self.sign[a], self.factor[a]
            c = 0.0 if s > 0 else n_index[a] - 1
            m[a, 2 - q] = s * f
            m[a, 3] = c + s * (f - 1) / 2.0
        self.affine = ct.affine @ m
        self.spacing_spl = np.array([sp[a] * self.factor[a] for a in self.src_index_axis])  # mm along [s, p, l]
        self.voxel_ml = float(np.prod(self.spacing_spl)) / 1000.0

    # --- CT grid -> working grid ------------------------------------------------------------
    def reorient(self, array: np.ndarray) -> np.ndarray:
        """A CT-grid array ``[k, j, i]`` viewed on the CT lattice in ``[s, p, l]`` order (no blocking)."""
        a = np.transpose(array, self.transpose)
        flips = tuple(q for q, ax in enumerate(self.src_index_axis) if self.sign[ax] < 0)
        return np.flip(a, flips) if flips else a

    def down(self, array: np.ndarray, how: str = "mean") -> np.ndarray:
        """Block-reduce a CT-grid array: ``mean`` (float32), ``any``, ``all`` or ``majority`` (bool)."""
        a = self.reorient(array)
        if how in ("any", "all", "majority") and a.dtype != bool:
            a = a.astype(bool)
        pad = [(0, s * f - n) for s, f, n in zip(self.shape, self.fac, self.full_shape)]
        if any(p[1] for p in pad):
            a = np.pad(a, pad, mode="edge")
        if self.fac == (1, 1, 1):
            return np.ascontiguousarray(a.astype(np.float32) if how == "mean" else a)
        n = float(np.prod(self.fac))
        acc = None
        for off in itertools.product(*(range(f) for f in self.fac)):
            v = a[off[0]::self.fac[0], off[1]::self.fac[1], off[2]::self.fac[2]]
            if how == "mean" or how == "majority":
                acc = v.astype(np.float32) if acc is None else acc + v
            elif how == "any":
                acc = v.copy() if acc is None else acc | v
            elif how == "all":
                acc = v.copy() if acc is None else acc & v
            else:
                raise InputError(f"unknown block reduction {how!r}")
        if how == "mean":
            return acc / np.float32(n)
        if how == "majority":
            return acc >= n / 2.0
        return np.ascontiguousarray(acc)

    # --- working grid -> CT grid ------------------------------------------------------------
    def up(self, work: np.ndarray) -> np.ndarray:
        """A working-grid array back on the CT grid ``[k, j, i]`` (each block repeated)."""
        a = work
        for q, f in enumerate(self.fac):
            if f > 1:
                a = np.repeat(a, f, axis=q)
        a = a[: self.full_shape[0], : self.full_shape[1], : self.full_shape[2]]
        flips = tuple(q for q, ax in enumerate(self.src_index_axis) if self.sign[ax] < 0)
        if flips:
            a = np.flip(a, flips)
        inv = np.argsort(self.transpose)
        return np.ascontiguousarray(np.transpose(a, inv))

    def spl_to_lps(self, idx_spl: np.ndarray) -> np.ndarray:
        """Working-grid array indices (..., 3) ordered [s, p, l] -> LPS mm."""
        idx = np.asarray(idx_spl, float)[..., ::-1]
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]


# --- morphology in mm --------------------------------------------------------------------------
def distance_inside(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it (0 outside).

    The array border does not count as outside: anatomy cut by the field of view is not eroded
    from the cut.
    """
    return edt.edt(np.ascontiguousarray(mask, dtype=bool), anisotropy=tuple(float(s) for s in spacing),
                   parallel=THREADS)


def _margin(r_mm: float, spacing) -> tuple[int, ...]:
    return tuple(int(np.ceil(r_mm / float(s))) + 1 for s in spacing)


def erode(mask: np.ndarray, r_mm: float, spacing) -> np.ndarray:
    """Voxels of ``mask`` farther than ``r_mm`` from its outside (the array border is not outside)."""
    out = np.zeros(mask.shape, bool)
    box = bbox(mask, 1)
    if box is None:
        return out
    if r_mm <= 0:
        return mask.copy()
    out[box] = distance_inside(mask[box], spacing) > r_mm
    return out


def dilate(mask: np.ndarray, r_mm: float, spacing) -> np.ndarray:
    """Voxels within ``r_mm`` of ``mask``."""
    box = bbox(mask, _margin(r_mm, spacing))
    if box is None or r_mm <= 0:
        return mask.copy()
    out = np.zeros(mask.shape, bool)
    out[box] = distance_inside(~mask[box], spacing) <= r_mm
    return out





def closing(mask: np.ndarray, r_mm: float, spacing) -> np.ndarray:
    """Closing that also closes gaps against the array border (the mask is padded first)."""
    box = bbox(mask)
    if box is None or r_mm <= 0:
        return mask.copy()
    w = _margin(r_mm, spacing)
    m = np.pad(mask[box], [(x, x) for x in w])
    c = erode(dilate(m, r_mm, spacing), r_mm, spacing)
    out = mask.copy()
    inner = c[w[0]:-w[0], w[1]:-w[1], w[2]:-w[2]]
    out[box] |= inner
    return out


# --- components --------------------------------------------------------------------------------
def components(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int, np.ndarray]:
    """Labels (int32, full size), count, and voxel count of each label (index 0 = background).

    Labelling runs on the bounding box of the set voxels only.
    """
    lab = np.zeros(mask.shape, np.int32)
    box = bbox(mask)
    if box is None:
        return lab, 0, np.zeros(1, np.int64)
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    sub, n = ndi.label(mask[box], structure=structure, output=np.int32)
    lab[box] = sub
    sizes = np.bincount(sub.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, n, sizes


def largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    lab, n, sizes = components(mask, connectivity)
    if n == 0:
        return mask.copy()
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def fill_holes_2d(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill holes slice by slice along ``axis``: background not connected, within its slice,
    to the edge of the mask's bounding box. One labelling for the whole volume."""
    out = mask.copy()
    box = bbox(mask)
    if box is None:
        return out
    m = np.moveaxis(mask[box], axis, 0)
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndi.generate_binary_structure(2, 1)
    lab, n = ndi.label(~m, structure=st)
    if n == 0:
        return out
    edge = np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    outside = np.zeros(n + 1, bool)
    outside[edge] = True
    outside[0] = True
    holes = ~outside[lab]
    out[box] |= np.moveaxis(holes, 0, axis)
    return out


def bbox(mask: np.ndarray, margin: int | tuple[int, ...] = 0) -> tuple[slice, ...] | None:
    """Bounding box slices of the set voxels, widened by ``margin`` voxels; None when empty."""
    if not mask.any():
        return None
    if isinstance(margin, int):
        margin = (margin,) * mask.ndim
    out = []
    for ax in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(max(0, int(idx[0]) - margin[ax]), min(mask.shape[ax], int(idx[-1]) + 1 + margin[ax])))
    return tuple(out)


# --- Hessian -----------------------------------------------------------------------------------
def hessian_eigenvalues(image: np.ndarray, sigma_mm: float, spacing, where: np.ndarray | None = None,
                        first_vector: bool = False, thin: bool = False):
    """Scale-normalised Hessian eigenvalues of ``image`` smoothed at ``sigma_mm``.

    Returns float32 (N, 3) sorted ascending (most negative first) for the voxels of ``where``
    (all voxels, flattened, when None). Derivatives are per mm, so anisotropic grids are fine.
    With ``first_vector``, also the unit eigenvector of the most negative eigenvalue, (N, 3)
    in array-axis order.

    With ``thin``, the second derivative along each axis is the three-point difference rather
    than the gradient of the gradient (a five-point stencil that skips the voxel's neighbours):
    where ``sigma_mm`` is below the spacing of an axis (2 mm slices), a sheet one voxel thick across
    that axis then keeps about three times more of its response.
    """
    sp = np.asarray(spacing, float)
    s = ndi.gaussian_filter(np.asarray(image, np.float32), sigma=sigma_mm / sp, mode="nearest")
    grads = np.gradient(s, *sp)
    if not thin:
        del s
    h = {}
    for a in range(3):
        for b in range(a, 3):
            comp = _second_difference(s, a, sp[a]) if thin and a == b else np.gradient(grads[a], sp[b], axis=b)
            h[(a, b)] = (comp[where] if where is not None else comp.ravel()) * np.float32(sigma_mm**2)
    del grads
    e = symmetric_eigenvalues(h[(0, 0)], h[(1, 1)], h[(2, 2)], h[(0, 1)], h[(0, 2)], h[(1, 2)])
    if not first_vector:
        return e
    lam = e[:, 0]
    r0 = np.stack([h[(0, 0)] - lam, h[(0, 1)], h[(0, 2)]], axis=-1)
    r1 = np.stack([h[(0, 1)], h[(1, 1)] - lam, h[(1, 2)]], axis=-1)
    r2 = np.stack([h[(0, 2)], h[(1, 2)], h[(2, 2)] - lam], axis=-1)
    cands = [np.cross(r0, r1), np.cross(r0, r2), np.cross(r1, r2)]
    norms = [np.linalg.norm(c, axis=-1) for c in cands]
    pick = np.argmax(np.stack(norms, axis=-1), axis=-1)
    v = np.choose(pick[:, None], cands)
    n = np.choose(pick, norms)
    v = v / np.maximum(n, 1e-12)[:, None]
    return e, v.astype(np.float32)


def _second_difference(s: np.ndarray, axis: int, step: float) -> np.ndarray:
    """(s[i-1] - 2 s[i] + s[i+1]) / step**2 along ``axis``; one-sided edges repeat their neighbour."""
    out = np.empty_like(s)
    c = [slice(None)] * 3
    lo, mid, hi = list(c), list(c), list(c)
    lo[axis], mid[axis], hi[axis] = slice(0, -2), slice(1, -1), slice(2, None)
    out[tuple(mid)] = (s[tuple(lo)] - 2.0 * s[tuple(mid)] + s[tuple(hi)]) / np.float32(step * step)
    first, second, last, before = list(c), list(c), list(c), list(c)
    first[axis], second[axis], last[axis], before[axis] = 0, 1, -1, -2
    out[tuple(first)] = out[tuple(second)]
    out[tuple(last)] = out[tuple(before)]
    return out


def symmetric_eigenvalues(a11, a22, a33, a12, a13, a23) -> np.ndarray:
    """Eigenvalues of many symmetric 3x3 matrices (closed form), (N, 3) ascending."""
    a11, a22, a33, a12, a13, a23 = (np.asarray(x, np.float64) for x in (a11, a22, a33, a12, a13, a23))
    p1 = a12 * a12 + a13 * a13 + a23 * a23
    q = (a11 + a22 + a33) / 3.0
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p2 = b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    safe = np.where(p > 1e-12, p, 1.0)
    det = (b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13))
    r = np.clip(det / (2.0 * safe**3), -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e_hi = q + 2.0 * p * np.cos(phi)
    e_lo = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e_mid = 3.0 * q - e_hi - e_lo
    out = np.stack([e_lo, e_mid, e_hi], axis=-1).astype(np.float32)
    flat = p <= 1e-12
    if np.any(flat):
        out[flat] = q[flat, None]
    return out
