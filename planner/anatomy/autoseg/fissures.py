"""Interlobar fissures as fitted surfaces, and the lobes they cut the lungs into.

Fissures are thin, slightly dense sheets in the lung, crossed by few vessels. A Hessian plate
filter finds them only in pieces (strips where the sheet is sharp and clear of vessels), so
the pieces are used as evidence for a smooth surface fitted per lung. First look:

* the major (oblique) fissure of each lung runs from posterior-superior to anterior-inferior.
  In the rotated sagittal coordinates ``a = (z + y) / sqrt 2`` (along the fissure) and
  ``b = (z - y) / sqrt 2`` (across it) it is the graph of a smooth function ``b = f(x, a)``,
  fitted robustly (RANSAC plane, then iteratively trimmed quadratic fits);
* the right minor (horizontal) fissure is a graph ``z = g(x, y)`` through the candidate pieces
  with near-vertical normals in the anterior part of the right upper region.

Second look, for a lung the first one gives no lobes: when the upper part of the oblique fissure
is flat (its normal within OBLIQUE_MIN_TILT of vertical, outside the oblique search), it and the
minor fissure run on as one near-horizontal sheet, the floor of the upper lobe, a graph
``z = f(x, y)``; below it the oblique fissure runs steeply down to the diaphragm, a graph
``y = g(x, z)``. Both are fitted to the same candidates and refined on a grid (the right lung of
the real chest CT is such a lung).

Every surface kept must be agreed on by several random draws, be supported by the candidates
clearly better than its parallel copies 6-10 mm away (a lung whose fissures do not show gives
surfaces that draws agree on as often as not, fitted to scattered candidates), and, from the
second look, show a dense ridge in the CT itself. The surfaces split each lung into lobes, named
only when their sizes are plausible; the fissure mask is the boundary between them (one voxel
thick). A lung without credible surfaces gets neither, and its note says so (with the slice
spacing as a likely cause where slices are thick: see THIN_SLICE_MM).

Tried and not used: surfaces fitted to the medial surfaces of the vessel-free space (each lobe has
its own vessel tree). On phantoms whose vessels keep to their lobes they recover the lobes (Dice
0.95-0.99), but they also gave plausible lobes on a phantom with randomly placed vessels, and on
the chest CT their surfaces were not measurably poorer in vessels than parallel surfaces 6-10 mm
away. The same fits to the plate candidates pass both tests above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ...errors import InputError
from .grid import bbox, dilate, hessian_eigenvalues

#: Plate filter: scale (mm), ratio of the small eigenvalues to the large one, response floor.
PLATE_SIGMA_MM = 1.2
PLATE_RATIO = 0.5
PLATE_MIN_RESPONSE = 8.0
#: Plate voxels lie between these densities (HU) and this far (mm) from anything denser than
#: the upper bound (vessel walls also look like plates).
PLATE_HU = (-900.0, -350.0)
PLATE_VESSEL_MARGIN_MM = 2.0
#: ...and this far (mm) inside the lung (the pleura is a plate too).
PLATE_PLEURA_MARGIN_MM = 4.0
#: Candidate points kept for the fits (a random subset when there are more).
MAX_POINTS = 60000
#: RANSAC: tries, inlier distance (mm) of the plane stage, then the trimmed quadratic fits.
RANSAC_TRIES = 400
RANSAC_INLIER_MM = 6.0
REFIT_INLIER_MM = (8.0, 5.0, 3.5, 3.0)
#: Oblique fissure plane: its normal, in the sagittal plane, is at least this far from both
#: the vertical and the antero-posterior axes (sin of the angle), and tilted the right way.
OBLIQUE_MIN_TILT = 0.25
OBLIQUE_MAX_NORMAL_X = 0.5
#: Minor fissure: normal within this of vertical (|n_z| at least) and the plane's slope.
MINOR_MIN_NORMAL_Z = 0.85
MINOR_MAX_SLOPE = 0.35
#: Support: the fraction of the fitted surface (in the lung) that has a candidate within
#: this distance (mm) of it, measured on a grid of this cell size (mm).
SUPPORT_MM = 3.0
SUPPORT_CELL_MM = 6.0
#: A fit is credible with at least this support and this many inliers.
MIN_SUPPORT = 0.12
MIN_INLIERS = 300
#: Agreement of fits drawn with different random seeds (see ``fit_lung_agreed``).
AGREE_SEEDS = 3
AGREE_MIN = 2
AGREE_MM = 4.0
#: Second look at a lung whose oblique (and, right, minor) fits give no lobes, see
#: ``fit_floor_steep``: the floor of the upper lobe (normals within ~37 degrees of vertical, a graph
#: z = f(x, y)) and the steep lower part of the oblique fissure below it (normals mostly
#: antero-posterior, a graph y = g(x, z)), each from SHEET_SEEDS draws of which SHEET_AGREE_MIN
#: must agree within AGREE_MM.
FLOOR_MIN_NORMAL_Z = 0.8
STEEP_MIN_NORMAL_Y = 0.6
STEEP_BELOW_FLOOR_MM = 6.0
SHEET_SEEDS = 4
SHEET_AGREE_MIN = 3
#: Grid refinement of a fitted surface: cell (mm), shrinking bands (mm), smoothing (mm), and the
#: power of the cosine between a candidate's normal and the surface's that weighs it.
GRID_CELL_MM = 4.0
GRID_BANDS_MM = (10.0, 8.0, 6.0, 5.0, 4.0)
GRID_SMOOTH_MM = 14.0
GRID_NORMAL_POWER = 8
#: Evidence for every fitted surface (after its grid refinement): the share of its cells
#: (SHEET_CELL_MM, in the lung) with a candidate within SHEET_NEAR_MM of it whose normal is within
#: ~37 degrees of the surface's must be at least SHEET_MIN_SUPPORT, and SHEET_CONTRAST times the
#: best share of the same surface moved by SHEET_SHIFTS_MM: a surface fitted to scattered
#: candidates (a lung whose fissures do not show, or are incomplete) is hardly better supported
#: than its parallel copies, however well random draws agree on it. Measured: fissure-less test
#: lungs (random vessels, noise, 2 mm slices) 0.20-0.26; the chest CT's left oblique fissure 0.57
#: (1.4-1.7 times its copies), its right floor 0.56 (2.2-2.3 times) and steep part 0.49 (1.6
#: times); the demo thorax's fissures 0.78-0.89 (over 40 times).
SHEET_CELL_MM = 4.0
SHEET_NEAR_MM = 2.0
SHEET_NORMAL_COS = 0.8
SHEET_MIN_SUPPORT = 0.35
SHEET_CONTRAST = 1.25
SHEET_SHIFTS_MM = (-10.0, -6.0, 6.0, 10.0)
#: ...and, independently of the candidates, the CT itself must show a thin dense sheet there: the
#: median HU on the surface must exceed the mean of the medians RIDGE_SIDE_MM to either side (along
#: its normal) by RIDGE_MIN_HU, and by RIDGE_MARGIN_HU more than on copies moved RIDGE_MOVED_MM.
#: Profiles that meet anything denser than RIDGE_CLEAR_HU (a vessel, the pleura) are left out.
#: Measured on the chest CT (two runs whose lung masks differ by 0.04 %): left oblique fissure +12
#: to +14 HU, right floor +20 to +24 HU, right steep part +9 to +13 HU, copies moved 8 mm -9 to +1
#: HU; surfaces fitted to fissure-less test lungs -1 to +2 HU; the test lungs' drawn fissures +10 to
#: +28 HU; the demo thorax's +212 HU.
RIDGE_SIDE_MM = 4.0
RIDGE_MIN_HU = 5.0
RIDGE_MARGIN_HU = 6.0
RIDGE_MOVED_MM = 8.0
RIDGE_CLEAR_HU = -500.0
RIDGE_MIN_PROFILES = 200
#: Plausible share of its lung for each lobe (outside these the fit is taken as wrong).
LOBE_FRACTIONS = {
    "lung_upper_lobe_left": (0.3, 0.75), "lung_lower_lobe_left": (0.25, 0.7),
    "lung_upper_lobe_right": (0.2, 0.65), "lung_middle_lobe_right": (0.05, 0.3),
    "lung_lower_lobe_right": (0.25, 0.65),
}

LOBES_LEFT = ("lung_upper_lobe_left", "lung_lower_lobe_left")
LOBES_RIGHT = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")

_S2 = np.sqrt(0.5)


@dataclass
class Surface:
    """``w = coef . terms(u, v)``: a fitted fissure in some rotated frame (see ``Fit``)."""

    coef: np.ndarray
    support: float
    inliers: int


@dataclass
class GridSurface:
    """``w = G(u, v)`` on a regular grid (bilinear), in the orthonormal frame whose rows ``axes``
    are the u, v, w directions in LPS (see ``FLOOR_AXES``, ``STEEP_AXES``, ``OBLIQUE_AXES``)."""

    axes: np.ndarray
    gu: np.ndarray
    gv: np.ndarray
    G: np.ndarray
    inliers: int = 0

    def frame(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _axes_frame(self.axes)(p)

    def w(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Bilinear on the grid; beyond it, the value at its edge."""
        cell_u, cell_v = self.gu[1] - self.gu[0], self.gv[1] - self.gv[0]
        coords = np.stack([(np.ravel(u) - self.gu[0]) / cell_u, (np.ravel(v) - self.gv[0]) / cell_v])
        return ndi.map_coordinates(self.G, coords, order=1, mode="nearest").reshape(np.shape(u))

    def normals(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit normals (in the (u, v, w) frame) at the given places."""
        du, dv = np.gradient(self.G, self.gu[1] - self.gu[0], self.gv[1] - self.gv[0])
        su = GridSurface(self.axes, self.gu, self.gv, du).w(u, v)
        sv = GridSurface(self.axes, self.gu, self.gv, dv).w(u, v)
        n = np.stack([-su, -sv, np.ones_like(su)], axis=-1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def above(self, p: np.ndarray) -> np.ndarray:
        u, v, w = self.frame(p)
        return w > self.w(u, v)


@dataclass
class LungFissures:
    """The fitted surfaces of one lung (None where not credible): the oblique fissure (and the
    right minor one), or, from the second look, the floor of the upper lobe and the steep lower
    part of the oblique fissure."""

    side: str
    oblique: Surface | GridSurface | None = None
    minor: Surface | GridSurface | None = None
    notes: list[str] = field(default_factory=list)
    floor: GridSurface | None = None
    steep: GridSurface | None = None


# --- geometry ----------------------------------------------------------------------------------
def _terms(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(u), u, v]
    if order >= 2:
        cols += [u * u, u * v, v * v]
    return np.stack(cols, axis=-1)


def _axes_frame(axes: np.ndarray):
    """LPS points -> (u, v, w) along the rows of ``axes``."""
    def frame(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = p @ axes.T
        return q[..., 0], q[..., 1], q[..., 2]
    return frame


#: Frames (rows u, v, w in LPS) of the surfaces: the oblique fissure (x, a, b with b across it,
#: the upper lobe at larger b), the floor of the upper lobe and the minor fissure (z over x, y),
#: the steep part (y over x, z).
OBLIQUE_AXES = np.array([[1.0, 0.0, 0.0], [0.0, _S2, _S2], [0.0, -_S2, _S2]])
FLOOR_AXES = np.eye(3)
STEEP_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
_oblique_uvw = _axes_frame(OBLIQUE_AXES)
_minor_uvw = _axes_frame(FLOOR_AXES)


def _lps(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Array indices ``[k, j, i]`` (N, 3) -> LPS mm."""
    ijk = idx[:, ::-1].astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# --- candidates --------------------------------------------------------------------------------
#: Slices further apart than this (mm) undersample a fissure that lies close to the slice plane:
#: at the plate filter's scale (PLATE_SIGMA_MM) such a sheet, thinner than one slice, shows faintly.
#: Measured on the real chest CT (2 mm slices, 0.98 mm pixels): of the right lung's plate
#: candidates, 1.0 % have a normal within 37 degrees of the slice axis with the gradient of the
#: gradient as second derivative, 8.5 % with the three-point difference used now (``thin`` in
#: ``hessian_eigenvalues``), where 20 % would for sheets of every orientation.
THIN_SLICE_MM = 1.25


def thick_slice_hint(spacing) -> str:
    """For the note of a lung whose fissures were not found: why slice spacing may be the cause and
    what would help, or nothing on thin slices. ``spacing`` is the image's (i, j, k) in mm."""
    slice_mm = float(np.asarray(spacing, float)[2])
    if slice_mm <= THIN_SLICE_MM:
        return ""
    return (f"; the slices are {slice_mm:.1f} mm apart, and a fissure lying close to the slice plane (the minor "
            "fissure, often the upper part of the oblique one) shows only faintly between them: a "
            f"reconstruction with slices of {THIN_SLICE_MM:g} mm or thinner may let the fissures be found")


def plate_candidates(hu: np.ndarray, lung: np.ndarray, spacing, axes_lps: np.ndarray):
    """Plate voxels of one lung: ``(indices (N, 3) [k, j, i], normals (N, 3) LPS, response)``."""
    sp = np.asarray(spacing, float)
    box = bbox(lung, 2)
    empty = (np.zeros((0, 3), int), np.zeros((0, 3)), np.zeros(0))
    if box is None:
        return empty
    sub = np.asarray(hu[box], np.float32)
    lb = lung[box]
    inner = ndi.distance_transform_edt(lb, sampling=sp) > PLATE_PLEURA_MARGIN_MM if lb.size < 4e7 else lb
    near_dense = dilate(sub > PLATE_HU[1], PLATE_VESSEL_MARGIN_MM, sp)
    where = inner & (sub > PLATE_HU[0]) & ~near_dense
    del near_dense, inner
    if not where.any():
        return empty
    e, n = hessian_eigenvalues(sub, PLATE_SIGMA_MM, sp, where, first_vector=True, thin=True)
    mag = -e[:, 0]
    ratio = np.sqrt(e[:, 1] ** 2 + e[:, 2] ** 2) / np.maximum(mag, 1e-6)
    resp = mag * np.exp(-(ratio * ratio) / (2.0 * PLATE_RATIO**2))
    keep = (e[:, 0] < 0) & (resp > PLATE_MIN_RESPONSE)
    idx = np.argwhere(where)[keep] + np.array([s.start for s in box])
    nl = n[keep] @ np.asarray(axes_lps, float).T
    return idx, nl, resp[keep]


# --- fits --------------------------------------------------------------------------------------
def _ransac_plane(pts: np.ndarray, ok_normal, rng: np.random.Generator, inlier_mm: float):
    best, best_n = None, 0
    m = len(pts)
    if m < 3:
        return None
    sub = pts if m <= 8000 else pts[rng.choice(m, 8000, replace=False)]
    for _ in range(RANSAC_TRIES):
        s = sub[rng.choice(len(sub), 3, replace=False)]
        nrm = np.cross(s[1] - s[0], s[2] - s[0])
        ln = np.linalg.norm(nrm)
        if ln < 1e-6:
            continue
        nrm /= ln
        if not ok_normal(nrm):
            continue
        d = np.abs((sub - s[0]) @ nrm)
        cnt = int(np.count_nonzero(d < inlier_mm))
        if cnt > best_n:
            best, best_n = (nrm, s[0]), cnt
    return best


def _fit_graph(pts: np.ndarray, weights: np.ndarray, frame, plane, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """Trimmed least-squares fits of ``w = f(u, v)`` starting from the RANSAC plane's inliers."""
    u, v, w = frame(pts)
    nrm, p0 = plane
    inl = np.abs((pts - p0) @ nrm) < REFIT_INLIER_MM[0]
    coef = None
    for k, tol in enumerate(REFIT_INLIER_MM):
        if np.count_nonzero(inl) < 30:
            return None
        order = 1 if k == 0 else 2
        a = _terms(u[inl], v[inl], order) * weights[inl, None]
        c, *_ = np.linalg.lstsq(a, w[inl] * weights[inl], rcond=None)
        coef = np.zeros(6)
        coef[: len(c)] = c
        res = np.abs(w - _terms(u, v, 2) @ coef)
        inl = res < tol
    return coef, inl


def _support(coef: np.ndarray, frame, inl_pts: np.ndarray, lung_pts: np.ndarray) -> float:
    """Fraction of the surface cells (inside the lung) with an inlier candidate nearby."""
    u, v, w = frame(lung_pts)
    near = np.abs(w - _terms(u, v, 2) @ coef) < SUPPORT_MM
    if not near.any():
        return 0.0
    cell = lambda uu, vv: set(zip((uu // SUPPORT_CELL_MM).astype(int).tolist(),  # noqa: E731
                                 (vv // SUPPORT_CELL_MM).astype(int).tolist()))
    surf = cell(u[near], v[near])
    iu, iv, _ = frame(inl_pts)
    hit = cell(iu, iv) & surf
    return len(hit) / max(1, len(surf))


def _oblique_normals(nl: np.ndarray) -> np.ndarray:
    """Candidates whose own normals are oblique in the sagittal plane, tilted as the oblique fissure's."""
    ny, nz = nl[:, 1], nl[:, 2]
    return (np.abs(nl[:, 0]) < OBLIQUE_MAX_NORMAL_X) & (ny * nz < 0) & \
        (np.minimum(np.abs(ny), np.abs(nz)) > OBLIQUE_MIN_TILT * 0.6)


def fit_lung(hu, lung, spacing, affine, axes_lps, side: str, seed: int = 0,
             candidates: tuple | None = None) -> tuple[LungFissures, tuple]:
    """Fit the fissure surfaces of one lung. Returns the fits and the candidates used
    (``candidates``: all of :func:`plate_candidates`, to fit them again with another seed)."""
    rng = np.random.default_rng(seed)
    out = LungFissures(side)
    idx, nl, resp = candidates if candidates is not None else plate_candidates(hu, lung, spacing, axes_lps)
    if len(idx) > MAX_POINTS:
        pick = rng.choice(len(idx), MAX_POINTS, replace=False)
        idx, nl, resp = idx[pick], nl[pick], resp[pick]
    cands = (idx, nl, resp)
    if len(idx) < MIN_INLIERS:
        out.notes.append(f"{side}: too few fissure candidates ({len(idx)})")
        return out, cands
    pts = _lps(idx, affine)
    wts = np.sqrt(np.minimum(resp, 4 * PLATE_MIN_RESPONSE) / PLATE_MIN_RESPONSE)
    lidx = np.argwhere(lung)
    lung_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 200000), replace=False)], affine)

    # major fissure: candidates whose own normals are oblique in the sagittal plane
    obl = _oblique_normals(nl)

    def ok_oblique(n):
        return (abs(n[0]) < OBLIQUE_MAX_NORMAL_X and n[1] * n[2] < 0
                and min(abs(n[1]), abs(n[2])) > OBLIQUE_MIN_TILT)

    plane = _ransac_plane(pts[obl], ok_oblique, rng, RANSAC_INLIER_MM)
    if plane is not None:
        fit = _fit_graph(pts[obl], wts[obl], _oblique_uvw, plane, rng)
        if fit is not None:
            coef, inl = fit
            n_in = int(np.count_nonzero(inl))
            sup = _support(coef, _oblique_uvw, pts[obl][inl], lung_pts)
            if n_in >= MIN_INLIERS and sup >= MIN_SUPPORT:
                out.oblique = Surface(coef, sup, n_in)
            else:
                out.notes.append(f"{side} oblique fissure: weak fit (support {sup:.2f}, {n_in} points)")
    if out.oblique is None:
        if not out.notes:
            out.notes.append(f"{side} oblique fissure: no plane found")
        return out, cands
    if side != "right":
        return out, cands

    # minor fissure: horizontal pieces above the oblique fissure, in the front half of the lung
    x, a, b = _oblique_uvw(pts)
    above = b > _terms(x, a, 2) @ out.oblique.coef + 4.0
    ymid = np.median(lung_pts[:, 1])
    hor = above & (np.abs(nl[:, 2]) > MINOR_MIN_NORMAL_Z) & (pts[:, 1] < ymid)
    if np.count_nonzero(hor) < MIN_INLIERS // 3:
        out.notes.append(f"right minor fissure: too few candidates ({np.count_nonzero(hor)})")
        return out, cands

    def ok_minor(n):
        return abs(n[2]) > np.cos(np.arctan(MINOR_MAX_SLOPE))

    plane = _ransac_plane(pts[hor], ok_minor, rng, RANSAC_INLIER_MM * 0.7)
    if plane is not None:
        fit = _fit_graph(pts[hor], wts[hor], _minor_uvw, plane, rng)
        if fit is not None:
            coef, inl = fit
            coef[3:] = 0.0  # keep the minor fissure planar: the evidence is sparse
            n_in = int(np.count_nonzero(inl))
            lp = lung_pts[(lung_pts[:, 1] < ymid)]
            lx, la, lb2 = _oblique_uvw(lp)
            lp = lp[lb2 > _terms(lx, la, 2) @ out.oblique.coef]
            sup = _support(coef, _minor_uvw, pts[hor][inl], lp)
            if n_in >= MIN_INLIERS // 3 and sup >= MIN_SUPPORT:
                out.minor = Surface(coef, sup, n_in)
            else:
                out.notes.append(f"right minor fissure: weak fit (support {sup:.2f}, {n_in} points)")
    else:
        out.notes.append("right minor fissure: no plane found")
    return out, cands


def _height(surface: Surface | GridSurface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """w of the surface over (u, v) of its frame."""
    return surface.w(u, v) if isinstance(surface, GridSurface) else _terms(u, v, 2) @ surface.coef


def _surface_gap(a: Surface | GridSurface, b: Surface | GridSurface, frame, lung_pts: np.ndarray) -> float:
    """Median distance (mm, across the surface) from ``a`` to ``b`` where ``a`` runs in the lung."""
    u, v, w = frame(lung_pts)
    wa = _height(a, u, v)
    near = np.abs(w - wa) < SUPPORT_MM + 2.0
    if not near.any():
        return float("inf")
    return float(np.median(np.abs(wa - _height(b, u, v))[near]))


def _agreed(surfaces: list, frame, lung_pts: np.ndarray, need: int = AGREE_MIN) -> tuple[int | None, list[float]]:
    """The fit that most others agree with (within AGREE_MM), if at least ``need`` do (itself
    included); and its gaps to the others. Ties go to the better supported fit."""
    def strength(s: Surface | GridSurface) -> float:
        return float(s.inliers) if isinstance(s, GridSurface) else s.support

    best, best_n, best_gaps = None, 0, []
    for i, a in enumerate(surfaces):
        if a is None:
            continue
        gaps = [_surface_gap(a, b, frame, lung_pts) for j, b in enumerate(surfaces) if j != i and b is not None]
        n = 1 + sum(g <= AGREE_MM for g in gaps)
        if n > best_n or (n == best_n and best is not None and strength(a) > strength(surfaces[best])):
            best, best_n, best_gaps = i, n, gaps
    return (best if best_n >= need else None), best_gaps


def fit_lung_agreed(hu, lung, spacing, affine, axes_lps, side: str) -> LungFissures:
    """:func:`fit_lung` with AGREE_SEEDS random draws of the same candidates. A surface is kept
    only when at least AGREE_MIN of the fits put it within AGREE_MM of each other (a fit that
    another random draw moves elsewhere is fitted to noise) and, drawn to its candidates on a
    grid, it passes :func:`_credible` (agreement alone is no proof).

    When that gives the lung no lobes, :func:`fit_floor_steep` has a second look at the same
    candidates; its surfaces are used when they are credible (the lobes they cut may still be
    left unnamed by :func:`split_lung` for implausible sizes)."""
    cands = plate_candidates(hu, lung, spacing, axes_lps)
    first = _first_look(hu, lung, spacing, affine, axes_lps, side, cands)
    if first.oblique is not None and (side != "right" or first.minor is not None):
        return first
    second = fit_floor_steep(hu, cands, lung, affine, side)
    if second.floor is None or second.steep is None:
        first.notes.extend(second.notes)
        return first
    second.notes = [*first.notes, *second.notes]
    return second


def _first_look(hu, lung, spacing, affine, axes_lps, side: str, cands) -> LungFissures:
    fits = [fit_lung(hu, lung, spacing, affine, axes_lps, side, seed=s, candidates=cands)[0]
            for s in range(AGREE_SEEDS)]
    lidx = np.argwhere(lung)
    if not len(lidx):
        return fits[0]
    rng = np.random.default_rng(0)
    lung_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 50000), replace=False)], affine)
    i, gaps = _agreed([f.oblique for f in fits], _oblique_uvw, lung_pts)
    if i is None:
        out = LungFissures(side, notes=list(fits[0].notes))
        if any(f.oblique is not None for f in fits):
            shown = ", ".join("inf" if not np.isfinite(g) else f"{g:.0f}" for g in gaps) or "none"
            out.notes.append(f"{side} oblique fissure: fits of different random draws disagree "
                             f"(median gaps {shown} mm)")
        return out
    out = fits[i]
    if out.minor is not None:
        j, gaps = _agreed([f.minor if f.oblique is not None else None for f in fits], _minor_uvw, lung_pts)
        if j is None:
            out.minor = None
            out.notes.append("right minor fissure: fits of different random draws disagree")
    # Agreement is no proof: draws agree on surfaces fitted to the scattered candidates of a lung
    # whose fissures do not show as often as not (fissure-less test lungs: 6 of 10). Each agreed
    # surface is drawn to its candidates on a grid and must pass the second look's tests.
    ev_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 100000), replace=False)], affine)
    dense_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 400000), replace=False)], affine)
    pts, nl = _lps(cands[0], affine), cands[1]
    assert isinstance(out.oblique, Surface)
    obl = _oblique_normals(nl)
    grid = _refine_grid(out.oblique.coef, OBLIQUE_AXES, pts[obl], nl[obl], ev_pts)
    good, said = _credible(grid, (pts, nl), ev_pts, dense_pts, hu, affine, f"{side} oblique fissure")
    out.notes.extend(said)
    if not good:
        out.oblique = out.minor = None
        return out
    out.oblique = grid
    if isinstance(out.minor, Surface):
        y_mid = np.median(ev_pts[:, 1])

        def upper_front(p):
            return p[grid.above(p) & (p[:, 1] < y_mid)]

        hor = (np.abs(nl[:, 2]) > MINOR_MIN_NORMAL_Z) & grid.above(pts) & (pts[:, 1] < y_mid)
        minor = _refine_grid(out.minor.coef, FLOOR_AXES, pts[hor], nl[hor], upper_front(ev_pts))
        good, said = _credible(minor, (pts, nl), upper_front(ev_pts), upper_front(dense_pts), hu, affine,
                               "right minor fissure")
        out.notes.extend(said)
        out.minor = minor if good else None
    return out


