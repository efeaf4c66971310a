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
    from numba import njit, prange
except ImportError:  # pragma: no cover
    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f
        return wrap(args[0]) if args and callable(args[0]) else wrap

    prange = range

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


def crop_around(shape: tuple[int, int, int], affine: np.ndarray, centre_lps: np.ndarray, radius_mm: float,
                half_z_mm: float | None = None) -> Crop:
    """The smallest box of the grid holding a box of LPS half-extents (r, r, half_z) around a point.

    With ``half_z_mm`` None the box is the cube around the ball of ``radius_mm``. The LPS box's
    corners are mapped to the grid, so an oblique grid gets a box that holds the whole LPS box.
    """
    a = np.asarray(affine, float)
    inv = np.linalg.inv(a)
    hz = radius_mm if half_z_mm is None else min(float(half_z_mm), radius_mm)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners = np.asarray(centre_lps, float)[None] + signs * np.array([radius_mm, radius_mm, hz])
    ijk = corners @ inv[:3, :3].T + inv[:3, 3]
    sp = np.linalg.norm(a[:3, :3], axis=0)
    lo_ijk = np.maximum(np.floor(ijk.min(axis=0) - 1.0).astype(int), 0)
    hi_ijk = np.minimum(np.ceil(ijk.max(axis=0) + 1.0).astype(int), np.array(shape[::-1]) - 1)
    hi_ijk = np.maximum(hi_ijk, lo_ijk)
    lo = tuple(int(x) for x in lo_ijk[::-1])
    size = tuple(int(h - l + 1) for h, l in zip(hi_ijk[::-1], lo_ijk[::-1]))
    sub = a.copy()
    sub[:3, 3] = a[:3, :3] @ lo_ijk + a[:3, 3]
    return Crop(lo, size, sub, sp)  # type: ignore[arg-type]


def sub_crop(crop: Crop, lo: tuple[int, int, int], size: tuple[int, int, int]) -> Crop:
    """The box (global grid ``lo``, ``size``, both (k, j, i)) as a crop of its own."""
    a = np.asarray(crop.affine, float)
    shift = np.array(lo[::-1], float) - np.array(crop.lo[::-1], float)
    sub = a.copy()
    sub[:3, 3] = a[:3, :3] @ shift + a[:3, 3]
    return Crop(tuple(int(x) for x in lo), tuple(int(x) for x in size), sub, crop.spacing)  # type: ignore[arg-type]


def pooling_factors(spacing_ijk: np.ndarray) -> np.ndarray:
    """Block size (i, j, k) that makes a fine grid about isotropic: in-plane 0.8 mm with 2 mm
    slices pools 2 x 2 x 1. A block never grows beyond the largest spacing."""
    sp = np.asarray(spacing_ijk, float)
    return np.maximum(1, np.floor(sp.max() / sp + 1e-6)).astype(np.int64)


def pool_any(mask: np.ndarray, f_ijk: np.ndarray) -> np.ndarray:
    """A block is set when any of its voxels is ([k, j, i]; the last blocks may be partial)."""
    fk, fj, fi = (int(x) for x in np.asarray(f_ijk)[::-1])
    if fk == fj == fi == 1:
        return mask
    nk, nj, ni = mask.shape
    pad = ((0, -nk % fk), (0, -nj % fj), (0, -ni % fi))
    m = np.pad(mask, pad) if any(p[1] for p in pad) else mask
    # OR of strided views: an order of magnitude faster than any() over reshaped block axes
    out = m[::fk, ::fj, ::fi].copy()
    for dk in range(fk):
        for dj in range(fj):
            for di in range(fi):
                if dk or dj or di:
                    out |= m[dk::fk, dj::fj, di::fi]
    return out


def cell_slack(f_ijk: np.ndarray, spacing_ijk: np.ndarray) -> float:
    """The farthest a voxel centre of a block is from the block's centre, mm."""
    return float(0.5 * np.linalg.norm((np.asarray(f_ijk) - 1) * np.asarray(spacing_ijk, float)))


def to_pooled(ijk: np.ndarray, f_ijk: np.ndarray) -> np.ndarray:
    """Continuous fine index (i, j, k) -> index of the pooled grid (block centres at integers)."""
    f = np.asarray(f_ijk, float)
    return (np.asarray(ijk, float) - (f - 1.0) / 2.0) / f


