"""Shared machinery of the synthetic CT phantoms.

A phantom is painted on a regular grid from analytic shapes given in patient space (LPS mm).
Each shape is evaluated only inside its bounding box; the LPS position of every voxel centre
comes from the grid's affine, so the anatomy does not depend on how the grid is laid out.

Painting is ordered: a later stroke overrides an earlier one, for the HU value and the label
alike (a stroke without a label clears the label), so every voxel ends up with at most one
label and the paint order is the priority order.

All geometry is computed in float64 so that the same seed gives bit-identical volumes on any
machine (float32 transcendental functions may differ in the last place between CPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ...images import Image, ImageMeta

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Phantom:
    """A synthetic CT with its ground truth.

    ct : Image
        int16 HU voxels ``[k, j, i]`` with the affine to LPS.
    labels : dict
        Structure name -> bool mask of the CT's shape; masks do not overlap.
    landmarks : dict
        Named LPS points (mm).
    info : dict
        Free-form facts (sizes, volumes, HU of the materials, ...).
    """

    ct: Image
    labels: dict[str, np.ndarray]
    landmarks: dict[str, list[float]]
    info: dict[str, Any] = field(default_factory=dict)

    def labelmap(self) -> tuple[np.ndarray, dict[int, str]]:
        """One multilabel array (uint8, or uint16 past 255 labels) and its value -> name table.

        Values follow the order of :attr:`labels` (1, 2, ...).
        """
        n = len(self.labels)
        dtype = np.uint8 if n < 256 else np.uint16
        out = np.zeros(self.ct.shape, dtype=dtype)
        table: dict[int, str] = {}
        for value, (name, mask) in enumerate(self.labels.items(), start=1):
            out[mask] = value
            table[value] = name
        return out, table


# --------------------------------------------------------------------------------------------
# grid


class Grid:
    """A regular grid: array shape ``(nk, nj, ni)`` and the 4x4 affine (i, j, k, 1) -> LPS."""

    def __init__(self, shape_kji: Sequence[int], affine: np.ndarray):
        self.shape = tuple(int(n) for n in shape_kji)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.inverse = np.linalg.inv(self.affine)
        self.spacing_ijk = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.spacing_kji = tuple(float(s) for s in self.spacing_ijk[::-1])

    @classmethod
    def axial(cls, size_ijk: Sequence[int], spacing_ijk: Sequence[float], centre_lps: Sequence[float]) -> "Grid":
        """An axial grid (i -> L, j -> P, k -> S) whose middle lies at ``centre_lps``."""
        ni, nj, nk = (int(n) for n in size_ijk)
        sp = np.asarray(spacing_ijk, dtype=np.float64)
        a = np.diag([sp[0], sp[1], sp[2], 1.0])
        half = (np.array([ni, nj, nk], dtype=np.float64) - 1.0) / 2.0
        a[:3, 3] = np.asarray(centre_lps, dtype=np.float64) - half * sp
        # Round the origin to 1e-6 mm so that DICOM's decimal strings hold it exactly.
        a[:3, 3] = np.round(a[:3, 3], 6)
        return cls((nk, nj, ni), a)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> Slices | None:
        """Index slices ``(k, j, i)`` of the voxels whose centres may lie in an LPS box."""
        lo = np.asarray(lo, float)
        hi = np.asarray(hi, float)
        # The index box of an LPS box: project the box's half-size through |inverse|.
        m = self.inverse[:3, :3]
        centre = m @ ((lo + hi) / 2.0) + self.inverse[:3, 3]
        half = np.abs(m) @ ((hi - lo) / 2.0)
        first = np.floor(centre - half).astype(int)
        stop = np.ceil(centre + half).astype(int) + 1
        ni, nj, nk = self.shape[2], self.shape[1], self.shape[0]
        f0, f1, f2 = max(first[0], 0), max(first[1], 0), max(first[2], 0)
        s0, s1, s2 = min(stop[0], ni), min(stop[1], nj), min(stop[2], nk)
        if s0 <= f0 or s1 <= f1 or s2 <= f2:
            return None
        return (slice(f2, s2), slice(f1, s1), slice(f0, s0))

    def full(self) -> Slices:
        return (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))

    def coords(self, sl: Slices | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS x, y, z of the voxel centres of a box, as arrays broadcastable to its shape.

        Terms of the affine that are zero are skipped, so an axis-aligned grid gives 1D
        arrays laid along their own axes (cheap); an oblique one gives full 3D arrays.
        """
        sl = sl or self.full()
        k = np.arange(sl[0].start, sl[0].stop, dtype=np.float64)[:, None, None]
        j = np.arange(sl[1].start, sl[1].stop, dtype=np.float64)[None, :, None]
        i = np.arange(sl[2].start, sl[2].stop, dtype=np.float64)[None, None, :]
        out = []
        for r in range(3):
            v: Any = np.full((1, 1, 1), self.affine[r, 3])
            for c, idx in ((0, i), (1, j), (2, k)):
                if self.affine[r, c] != 0.0:
                    v = v + self.affine[r, c] * idx
            out.append(v)
        return out[0], out[1], out[2]

    def shape_of(self, sl: Slices) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in sl)  # type: ignore[return-value]

    def to_ijk(self, lps: Sequence[float]) -> np.ndarray:
        return (self.inverse @ np.r_[np.asarray(lps, float), 1.0])[:3]

    def to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        return (self.affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def sub_slices(outer: Slices, inner: Slices) -> Slices:
    """``inner`` (absolute slices) relative to ``outer``."""
    return tuple(slice(b.start - a.start, b.stop - a.start) for a, b in zip(outer, inner))  # type: ignore[return-value]


def intersect(a: Slices, b: Slices) -> Slices | None:
    out = []
    for sa, sb in zip(a, b):
        lo, hi = max(sa.start, sb.start), min(sa.stop, sb.stop)
        if hi <= lo:
            return None
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# painting


class Canvas:
    """HU values and one label per voxel, painted in priority order (later wins)."""

    def __init__(self, grid: Grid, background_hu: float):
        self.grid = grid
        self.hu = np.full(grid.shape, float(background_hu), dtype=np.float64)
        self.label = np.zeros(grid.shape, dtype=np.uint8)
        self.names: list[str] = []

    def label_id(self, name: str) -> int:
        if name not in self.names:
            if len(self.names) >= 255:
                raise ValueError("too many labels for a uint8 canvas")
            self.names.append(name)
        return self.names.index(name) + 1

    def paint(self, sl: Slices, mask: np.ndarray, hu: float | np.ndarray, label: str | None = None) -> None:
        """Set the HU (a number or an array broadcastable to the box) and label where ``mask``."""
        shape = self.grid.shape_of(sl)
        mask = np.broadcast_to(mask, shape)
        if not mask.any():
            return
        region = self.hu[sl]
        if np.ndim(hu) == 0:
            region[mask] = float(hu)
        else:
            region[mask] = np.broadcast_to(hu, shape)[mask]
        self.label[sl][mask] = self.label_id(label) if label else 0

    def mask(self, name: str) -> np.ndarray:
        if name not in self.names:
            return np.zeros(self.grid.shape, dtype=bool)
        return self.label == self.names.index(name) + 1

    def masks(self) -> dict[str, np.ndarray]:
        """Every label that kept at least one voxel, in the order first painted."""
        counts = np.bincount(self.label.ravel(), minlength=len(self.names) + 1)
        return {name: self.label == v for v, name in enumerate(self.names, start=1) if counts[v] > 0}


# --------------------------------------------------------------------------------------------
# shapes


def smoothstep(t: np.ndarray | float) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def superellipse_rho(dx: np.ndarray, dy: np.ndarray, a: float, b_neg: float, b_pos: float, p: float) -> np.ndarray:
    """Normalised radius of a superellipse (< 1 inside); ``b_neg`` for dy < 0, ``b_pos`` else.

    Homogeneous of degree 1: scaling the shape by ``s`` divides rho by ``s``.
    """
    b = np.where(dy < 0, b_neg, b_pos)
    return ((np.abs(dx) / a) ** p + (np.abs(dy) / b) ** p) ** (1.0 / p)


def superellipse_radius(phi: np.ndarray, a: float, b_neg: float, b_pos: float, p: float) -> np.ndarray:
    """Polar radius of that superellipse in direction phi (x = r sin phi, y = r cos phi)."""
    s, c = np.abs(np.sin(phi)), np.cos(phi)
    b = np.where(c < 0, b_neg, b_pos)
    return 1.0 / ((s / a) ** p + (np.abs(c) / b) ** p) ** (1.0 / p)


def rotation_from_axis(axis: Sequence[float], roll_hint: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """A rotation matrix whose first column is ``axis`` (normalised)."""
    u = np.asarray(axis, float)
    u = u / np.linalg.norm(u)
    h = np.asarray(roll_hint, float)
    if abs(np.dot(h, u)) > 0.95:
        h = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    v = h - np.dot(h, u) * u
    v = v / np.linalg.norm(v)
    w = np.cross(u, v)
    return np.column_stack([u, v, w])


def ellipsoid(
    grid: Grid, centre: Sequence[float], semi: Sequence[float], rot: np.ndarray | None = None, pad: float = 0.0
) -> tuple[Slices, np.ndarray] | None:
    """Box and ``q = sum((local / semi)**2)`` of an ellipsoid (inside where q <= 1).

    ``rot`` has the ellipsoid's axes as columns (world = rot @ local); ``pad`` (mm) enlarges the box.
    """
    c = np.asarray(centre, float)
    s = np.asarray(semi, float)
    if rot is None:
        ext = s + pad
    else:
        ext = np.sqrt(((rot * s[None, :]) ** 2).sum(axis=1)) + pad
    sl = grid.box(c - ext, c + ext)
    if sl is None:
        return None
    x, y, z = grid.coords(sl)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    if rot is None:
        q = (dx / s[0]) ** 2 + (dy / s[1]) ** 2 + (dz / s[2]) ** 2
    else:
        q = 0.0
        for a in range(3):
            loc = dx * rot[0, a] + dy * rot[1, a] + dz * rot[2, a]
            q = q + (loc / s[a]) ** 2
    return sl, np.broadcast_to(q, grid.shape_of(sl))


def catmull_rom(ctrl: Sequence[Sequence[float]], step_mm: float = 2.0) -> np.ndarray:
    """A smooth curve through control points (centripetal-free uniform Catmull-Rom), ~step_mm apart."""
    p = np.asarray(ctrl, float)
    if len(p) < 2:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = [p[0]]
    for s in range(len(p) - 1):
        p0, p1, p2, p3 = ext[s], ext[s + 1], ext[s + 2], ext[s + 3]
        n = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        pts = 0.5 * (
            2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
        )
        out.extend(pts)
    return np.asarray(out)


def resample_radii(ctrl: Sequence[Sequence[float]], radii: Sequence[float], curve: np.ndarray) -> np.ndarray:
    """Radii along a smooth curve, interpolated by arc length between those of its control points."""
    p = np.asarray(ctrl, float)
    r = np.asarray(radii, float)
    if r.size == 1:
        return np.full(len(curve), float(r[0]))
    seg_c = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
    seg_v = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))]
    return np.interp(seg_v / seg_v[-1] * seg_c[-1], seg_c, r)