# --- second look: the floor of the upper lobe and the steep part below it --------------------------
def _refine_grid(coef: np.ndarray, axes: np.ndarray, pts: np.ndarray, nrm: np.ndarray, lung_pts: np.ndarray) -> GridSurface:
    """From a quadratic fit, a surface on a grid drawn to the candidates near it (a mean shift in
    shrinking bands, each candidate weighed by how well its normal matches the surface's)."""
    lu, lv, _ = _axes_frame(axes)(lung_pts)
    gu = np.arange(lu.min() - GRID_CELL_MM, lu.max() + 2 * GRID_CELL_MM, GRID_CELL_MM)
    gv = np.arange(lv.min() - GRID_CELL_MM, lv.max() + 2 * GRID_CELL_MM, GRID_CELL_MM)
    uu, vv = np.meshgrid(gu, gv, indexing="ij")
    surf = GridSurface(axes, gu, gv, (_terms(uu.ravel(), vv.ravel(), 2) @ coef).reshape(uu.shape))
    u, v, w = surf.frame(pts)
    nf = nrm @ axes.T
    iu = np.clip(np.round((u - gu[0]) / GRID_CELL_MM).astype(int), 0, len(gu) - 1)
    iv = np.clip(np.round((v - gv[0]) / GRID_CELL_MM).astype(int), 0, len(gv) - 1)
    cell = iu * len(gv) + iv
    sig = GRID_SMOOTH_MM / GRID_CELL_MM
    for band in GRID_BANDS_MM:
        for _ in range(2):
            res = w - surf.w(u, v)
            wt = np.abs(np.sum(surf.normals(u, v) * nf, axis=1)) ** GRID_NORMAL_POWER
            near = np.abs(res) < band
            num = np.bincount(cell[near], wt[near] * res[near], surf.G.size).reshape(surf.G.shape)
            den = np.bincount(cell[near], wt[near], surf.G.size).reshape(surf.G.shape)
            num = ndi.gaussian_filter(num, sig, mode="constant")
            den = ndi.gaussian_filter(den, sig, mode="constant")
            surf.G = surf.G + np.where(den > 0.05, num / np.maximum(den, 1e-9), 0.0)
    surf.inliers = int(np.count_nonzero(np.abs(w - surf.w(u, v)) < SUPPORT_MM))
    return surf


