"""Distance fields on a cropped grid, and the safe way to read them between voxel centres.

A field holds, at every voxel centre, the distance in mm to the nearest voxel centre of a set
of structures (exact Euclidean distance transform with the grid's spacing, ``edt``).

Reading a field at a point p between centres uses the lower bound
``d(p) >= max over the 8 surrounding centres c of (d(c) - |p - c|)``, which holds because a
distance function is 1-Lipschitz. Checking samples h apart along a path against
``margin + radius + h / 2`` therefore guarantees the margin for every point of the path, not
only the samples: the hard constraint is never decided by an interpolation that could
overestimate a clearance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:  # numba makes the per-candidate marching fast; the same code runs (slowly) without it
    from numba import njit
except ImportError:  # pragma: no cover
    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f
        return wrap(args[0]) if args and callable(args[0]) else wrap

BIG = np.float32(1e4)  # "no structure of this kind in reach", mm


@dataclass(frozen=True)
class Crop:
    """A box of the CT grid: array slices and the affine of its own voxel (0, 0, 0)."""

    lo: tuple[int, int, int]  # (k, j, i) start in the full grid
    shape: tuple[int, int, int]  # (nk, nj, ni)
    affine: np.ndarray  # ijk of the crop -> LPS
    spacing: np.ndarray  # mm along i, j, k

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, a + n) for a, n in zip(self.lo, self.shape))  # type: ignore[return-value]

    def lps_to_ijk(self, lps: np.ndarray) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        return np.asarray(lps, float) @ inv[:3, :3].T + inv[:3, 3]


def crop_around(shape: tuple[int, int, int], affine: np.ndarray, centre_lps: np.ndarray, radius_mm: float) -> Crop:
    """The smallest box of the grid holding the ball of ``radius_mm`` around a point."""
    a = np.asarray(affine, float)
    inv = np.linalg.inv(a)
    c = inv[:3, :3] @ centre_lps + inv[:3, 3]
    sp = np.linalg.norm(a[:3, :3], axis=0)
    half = radius_mm / sp + 1.0
    lo_ijk = np.maximum(np.floor(c - half).astype(int), 0)
    hi_ijk = np.minimum(np.ceil(c + half).astype(int), np.array(shape[::-1]) - 1)
    lo = tuple(int(x) for x in lo_ijk[::-1])
    size = tuple(int(h - l + 1) for h, l in zip(hi_ijk[::-1], lo_ijk[::-1]))
    sub = a.copy()
    sub[:3, 3] = a[:3, :3] @ lo_ijk + a[:3, 3]
    return Crop(lo, size, sub, sp)  # type: ignore[arg-type]


def distance_field(mask: np.ndarray, spacing_ijk: np.ndarray) -> np.ndarray:
    """Distance (mm, float32) from every voxel centre to the nearest True voxel centre.

    ``mask`` is indexed [k, j, i]; an empty mask gives ``BIG`` everywhere.
    """
    if not mask.any():
        return np.full(mask.shape, BIG, dtype=np.float32)
    import edt

    # edt measures distance to the nearest zero: feed it the complement.
    d = edt.edt(~mask, anisotropy=tuple(float(s) for s in spacing_ijk[::-1]), black_border=False, parallel=0)
    return d.astype(np.float32, copy=False)


@njit(cache=True, nogil=True)
def lower_bound(field, sp, x, y, z):  # pragma: no cover - compiled
    """Lower bound of the distance at continuous index (x, y, z) = (i, j, k); see module doc."""
    nk, nj, ni = field.shape
    i0 = int(np.floor(x))
    j0 = int(np.floor(y))
    k0 = int(np.floor(z))
    best = -1e9
    for dk in range(2):
        k = min(max(k0 + dk, 0), nk - 1)
        for dj in range(2):
            j = min(max(j0 + dj, 0), nj - 1)
            for di in range(2):
                i = min(max(i0 + di, 0), ni - 1)
                dx = (x - i) * sp[0]
                dy = (y - j) * sp[1]
                dz = (z - k) * sp[2]
                v = field[k, j, i] - np.sqrt(dx * dx + dy * dy + dz * dz)
                if v > best:
                    best = v
    return best


@njit(cache=True, nogil=True)
def upper_bound(field, sp, x, y, z):  # pragma: no cover - compiled
    """Upper bound of the distance at continuous index (x, y, z): min over the 8 centres of d(c) + |p - c|."""
    nk, nj, ni = field.shape
    i0 = int(np.floor(x))
    j0 = int(np.floor(y))
    k0 = int(np.floor(z))
    best = 1e9
    for dk in range(2):
        k = min(max(k0 + dk, 0), nk - 1)
        for dj in range(2):
            j = min(max(j0 + dj, 0), nj - 1)
            for di in range(2):
                i = min(max(i0 + di, 0), ni - 1)
                dx = (x - i) * sp[0]
                dy = (y - j) * sp[1]
                dz = (z - k) * sp[2]
                v = field[k, j, i] + np.sqrt(dx * dx + dy * dy + dz * dz)
                if v < best:
                    best = v
    return best


@njit(cache=True, nogil=True)
def march_clearance(fields, margins, sp, starts, ends, step_mm, need):  # pragma: no cover - compiled
    """Check straight paths against every field, from the entry to the tip.

    Samples are at most ``step_mm`` apart, and further apart only where every field proves
    the skipped stretch clear (sphere tracing); the last sample is the tip.

    Parameters
    ----------
    fields : float32 (g, nk, nj, ni)
        One distance field per avoid rule.
    margins : float64 (g,)
        Margin of each rule, mm.
    sp : float64 (3,)
        Spacing along i, j, k.
    starts, ends : float64 (n, 3)
        Path ends in crop index space (i, j, k): entry and target.
    step_mm : float
        Sampling step h along the path, mm.
    need : float
        Needle radius + h / 2, added to every margin.

    Returns
    -------
    fail_rule : int32 (n,)
        -1 while no sample is known to violate a margin, else the first rule a sample surely
        violates (its upper bound is below the margin).
    uncertain : bool (n, g)
        A sample's lower bound fell below the rule's margin but its upper bound did not: the
        field cannot decide, :func:`exact_violations` must.
    min_clear : float32 (n, g)
        Smallest lower bound of the distance to each rule's structures along the path, mm.
    """
    n = starts.shape[0]
    g = fields.shape[0]
    fail_rule = np.full(n, -1, dtype=np.int32)
    uncertain = np.zeros((n, g), dtype=np.bool_)
    min_clear = np.full((n, g), 1e4, dtype=np.float32)
    for c in range(n):
        dx = (ends[c, 0] - starts[c, 0]) * sp[0]
        dy = (ends[c, 1] - starts[c, 1]) * sp[1]
        dz = (ends[c, 2] - starts[c, 2]) * sp[2]
        length = np.sqrt(dx * dx + dy * dy + dz * dz)
        pos = 0.0  # mm from the entry
        while True:
            t = pos / length if length > 0 else 0.0
            x = starts[c, 0] + t * (ends[c, 0] - starts[c, 0])
            y = starts[c, 1] + t * (ends[c, 1] - starts[c, 1])
            z = starts[c, 2] + t * (ends[c, 2] - starts[c, 2])
            slack = 1e9  # how far the lowest bound exceeds its limit here (negative: no jump)
            failed = False
            for r in range(g):
                lim = margins[r] + need
                d = lower_bound(fields[r], sp, x, y, z)
                if d < min_clear[c, r]:
                    min_clear[c, r] = d
                if d < lim:
                    if upper_bound(fields[r], sp, x, y, z) < lim:
                        fail_rule[c] = r
                        failed = True
                        break
                    uncertain[c, r] = True
                if d - lim < slack:
                    slack = d - lim
            if failed or pos >= length:
                break
            # Sphere tracing: no point within `slack` of here can break a margin (1-Lipschitz),
            # so jump half of it (half: to keep the minimum clearance well sampled), at least h.
            pos = min(pos + max(step_mm, 0.5 * slack), length)
    return fail_rule, uncertain, min_clear


class VoxelTree:
    """Voxel centres of a mask (crop frame, mm) in a KD-tree, built once and reused."""

    def __init__(self, mask: np.ndarray, spacing_ijk: np.ndarray):
        from scipy.spatial import cKDTree

        self.spacing = np.asarray(spacing_ijk, float)
        pts = np.argwhere(mask)[:, ::-1] * self.spacing
        self.tree = cKDTree(pts) if len(pts) else None


def exact_violations(
    tree: VoxelTree, starts: np.ndarray, ends: np.ndarray, step_mm: float, limit: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact check of paths against one structure set: distance from samples to voxel centres.

    Returns (violates (n,) bool, min_distance (n,) float) for paths given in crop index space.
    """
    n = len(starts)
    if tree.tree is None:
        return np.zeros(n, bool), np.full(n, float(BIG))
    sp = tree.spacing
    bad = np.zeros(n, bool)
    dmin = np.full(n, float(BIG))
    for c in range(n):
        a, b = starts[c] * sp, ends[c] * sp
        m = int(np.ceil(np.linalg.norm(b - a) / step_mm)) + 1
        samples = a + np.linspace(0.0, 1.0, m)[:, None] * (b - a)
        d, _ = tree.tree.query(samples, distance_upper_bound=limit + 20.0)
        dmin[c] = float(np.min(d))
        bad[c] = dmin[c] < limit
    return bad, dmin