def tube_sdf(
    grid: Grid,
    points: Sequence[Sequence[float]],
    radii: Sequence[float] | float,
    pad: float = 0.0,
    within: Slices | None = None,
) -> tuple[Slices, np.ndarray] | None:
    """Box and approximate signed distance (mm) to the surface of a tube along a polyline.

    Negative inside. The radius varies linearly along each segment. ``pad`` widens the box so
    that walls or margins around the tube can be taken from the same field.
    """
    pts = np.asarray(points, float)
    r = np.broadcast_to(np.asarray(radii, float), (len(pts),)).astype(float)
    reach = r[:, None] + pad
    sl = grid.box((pts - reach).min(axis=0), (pts + reach).max(axis=0))
    if sl is not None and within is not None:
        sl = intersect(sl, within)
    if sl is None:
        return None
    if len(pts) == 1:
        pts = np.vstack([pts, pts])
        r = np.r_[r, r]
    single = len(pts) == 2
    sd = None if single else np.full(grid.shape_of(sl), np.inf)
    for s in range(len(pts) - 1):
        a, b = pts[s], pts[s + 1]
        ra, rb = r[s], r[s + 1]
        if single:
            seg = sl
        else:
            m = max(ra, rb) + pad
            seg = grid.box(np.minimum(a, b) - m, np.maximum(a, b) + m)
            if seg is None:
                continue
            seg = intersect(seg, sl)
            if seg is None:
                continue
        x, y, z = grid.coords(seg)
        ab = b - a
        ll = float(ab @ ab)
        dx, dy, dz = x - a[0], y - a[1], z - a[2]
        if ll > 0:
            t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / ll, 0.0, 1.0)
        else:
            t = np.zeros(grid.shape_of(seg))
        d = np.sqrt((dx - t * ab[0]) ** 2 + (dy - t * ab[1]) ** 2 + (dz - t * ab[2]) ** 2)
        val = d - (ra + t * (rb - ra))
        if single:
            return sl, np.broadcast_to(val, grid.shape_of(sl))
        loc = sub_slices(sl, seg)
        np.minimum(sd[loc], val, out=sd[loc])
    return sl, sd