def _distance_normal(signed, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm, to first order) of points to the surface ``signed(p) = 0``, and its
    unit normal there (LPS)."""
    eps = 0.5
    grad = np.stack([(signed(p + eps * e) - signed(p - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1)
    g = np.maximum(np.linalg.norm(grad, axis=1), 1e-9)
    return signed(p) / g, grad / g[:, None]


def _grid_signed(surf: GridSurface):
    """``p -> w(p) - G(u(p), v(p))``: zero on the surface."""
    def f(p):
        u, v, w = surf.frame(p)
        return w - surf.w(u, v)
    return f


def _support_contrast(surf: GridSurface, cands: tuple, lung_pts: np.ndarray) -> tuple[float, float]:
    """The surface's support (see SHEET_MIN_SUPPORT) and the best support of its moved copies;
    cells are cut in the surface's own (u, v)."""
    pts, nrm = cands
    signed = _grid_signed(surf)
    dl, _ = _distance_normal(signed, lung_pts)
    dc, ns = _distance_normal(signed, pts)
    agree = np.abs(np.sum(ns * nrm, axis=1)) > SHEET_NORMAL_COS

    def key(p):
        u, v, _ = surf.frame(p)
        return np.floor(u / SHEET_CELL_MM).astype(np.int64) * 1_000_003 + np.floor(v / SHEET_CELL_MM).astype(np.int64)

    kl, kc = key(lung_pts), key(pts)

    def at(shift: float) -> float:
        cells = np.unique(kl[np.abs(dl - shift) < SUPPORT_MM])
        hit = np.unique(kc[agree & (np.abs(dc - shift) < SHEET_NEAR_MM)])
        return len(np.intersect1d(hit, cells)) / max(1, len(cells))

    return at(0.0), max(at(d) for d in SHEET_SHIFTS_MM)


