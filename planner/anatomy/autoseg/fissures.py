"""Interlobar fissures as fitted surfaces, and the lobes they cut the lungs into.

Fissures are thin, slightly dense sheets in the lung, crossed by few vessels. A Hessian plate
filter finds them only in pieces (strips where the sheet is sharp and clear of vessels), so
the pieces are used as evidence for a smooth surface fitted per lung:

* the major (oblique) fissure of each lung runs from posterior-superior to anterior-inferior.
  In the rotated sagittal coordinates ``a = (z + y) / sqrt 2`` (along the fissure) and
  ``b = (z - y) / sqrt 2`` (across it) it is the graph of a smooth function ``b = f(x, a)``,
  fitted robustly (RANSAC plane, then iteratively trimmed quadratic fits);
* the right minor (horizontal) fissure is a graph ``z = g(x, y)`` through the candidate pieces
  with near-vertical normals in the anterior part of the right upper region.

The fitted surfaces split each lung into lobes; the fissure mask is the boundary between them
(one voxel thick). A fit is credible when enough of the surface inside the lung is supported
by plate pieces lying close to it; where it is not, no lobes are returned for that lung.

Known limit: an oblique fissure flatter than about 15 degrees (its normal within OBLIQUE_MIN_TILT
of vertical) is outside the oblique search, and when its upper part and the minor fissure run on
as one near-horizontal sheet the fits of different draws part ways; such a lung gets no lobes
and no sheet (the planner then reports the fissures as not known along each path through it).
A likely cause on the real chest CT is its slice spacing (see THIN_SLICE_MM): a sheet close to
the slice plane is thinner than a slice and hardly shows to the plate filter; the note of such a
lung says so (``thick_slice_hint``).
Tried and not used for such a lung: surfaces fitted to the medial surfaces of the vessel-free
space (each lobe has its own vessel tree). On phantoms whose vessels keep to their lobes they
recover the lobes (Dice 0.95-0.99), but they also gave plausible lobes on a phantom with randomly
placed vessels, and on the chest CT their surfaces were not measurably poorer in vessels than
parallel surfaces 6-10 mm away, so agreement between draws is no proof there.
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
class LungFissures:
    """The fitted surfaces of one lung (None where not credible)."""

    side: str
    oblique: Surface | None = None
    minor: Surface | None = None
    notes: list[str] = field(default_factory=list)


# --- geometry ----------------------------------------------------------------------------------
def _terms(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(u), u, v]
    if order >= 2:
        cols += [u * u, u * v, v * v]
    return np.stack(cols, axis=-1)


def _oblique_uvw(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS points -> (x, a, b): b across the oblique fissure (upper lobe at larger b)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return x, (z + y) * _S2, (z - y) * _S2


def _minor_uvw(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return p[..., 0], p[..., 1], p[..., 2]


def _lps(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Array indices ``[k, j, i]`` (N, 3) -> LPS mm."""
    ijk = idx[:, ::-1].astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# --- candidates --------------------------------------------------------------------------------
#: Slices further apart than this (mm) undersample a fissure that lies close to the slice plane:
#: at the plate filter's scale (PLATE_SIGMA_MM) such a sheet, thinner than one slice, hardly shows.
#: Measured on the real chest CT (2 mm slices, 0.98 mm pixels): of 172,487 plate candidates in the
#: right lung, 1.0 % have a normal within 37 degrees of the slice axis, where 20 % would for
#: sheets of every orientation; the sheet between its upper lobe and the rest, plain to the eye on
#: sagittal views, is not found. (The demo thorax, 2.5 mm slices, is no counter-example: its
#: synthetic fissures are drawn a full voxel thick, with no partial-volume loss.)
THIN_SLICE_MM = 1.25


def thick_slice_hint(spacing) -> str:
    """For the note of a lung whose fissures were not found: why slice spacing may be the cause and
    what would help, or nothing on thin slices. ``spacing`` is the image's (i, j, k) in mm."""
    slice_mm = float(np.asarray(spacing, float)[2])
    if slice_mm <= THIN_SLICE_MM:
        return ""
    return (f"; the slices are {slice_mm:.1f} mm apart, so a fissure lying close to the slice plane (the minor "
            "fissure, often the upper part of the oblique one) hardly shows to the fissure search: a "
            f"reconstruction with slices of {THIN_SLICE_MM:g} mm or thinner may let it be found")


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
    e, n = hessian_eigenvalues(sub, PLATE_SIGMA_MM, sp, where, first_vector=True)
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
    ny, nz = nl[:, 1], nl[:, 2]
    obl = (np.abs(nl[:, 0]) < OBLIQUE_MAX_NORMAL_X) & (ny * nz < 0) & \
          (np.minimum(np.abs(ny), np.abs(nz)) > OBLIQUE_MIN_TILT * 0.6)

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


def _surface_gap(a: Surface, b: Surface, frame, lung_pts: np.ndarray) -> float:
    """Median distance (mm, across the surface) from ``a`` to ``b`` where ``a`` runs in the lung."""
    u, v, w = frame(lung_pts)
    t = _terms(u, v, 2)
    wa = t @ a.coef
    near = np.abs(w - wa) < SUPPORT_MM + 2.0
    if not near.any():
        return float("inf")
    return float(np.median(np.abs(wa - t @ b.coef)[near]))


def _agreed(surfaces: list[Surface | None], frame, lung_pts: np.ndarray) -> tuple[int | None, list[float]]:
    """The fit that most others agree with (within AGREE_MM), if at least AGREE_MIN do (itself
    included); and its gaps to the others."""
    best, best_n, best_gaps = None, 0, []
    for i, a in enumerate(surfaces):
        if a is None:
            continue
        gaps = [_surface_gap(a, b, frame, lung_pts) for j, b in enumerate(surfaces) if j != i and b is not None]
        n = 1 + sum(g <= AGREE_MM for g in gaps)
        if n > best_n or (n == best_n and best is not None and a.support > surfaces[best].support):  # type: ignore[union-attr]
            best, best_n, best_gaps = i, n, gaps
    return (best if best_n >= AGREE_MIN else None), best_gaps


def fit_lung_agreed(hu, lung, spacing, affine, axes_lps, side: str) -> LungFissures:
    """:func:`fit_lung` with AGREE_SEEDS random draws of the same candidates. A surface is kept
    only when at least AGREE_MIN of the fits put it within AGREE_MM of each other: a fit that
    another random draw moves elsewhere is fitted to noise, however large its support (on a
    noisy scan a wrong plane and a right one both reach a support near 0.3)."""
    cands = plate_candidates(hu, lung, spacing, axes_lps)
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
def _side_of(surface: Surface, frame, pts: np.ndarray) -> np.ndarray:
    u, v, w = frame(pts)
    return w > _terms(u, v, 2) @ surface.coef


def split_lung(lung: np.ndarray, affine: np.ndarray, fits: LungFissures) -> dict[str, np.ndarray] | None:
    """Lobe masks of one lung from its fits, or None when the fits do not give all its lobes."""
    if fits.oblique is None or (fits.side == "right" and fits.minor is None):
        return None
    idx = np.argwhere(lung)
    pts = _lps(idx, affine)
    upper = _side_of(fits.oblique, _oblique_uvw, pts)
    labels = np.where(upper, 1, 3).astype(np.uint8)
    if fits.side == "right":
        mid = upper & ~_side_of(fits.minor, _minor_uvw, pts)
        labels[mid] = 2
    lab = np.zeros(lung.shape, np.uint8)
    lab[tuple(idx.T)] = labels
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