def smooth_tube(
    grid: Grid, ctrl: Sequence[Sequence[float]], radii: Sequence[float] | float, pad: float = 0.0, step_mm: float = 2.0
) -> tuple[Slices, np.ndarray] | None:
    """:func:`tube_sdf` along a Catmull-Rom curve through control points."""
    curve = catmull_rom(ctrl, step_mm)
    rr = resample_radii(ctrl, np.atleast_1d(radii), curve)
    return tube_sdf(grid, curve, rr, pad)


def distance_inside(mask: np.ndarray, spacing_kji: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it (0 outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    d = ndimage.distance_transform_edt(padded, sampling=spacing_kji)
    return d[1:-1, 1:-1, 1:-1]


def distance_outside(mask: np.ndarray, spacing_kji: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each voxel outside ``mask`` to the nearest voxel of it (0 inside)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing_kji)


def bone_fill(
    canvas: Canvas,
    names: Sequence[str],
    cortex_mm: float | np.ndarray,
    cortex_hu: float,
    core_hu: dict[str, float | np.ndarray] | float,
) -> None:
    """Give the voxels of bone labels a cortical shell and a cancellous core.

    The shell is every voxel within ``cortex_mm`` of the bone's outside (an array broadcastable
    to the grid allows a thickness varying in space, e.g. the thick cortex of a shaft). The
    core HU of each bone may also be an array broadcastable to the grid (marrow of a shaft).
    """
    ids = [canvas.names.index(n) + 1 for n in names if n in canvas.names]
    if not ids:
        return
    bone = np.isin(canvas.label, ids)
    ks, js, is_ = np.nonzero(bone.any(axis=(1, 2)))[0], np.nonzero(bone.any(axis=(0, 2)))[0], np.nonzero(bone.any(axis=(0, 1)))[0]
    sl = (slice(ks[0], ks[-1] + 1), slice(js[0], js[-1] + 1), slice(is_[0], is_[-1] + 1))
    sub = bone[sl]
    if np.ndim(cortex_mm) == 0:
        # erosion by the ball of that radius (in mm, on the anisotropic grid) = EDT threshold
        sp = np.asarray(canvas.grid.spacing_kji)
        n = np.floor(float(cortex_mm) / sp).astype(int)
        ok, oj, oi = np.meshgrid(*(np.arange(-m, m + 1) for m in n), indexing="ij")
        ball = (ok * sp[0]) ** 2 + (oj * sp[1]) ** 2 + (oi * sp[2]) ** 2 <= float(cortex_mm) ** 2
        core = ndimage.binary_erosion(np.pad(sub, n.max(), constant_values=False), structure=ball)
        m = n.max()
        core = core[m:-m, m:-m, m:-m] if m else core
        shell = sub & ~core
    else:
        d = distance_inside(sub, canvas.grid.spacing_kji)
        thick = np.broadcast_to(cortex_mm, canvas.grid.shape)[sl]
        shell = sub & (d <= thick)
        core = sub & ~shell
    hu = canvas.hu[sl]
    lab = canvas.label[sl]
    hu[shell] = cortex_hu
    if isinstance(core_hu, dict):
        for name, value in core_hu.items():
            if name in canvas.names:
                m = core & (lab == canvas.names.index(name) + 1)
                if np.ndim(value) == 0:
                    hu[m] = value
                else:
                    hu[m] = np.broadcast_to(value, canvas.grid.shape)[sl][m]
    else:
        hu[core] = core_hu


# --------------------------------------------------------------------------------------------
# texture


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_hu: float, smooth_vox: float | Sequence[float]) -> np.ndarray:
    """Gaussian noise smoothed by a gaussian kernel, scaled to a standard deviation of sigma_hu."""
    n = rng.standard_normal(tuple(shape))
    sv = np.broadcast_to(np.asarray(smooth_vox, float), (len(shape),))
    n = ndimage.gaussian_filter(n, sv, mode="reflect")
    # The exact std of white noise after the (separable, truncated, normalised) kernel.
    factor = 1.0
    for s in sv:
        if s <= 0:
            continue
        delta = np.zeros(int(8 * s) * 2 + 41)
        delta[len(delta) // 2] = 1.0
        kern = ndimage.gaussian_filter1d(delta, s, mode="constant")
        factor *= float((kern**2).sum())
    return n * (sigma_hu / np.sqrt(factor))


def finish_ct(hu: np.ndarray, lo: int = -1024, hi: int = 3071) -> np.ndarray:
    """Round to int16 HU within the range a 12-bit CT stores."""
    return np.clip(np.rint(hu), lo, hi).astype(np.int16)


def make_image(grid: Grid, voxels: np.ndarray, description: str) -> Image:
    meta = ImageMeta(
        modality="CT",
        patient_position="HFS",
        series_description=description,
        source="synthetic phantom",
        source_format="phantom",
    )
    return Image(voxels, grid.affine, meta)


def lps_list(p: Sequence[float], nd: int = 3) -> list[float]:
    return [round(float(v), nd) for v in p]