def _ridge_hu(dist: np.ndarray, nrm: np.ndarray, pts: np.ndarray, hu: np.ndarray, affine: np.ndarray,
              shift: float = 0.0) -> tuple[float, int]:
    """Median HU on a surface (moved ``shift`` mm along its normal) minus the mean of the medians
    RIDGE_SIDE_MM to either side, over the profiles across it (through the ``pts`` within 1 mm of
    it, whose signed distances and normals :func:`_distance_normal` gave) that stay clear of
    anything denser than RIDGE_CLEAR_HU; and how many profiles that is."""
    near = np.abs(dist - shift) < 1.0
    if not near.any():
        return float("-inf"), 0
    n = nrm[near]
    q = pts[near] - (dist[near] - shift)[:, None] * n  # onto the (moved) surface
    to_ijk = np.linalg.inv(affine)
    offs = np.arange(-RIDGE_SIDE_MM, RIDGE_SIDE_MM + 0.5, 1.0)
    prof = np.empty((len(q), len(offs)), np.float32)
    for c, o in enumerate(offs):
        ijk = (q + o * n) @ to_ijk[:3, :3].T + to_ijk[:3, 3]
        prof[:, c] = ndi.map_coordinates(hu, ijk[:, ::-1].T, order=1, mode="nearest")
    ok = prof.max(axis=1) < RIDGE_CLEAR_HU
    if np.count_nonzero(ok) < RIDGE_MIN_PROFILES:
        return float("-inf"), int(np.count_nonzero(ok))
    med = np.median(prof[ok], axis=0)
    return float(med[len(offs) // 2] - 0.5 * (med[0] + med[-1])), int(np.count_nonzero(ok))


def _credible(surf: GridSurface, cands: tuple, lung_pts: np.ndarray, dense_pts: np.ndarray, hu: np.ndarray,
              affine: np.ndarray, what: str) -> tuple[bool, list[str]]:
    """Whether a fitted surface is a fissure, and the notes that say so: supported by the candidates
    (LPS points, normals) at SHEET_MIN_SUPPORT and SHEET_CONTRAST times its moved copies (cells from
    ``lung_pts``), and on a dense ridge in the CT (:func:`_ridge_hu`, profiles through ``dense_pts``)."""
    on, moved = _support_contrast(surf, cands, lung_pts)
    good = on >= SHEET_MIN_SUPPORT and on >= SHEET_CONTRAST * moved
    said = (f"{what}: support {on:.2f}, {moved:.2f} for the same surface moved "
            f"{min(abs(d) for d in SHEET_SHIFTS_MM):g}-{max(abs(d) for d in SHEET_SHIFTS_MM):g} mm"
            + ("" if good else "; too weak"))
    if not good:
        return False, [said]
    dist, nrm = _distance_normal(_grid_signed(surf), dense_pts)
    on, n = _ridge_hu(dist, nrm, dense_pts, hu, affine)
    moved = max(_ridge_hu(dist, nrm, dense_pts, hu, affine, d)[0] for d in (-RIDGE_MOVED_MM, RIDGE_MOVED_MM))
    good = on >= RIDGE_MIN_HU and on >= moved + RIDGE_MARGIN_HU
    shown = "no clear profiles" if not np.isfinite(on) else f"{on:+.0f} HU over {n} profiles"
    return good, [said, f"{what}: ridge in the CT {shown}, {moved:+.0f} HU moved {RIDGE_MOVED_MM:g} mm"
                  + ("" if good else "; too weak")]


def _grid_fits(pts, nrm, axes, ok_normal, lung_pts, what: str) -> tuple[GridSurface | None, str]:
    """SHEET_SEEDS draws of RANSAC plane -> quadratic -> grid; the draw most others agree with, if
    SHEET_AGREE_MIN of them do and it has MIN_INLIERS (else None and why)."""
    if len(pts) < MIN_INLIERS:
        return None, f"{what}: too few candidates ({len(pts)})"
    wts = np.ones(len(pts))
    frame = _axes_frame(axes)
    fits: list[GridSurface | None] = []
    for seed in range(SHEET_SEEDS):
        rng = np.random.default_rng(seed)
        plane = _ransac_plane(pts, ok_normal, rng, RANSAC_INLIER_MM)
        got = _fit_graph(pts, wts, frame, plane, rng) if plane is not None else None
        fits.append(_refine_grid(got[0], axes, pts, nrm, lung_pts) if got is not None else None)
    best, best_gaps = _agreed(fits, frame, lung_pts, SHEET_AGREE_MIN)
    if best is None:
        shown = ", ".join(f"{g:.0f}" for g in best_gaps if np.isfinite(g)) or "none"
        return None, f"{what}: fits of different random draws disagree (median gaps {shown} mm)"
    surf = fits[best]
    assert surf is not None
    if surf.inliers < MIN_INLIERS:
        return None, f"{what}: weak fit ({surf.inliers} points)"
    return surf, ""


def fit_floor_steep(hu, cands, lung: np.ndarray, affine: np.ndarray, side: str) -> LungFissures:
    """Second look at a lung whose oblique fissure fits gave no lobes. When the upper part of the
    oblique fissure is flat, it and the minor fissure run on as one near-horizontal sheet, the floor
    of the upper lobe (a graph z = f(x, y)); below it the oblique fissure turns steeply down to the
    diaphragm (a graph y = g(x, z)). Both are fitted to the same plate candidates and refined on a
    grid; each is kept only when random draws agree on it (:func:`_grid_fits`), the candidates
    support it better than its moved copies and the CT shows a dense ridge along it
    (:func:`_credible`)."""
    out = LungFissures(side)
    idx, nl, _ = cands
    lidx = np.argwhere(lung)
    if len(idx) < MIN_INLIERS or not len(lidx):
        out.notes.append(f"{side} lung, second look: too few fissure candidates ({len(idx)})")
        return out
    rng = np.random.default_rng(0)
    pts = _lps(idx, affine)
    lung_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 100000), replace=False)], affine)
    dense_pts = _lps(lidx[rng.choice(len(lidx), min(len(lidx), 400000), replace=False)], affine)

    def thin(sel):
        k = np.flatnonzero(sel)
        return k if len(k) <= MAX_POINTS else np.sort(rng.choice(k, MAX_POINTS, replace=False))

    def credible(surf: GridSurface | None, why: str, lung_at: np.ndarray, dense_at: np.ndarray, what: str) -> bool:
        if surf is None:
            out.notes.append(why)
            return False
        good, said = _credible(surf, (pts, nl), lung_at, dense_at, hu, affine, what)
        out.notes.extend(said)
        return good

    flat = thin(np.abs(nl[:, 2]) > FLOOR_MIN_NORMAL_Z)
    what = f"{side} upper lobe floor"
    floor, why = _grid_fits(pts[flat], nl[flat], FLOOR_AXES, lambda n: abs(n[2]) > FLOOR_MIN_NORMAL_Z + 0.05,
                            lung_pts, what)
    if not credible(floor, why, lung_pts, dense_pts, what):
        return out
    assert floor is not None
    under = lung_pts[~floor.above(lung_pts)]
    zf = floor.w(pts[:, 0], pts[:, 1])
    steep_sel = thin((pts[:, 2] < zf - STEEP_BELOW_FLOOR_MM) & (np.abs(nl[:, 1]) > STEEP_MIN_NORMAL_Y)
                     & (nl[:, 1] * nl[:, 2] <= 0.05))
    what = f"{side} lower oblique fissure"
    steep, why = _grid_fits(pts[steep_sel], nl[steep_sel], STEEP_AXES,
                            lambda n: abs(n[1]) > STEEP_MIN_NORMAL_Y + 0.1 and n[1] * n[2] <= 0.05,
                            under if len(under) > 1000 else lung_pts, what)
    if not credible(steep, why, under, dense_pts[~floor.above(dense_pts)], what):
        return out
    out.floor, out.steep = floor, steep
    return out