@njit(cache=True, nogil=True)
def march_labels(labels, starts, ends, sp, step_mm):  # pragma: no cover - compiled
    """Nearest-voxel label (uint8) at every sample of each path: (n, m_max), padded with 255."""
    n = starts.shape[0]
    nk, nj, ni = labels.shape
    m_max = 1
    for c in range(n):
        dx = (ends[c, 0] - starts[c, 0]) * sp[0]
        dy = (ends[c, 1] - starts[c, 1]) * sp[1]
        dz = (ends[c, 2] - starts[c, 2]) * sp[2]
        m = int(np.ceil(np.sqrt(dx * dx + dy * dy + dz * dz) / step_mm)) + 1
        if m > m_max:
            m_max = m
    out = np.full((n, m_max), 255, dtype=np.uint8)
    for c in range(n):
        dx = (ends[c, 0] - starts[c, 0]) * sp[0]
        dy = (ends[c, 1] - starts[c, 1]) * sp[1]
        dz = (ends[c, 2] - starts[c, 2]) * sp[2]
        m = int(np.ceil(np.sqrt(dx * dx + dy * dy + dz * dz) / step_mm)) + 1
        for s in range(m):
            t = s / (m - 1) if m > 1 else 0.0
            i = int(np.rint(starts[c, 0] + t * (ends[c, 0] - starts[c, 0])))
            j = int(np.rint(starts[c, 1] + t * (ends[c, 1] - starts[c, 1])))
            k = int(np.rint(starts[c, 2] + t * (ends[c, 2] - starts[c, 2])))
            if 0 <= i < ni and 0 <= j < nj and 0 <= k < nk:
                out[c, s] = labels[k, j, i]
            else:
                out[c, s] = 0
    return out