def compute_threads() -> int:
    """Threads the planner's own parallel loops use: numba's count (``NUMBA_NUM_THREADS``, all
    cores by default; a cohort's worker processes set it to their one thread so that two workers
    on two cores do not run four threads)."""
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # noqa: BLE001 - no numba: all cores
        return 0


def distance_field(mask: np.ndarray, spacing_ijk: np.ndarray) -> np.ndarray:
    """Distance (mm, float32) from every voxel centre to the nearest True voxel centre.

    ``mask`` is indexed [k, j, i]; an empty mask gives ``BIG`` everywhere.
    """
    if not mask.any():
        return np.full(mask.shape, BIG, dtype=np.float32)
    import edt

    # edt measures distance to the nearest zero: feed it the complement.
    d = edt.edt(~mask, anisotropy=tuple(float(s) for s in spacing_ijk[::-1]), black_border=False,
                parallel=compute_threads())
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


@njit(cache=True, nogil=True, parallel=True)
def march_clearance(fields, margins, sp, starts, ends, step_mm, need, cell):  # pragma: no cover - compiled
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
    cell : float
        How far (mm) a field value may be from the true distance at its grid point: 0 for a
        field of the full grid, the pooling cell's half-diagonal for a pooled one (see
        :func:`pooled_distance_field`). The bounds are widened by it.

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
    unc_lo, unc_hi : float64 (n, g)
        The first and last position (mm from the entry) of an uncertain sample of each rule;
        everything outside ``[unc_lo - h, unc_hi + h]`` is proven clear of that rule.
    fail_at : float64 (n,)
        Where (mm from the entry) the failing sample is; NaN for paths that did not fail.
    """
    n = starts.shape[0]
    g = fields.shape[0]
    fail_rule = np.full(n, -1, dtype=np.int32)
    uncertain = np.zeros((n, g), dtype=np.bool_)
    min_clear = np.full((n, g), 1e4, dtype=np.float32)
    unc_lo = np.full((n, g), np.inf)
    unc_hi = np.full((n, g), -np.inf)
    fail_at = np.full(n, np.nan)
    for c in prange(n):  # candidates are independent: one per thread
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
                d = lower_bound(fields[r], sp, x, y, z) - cell
                if d < min_clear[c, r]:
                    min_clear[c, r] = d
                if d < lim:
                    if upper_bound(fields[r], sp, x, y, z) + cell < lim:
                        fail_rule[c] = r
                        fail_at[c] = pos
                        failed = True
                        break
                    uncertain[c, r] = True
                    if pos < unc_lo[c, r]:
                        unc_lo[c, r] = pos
                    unc_hi[c, r] = pos
                if d - lim < slack:
                    slack = d - lim
            if failed or pos >= length:
                break
            # Sphere tracing: no point within `slack` of here can break a margin (1-Lipschitz),
            # so jump half of it (half: to keep the minimum clearance well sampled), at least h.
            pos = min(pos + max(step_mm, 0.5 * slack), length)
    return fail_rule, uncertain, min_clear, unc_lo, unc_hi, fail_at


@njit(cache=True, nogil=True, parallel=True)
def nearest_member(labels, points, sp, radius_mm):  # pragma: no cover - compiled
    """The label (1..255) of the voxel centre nearest to each point within ``radius_mm``; 0 if none.

    ``labels`` uint8 [k, j, i]; ``points`` (n, 3) continuous crop index (i, j, k); ``sp`` along i, j, k.
    """
    nk, nj, ni = labels.shape
    out = np.zeros(points.shape[0], np.uint8)
    ri = int(np.ceil(radius_mm / sp[0]))
    rj = int(np.ceil(radius_mm / sp[1]))
    rk = int(np.ceil(radius_mm / sp[2]))
    for c in prange(points.shape[0]):
        x, y, z = points[c, 0], points[c, 1], points[c, 2]
        i0 = int(np.rint(x))
        j0 = int(np.rint(y))
        k0 = int(np.rint(z))
        best = radius_mm * radius_mm
        for k in range(max(k0 - rk, 0), min(k0 + rk + 1, nk)):
            dz = (k - z) * sp[2]
            for j in range(max(j0 - rj, 0), min(j0 + rj + 1, nj)):
                dy = (j - y) * sp[1]
                for i in range(max(i0 - ri, 0), min(i0 + ri + 1, ni)):
                    lab = labels[k, j, i]
                    if lab == 0:
                        continue
                    dx = (i - x) * sp[0]
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 <= best:
                        best = d2
                        out[c] = lab
    return out


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


def smoothed_gradient(mask: np.ndarray, kji: np.ndarray, sp: np.ndarray, sigma_mm: float, radius_mm: float
                      ) -> np.ndarray:
    """Gradient of the Gaussian-smoothed indicator of ``mask`` at integer voxels, per mm.

    The same as filtering the whole mask with a Gaussian of ``sigma_mm`` (cut at
    ``radius_mm``) and taking its gradient there, but computed only at the points asked for.
    ``mask`` is uint8 [k, j, i]; ``kji`` (n, 3) int; ``sp`` spacing along i, j, k. Returns
    (n, 3) along the grid axes i, j, k (not yet LPS), up to a positive factor. Outside the
    array counts as 0.
    """
    r = np.floor(radius_mm / np.asarray(sp, float)).astype(int)  # half-size along i, j, k
    z, y, x = np.meshgrid(*(np.arange(-n, n + 1) * s for n, s in zip(r[::-1], np.asarray(sp)[::-1])),
                          indexing="ij")
    w = np.exp(-(x * x + y * y + z * z) / (2.0 * sigma_mm * sigma_mm))
    kernel = np.stack([w * x, w * y, w * z], axis=-1)  # [dk, dj, di, axis i/j/k]
    return _gradient_at(mask, np.ascontiguousarray(kji, dtype=np.int64), kernel)


@njit(cache=True, nogil=True)
def _gradient_at(mask, kji, kernel):  # pragma: no cover - compiled
    nk, nj, ni = mask.shape
    rk = kernel.shape[0] // 2
    rj = kernel.shape[1] // 2
    ri = kernel.shape[2] // 2
    out = np.zeros((kji.shape[0], 3))
    for c in range(kji.shape[0]):
        k0, j0, i0 = kji[c, 0], kji[c, 1], kji[c, 2]
        gx = 0.0
        gy = 0.0
        gz = 0.0
        for dk in range(-rk, rk + 1):
            k = k0 + dk
            if k < 0 or k >= nk:
                continue
            for dj in range(-rj, rj + 1):
                j = j0 + dj
                if j < 0 or j >= nj:
                    continue
                for di in range(-ri, ri + 1):
                    i = i0 + di
                    if i < 0 or i >= ni or mask[k, j, i] == 0:
                        continue
                    # towards the mask: the smoothed indicator grows that way
                    gx += kernel[dk + rk, dj + rj, di + ri, 0]
                    gy += kernel[dk + rk, dj + rj, di + ri, 1]
                    gz += kernel[dk + rk, dj + rj, di + ri, 2]
        out[c, 0] = gx
        out[c, 1] = gy
        out[c, 2] = gz
    return out


@njit(cache=True, nogil=True)
def exact_segment_check(labels, starts, ends, sp, limit, piece_mm):  # pragma: no cover - compiled
    """Exact distance from each segment to the nearest labelled voxel centre, within ``limit``.

    No sampling: each segment is cut into pieces of ``piece_mm``; for each piece, every
    labelled voxel of the box around it (grown by ``limit``) is measured to the piece in closed
    form. Distances beyond ``limit`` are not searched (reported as ``limit`` or more).

    Parameters
    ----------
    labels : uint8 (nk, nj, ni)
        Non-zero where a structure is; the value names which (see :meth:`_Context.rule_at`).
    starts, ends : float64 (n, 3)
        Segment ends in crop index space (i, j, k).
    sp : float64 (3,)
        Spacing along i, j, k, mm.
    limit : float
        Distance (mm) under which a segment violates.

    Returns
    -------
    dmin : float64 (n,)
        The smallest distance found (``1e4`` when none within ``limit`` + a voxel).
    label : uint8 (n,)
        The label of the nearest voxel (0 when none found).
    """
    nk, nj, ni = labels.shape
    n = starts.shape[0]
    dmin = np.full(n, 1e4)
    lab = np.zeros(n, np.uint8)
    for c in range(n):
        ax = starts[c, 0] * sp[0]
        ay = starts[c, 1] * sp[1]
        az = starts[c, 2] * sp[2]
        vx = ends[c, 0] * sp[0] - ax
        vy = ends[c, 1] * sp[1] - ay
        vz = ends[c, 2] * sp[2] - az
        length = np.sqrt(vx * vx + vy * vy + vz * vz)
        pieces = max(1, int(np.ceil(length / piece_mm)))
        best = dmin[c]
        for q in range(pieces):
            t0 = q / pieces
            t1 = (q + 1) / pieces
            px = ax + t0 * vx
            py = ay + t0 * vy
            pz = az + t0 * vz
            wx = (t1 - t0) * vx
            wy = (t1 - t0) * vy
            wz = (t1 - t0) * vz
            ww = wx * wx + wy * wy + wz * wz
            reach = min(best, limit) + 1e-9
            i_lo = max(int(np.floor((min(px, px + wx) - reach) / sp[0])), 0)
            i_hi = min(int(np.ceil((max(px, px + wx) + reach) / sp[0])), ni - 1)
            j_lo = max(int(np.floor((min(py, py + wy) - reach) / sp[1])), 0)
            j_hi = min(int(np.ceil((max(py, py + wy) + reach) / sp[1])), nj - 1)
            k_lo = max(int(np.floor((min(pz, pz + wz) - reach) / sp[2])), 0)
            k_hi = min(int(np.ceil((max(pz, pz + wz) + reach) / sp[2])), nk - 1)
            for k in range(k_lo, k_hi + 1):
                for j in range(j_lo, j_hi + 1):
                    for i in range(i_lo, i_hi + 1):
                        if labels[k, j, i] == 0:
                            continue
                        qx = i * sp[0] - px
                        qy = j * sp[1] - py
                        qz = k * sp[2] - pz
                        u = (qx * wx + qy * wy + qz * wz) / ww if ww > 0 else 0.0
                        u = min(max(u, 0.0), 1.0)
                        dx = qx - u * wx
                        dy = qy - u * wy
                        dz = qz - u * wz
                        d = np.sqrt(dx * dx + dy * dy + dz * dz)
                        if d < best:
                            best = d
                            lab[c] = labels[k, j, i]
        dmin[c] = best
    return dmin, lab


@njit(cache=True, nogil=True)
def _skin_pass(body, lo, hi, skip_lo, skip_hi, out):  # pragma: no cover - compiled
    nk, nj, ni = body.shape
    n = 0
    for k in range(lo[0], hi[0]):
        in_k = skip_lo[0] <= k < skip_hi[0]
        for j in range(lo[1], hi[1]):
            in_kj = in_k and skip_lo[1] <= j < skip_hi[1]
            for i in range(lo[2], hi[2]):
                if not body[k, j, i]:
                    continue
                if in_kj and skip_lo[2] <= i < skip_hi[2]:
                    continue
                # beyond the scan's edge the body is taken to go on
                edge = (k > 0 and not body[k - 1, j, i]) or (k < nk - 1 and not body[k + 1, j, i]) or \
                    (j > 0 and not body[k, j - 1, i]) or (j < nj - 1 and not body[k, j + 1, i]) or \
                    (i > 0 and not body[k, j, i - 1]) or (i < ni - 1 and not body[k, j, i + 1])
                if edge:
                    if out.shape[0] > 0:
                        out[n, 0] = k
                        out[n, 1] = j
                        out[n, 2] = i
                    n += 1
    return n


def skin_voxels(body: np.ndarray, lo, hi, skip_lo=(0, 0, 0), skip_hi=(0, 0, 0)) -> np.ndarray:
    """Global (k, j, i) of the body's surface voxels in the box [lo, hi), minus the box [skip_lo, skip_hi).

    A voxel is skin when one of its 6 neighbours is outside the body; beyond the scan's edge the
    body is taken to go on (a body cut by the field of view or the first and last slice has no
    skin there: nothing is known of what lies beyond, so no needle enters there).
    """
    b = np.ascontiguousarray(body).view(np.uint8)
    args = [np.asarray(x, np.int64) for x in (lo, hi, skip_lo, skip_hi)]
    n = _skin_pass(b, *args, np.zeros((0, 3), np.int64))
    out = np.empty((n, 3), np.int64)
    _skin_pass(b, *args, out)
    return out