# --- fissures from the user's points ------------------------------------------------------------
#: A quadratic oblique fissure from this many points on (a plane below; the minor fissure is always
#: a plane); points farther than this (RMS, mm) from their fitted surface are refused.
POINTS_QUADRATIC_FROM = 10
POINTS_MAX_RMS_MM = 3.0


def fit_points(points: dict[str, np.ndarray], side: str) -> LungFissures:
    """The fissures of one lung through the user's points (``{"oblique": (n, 3), "minor": (m, 3)}``
    LPS; see :mod:`planner.anatomy.fissure_points`). Raises InputError for points that cannot
    give the lung its lobes: too few, on a line, scattered off any smooth surface, or a minor
    fissure missing in the right lung or given in the left."""
    if side == "left" and "minor" in points:
        raise InputError("left lung: points on a minor fissure (only the right lung has one)")
    if side == "right" and set(points) != {"oblique", "minor"}:
        missing = {"oblique", "minor"} - set(points)
        raise InputError(f"right lung: no points on its {' or '.join(sorted(missing))} fissure; the right lung has "
                         "three lobes, so give points on both the oblique and the minor fissure")
    out = LungFissures(side)
    said = []
    for kind, frame in (("oblique", _oblique_uvw), ("minor", _minor_uvw)):
        if kind not in points:
            continue
        pts = np.asarray(points[kind], float)
        if len(pts) < 3:
            raise InputError(f"{side} {kind} fissure: {len(pts)} point(s); at least 3 are needed")
        u, v, w = frame(pts)
        order = 2 if kind == "oblique" and len(pts) >= POINTS_QUADRATIC_FROM else 1
        a = _terms(u, v, order)
        c, _, rank, _ = np.linalg.lstsq(a, w, rcond=None)
        if rank < a.shape[1]:
            raise InputError(f"{side} {kind} fissure: the {len(pts)} points lie on a line; spread them over the "
                             "fissure (several slices)")
        coef = np.zeros(6)
        coef[: len(c)] = c
        rms = float(np.sqrt(np.mean((w - _terms(u, v, 2) @ coef) ** 2)))
        if rms > POINTS_MAX_RMS_MM:
            raise InputError(f"{side} {kind} fissure: the {len(pts)} points are {rms:.1f} mm (RMS) off the smoothest "
                             f"surface through them (at most {POINTS_MAX_RMS_MM:g}); check the points on another "
                             "fissure or off the lung")
        setattr(out, kind, Surface(coef, 1.0, len(pts)))
        said.append(f"{kind} {len(pts)} points, {rms:.1f} mm RMS off the fitted {'quadratic' if order == 2 else 'plane'}")
    out.notes.append(f"{side} lung: fissures fitted to the points given ({'; '.join(said)})")
    return out


# --- lobes and sheets ----------------------------------------------------------------------------
def _side_of(surface: Surface | GridSurface, frame, pts: np.ndarray) -> np.ndarray:
    u, v, w = frame(pts)
    return w > _height(surface, u, v)


def _lobe_labels(lung: np.ndarray, affine: np.ndarray, fits: LungFissures) -> np.ndarray | None:
    """1 upper, 2 middle (right lung), 3 lower, 0 outside the lung; None without the surfaces."""
    idx = np.argwhere(lung)
    pts = _lps(idx, affine)
    if fits.floor is not None and fits.steep is not None:
        # below the floor of the upper lobe: in front of the steep part is the middle lobe (the
        # lingula of the upper lobe on the left), behind it the lower lobe
        upper = fits.floor.above(pts)
        behind = fits.steep.above(pts)
        labels = np.where(upper, 1, np.where(behind, 3, 2 if fits.side == "right" else 1)).astype(np.uint8)
    elif fits.oblique is not None and (fits.side != "right" or fits.minor is not None):
        upper = _side_of(fits.oblique, _oblique_uvw, pts)
        labels = np.where(upper, 1, 3).astype(np.uint8)
        if fits.side == "right":
            labels[upper & ~_side_of(fits.minor, _minor_uvw, pts)] = 2
    else:
        return None
    lab = np.zeros(lung.shape, np.uint8)
    lab[tuple(idx.T)] = labels
    return lab


def split_lung(lung: np.ndarray, affine: np.ndarray, fits: LungFissures) -> dict[str, np.ndarray] | None:
    """Lobe masks of one lung from its fits, or None when the fits do not give all its lobes."""
    lab = _lobe_labels(lung, affine, fits)
    if lab is None:
        return None
    lab = _tidy(lab, lung)
    names = LOBES_RIGHT if fits.side == "right" else LOBES_LEFT
    codes = (1, 2, 3) if fits.side == "right" else (1, 3)
    total = float(np.count_nonzero(lung))
    out = {}
    for name, c in zip(names, codes):
        m = lab == c
        lo, hi = LOBE_FRACTIONS[name]
        frac = np.count_nonzero(m) / max(total, 1.0)
        if not lo <= frac <= hi:
            fits.notes.append(f"{name}: {frac:.0%} of the lung, outside {lo:.0%}-{hi:.0%}; lobes left out")
            return None
        out[name] = m
    return out


def _tidy(lab: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Each lobe keeps its largest piece; stray pieces join the lobe they touch most."""
    box = bbox(lung)
    sub = lab[box].copy()
    for c in np.unique(sub[sub > 0]):
        m = sub == c
        cl, n = ndi.label(m)
        if n > 1:
            sizes = np.bincount(cl.ravel())
            sizes[0] = 0
            sub[m & (cl != np.argmax(sizes))] = 0
    hole = lung[box] & (sub == 0)
    if hole.any():
        _, near = ndi.distance_transform_edt(sub == 0, return_indices=True)
        sub[hole] = sub[tuple(n[hole] for n in near)]
    out = lab.copy()
    out[box] = sub
    return out


def boundary_sheet(lobes: dict[str, np.ndarray], lung: np.ndarray) -> np.ndarray:
    """Voxels of a lobe that touch another lobe of the same lung: a one-voxel sheet."""
    out = np.zeros(lung.shape, bool)
    names = list(lobes)
    box = bbox(lung, 1)
    if box is None:
        return out
    st = ndi.generate_binary_structure(3, 1)
    for i, a in enumerate(names):
        others = np.zeros(out[box].shape, bool)
        for b in names[i + 1:]:
            others |= lobes[b][box]
        if others.any():
            out[box] |= lobes[a][box] & ndi.binary_dilation(others, st)
    return out


def surface_sheet(lung: np.ndarray, affine: np.ndarray, fits: LungFissures) -> np.ndarray:
    """The fitted surfaces drawn in the lung (one voxel thick), without the lobe split."""
    if fits.floor is not None:
        lab = _lobe_labels(lung, affine, fits)
        if lab is None:
            return np.zeros(lung.shape, bool)
        return boundary_sheet({c: lab == c for c in (1, 2, 3)}, lung)
    labels = {}
    idx = np.argwhere(lung)
    pts = _lps(idx, affine)
    lab = np.zeros(lung.shape, np.uint8)
    if fits.oblique is not None:
        up = _side_of(fits.oblique, _oblique_uvw, pts)
        lab[tuple(idx.T)] = np.where(up, 1, 2)
        labels["u"] = lab == 1
        labels["l"] = lab == 2
        sheet = boundary_sheet(labels, lung)
    else:
        sheet = np.zeros(lung.shape, bool)
    if fits.minor is not None:
        up = _side_of(fits.minor, _minor_uvw, pts)
        lab[tuple(idx.T)] = np.where(up, 1, 2)
        minor = boundary_sheet({"u": lab == 1, "l": lab == 2}, lung)
        if fits.oblique is not None:
            minor &= labels["u"]
        sheet |= minor
    return sheet
