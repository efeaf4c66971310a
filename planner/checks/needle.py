"""Needles in a check scan: the metal lines, their axes and their tips.

Method
------
1. **Metal threshold.** Cortical bone reaches about 1,500-2,000 HU on thin slices; steel is far
   denser (about +34,000 HU before beam hardening) and saturates at the top of the stored
   range (+3,071 HU on the 12-bit scale). Voxels above :data:`METAL_HU` (2,000 HU) are metal
   where voxels are small in plane (at most :data:`FINE_PIXEL_MM2`). In coarse voxels (3 mm) a
   thin needle fills only a few per cent of a voxel and shows a few hundred HU above the tissue
   (partial volume), as much as bone does; there the threshold is :data:`COARSE_METAL_HU` and
   only the shape (a thin straight line) tells needle from bone. An image whose maximum stays
   below the threshold holds no metal.
2. **Objects.** Connected components (26-connected) of the thresholded voxels. Each is fitted
   with a line by principal component analysis of the HU-weighted voxel positions. It is a
   needle when it is at least ``min_length_mm`` long along the line and thin across it (RMS
   radius at most :data:`MAX_RMS_RADIUS_MM` or 0.6 voxel); otherwise it is listed among the
   other metal objects (:func:`survey_metal`) with the reason: compact (a marker, a clip, a
   calcification, a bead) or not line-like (bone, a prosthesis, dental metal).
3. **Axis.** Refitted (weighted PCA) on every voxel within a cylinder around the first line
   brighter than the local tissue, each weighted by its excess over the tissue's HU (the
   median of a shell 4-8 mm from the line): the partial-volume voxels at the edges pull the
   axis to the sub-voxel centre of the metal.
4. **Ends.** (Dips shorter than a voxel's extent along the axis, where a thin slanted needle
   passes between slice centres, are bridged.) The metal content per millimetre of needle, ``m(t)``, is the mean of (HU - tissue)
   over a disc across the axis (trilinear samples), at every 0.25 mm along the axis. Along the
   needle it holds a plateau; past an end it falls to zero. Partial volume and the in-plane
   blur spread the step symmetrically about the true end, so each end is where ``m`` falls to
   half its plateau (linear interpolation between samples) - not where the bloom or the
   streaks stop. Streaks are a few hundred HU at most and lie mostly across the disc's edge.
5. **Tip or hub end.** A needle goes in from the skin: its hub end is where the metal leaves
   the scan (an end within a voxel and a half of the grid's edge) or the body; the tip is the
   end deeper in the body (signed distance to the skin from
   :func:`planner.anatomy.autoseg.body_mask`, positive inside). Where both ends lie at the
   scan's edge the deeper one is still chosen and the finding's ``notes`` say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from planner.images import Image

#: Metal threshold (HU) where voxels are fine in plane.
METAL_HU = 2000.0
#: Metal threshold (HU) for coarse in-plane voxels (above :data:`FINE_PIXEL_MM2`): partial volume.
COARSE_METAL_HU = 1000.0
#: A needle lies in soft tissue, fat or lung: a line of dense voxels whose surroundings (4-8 mm
#: around) are denser than this (HU, median) is bone's edge, not a needle.
MAX_SURROUNDING_HU = 250.0
#: In-plane voxel area (mm2) up to which :data:`METAL_HU` applies.
FINE_PIXEL_MM2 = 2.5
#: A needle's RMS radius across its axis, bloom included, is at most this (mm).
MAX_RMS_RADIUS_MM = 1.6
#: Length over RMS radius of a needle: at least this.
MIN_ELONGATION = 6.0


@dataclass
class NeedleFinding:
    """One needle in the check scan (LPS mm)."""

    tip_lps: np.ndarray
    hub_end_lps: np.ndarray  # the other visible end of the metal
    direction_lps: np.ndarray  # unit, hub end -> tip
    length_mm: float  # visible metal length, end to end
    diameter_mm: float  # apparent diameter (blooming included: an upper estimate)
    peak_hu: float
    score: float  # confidence in [0, 1]
    notes: list[str] = field(default_factory=list)


@dataclass
class MetalObject:
    """Metal that is not a needle, with the reason."""

    centre_lps: np.ndarray
    size_mm: float  # largest extent
    peak_hu: float
    reason: str


@dataclass
class MetalSurvey:
    needles: list[NeedleFinding]
    others: list[MetalObject]
    threshold_hu: float


def find_needles(image: Image, *, min_length_mm: float = 8.0) -> list[NeedleFinding]:
    """The needles in ``image``, most confident first; empty when there is none."""
    return survey_metal(image, min_length_mm=min_length_mm).needles


def _pca(pts: np.ndarray, w: np.ndarray):
    c = np.average(pts, axis=0, weights=w)
    d = pts - c
    cov = (d * w[:, None]).T @ d / w.sum()
    evals, evecs = np.linalg.eigh(cov)
    return c, evecs[:, 2], np.maximum(evals[::-1], 0.0)


def survey_metal(image: Image, *, min_length_mm: float = 8.0) -> MetalSurvey:
    """Every metal object in ``image``: the needles and the rest (see the module's docstring)."""
    v = np.asarray(image.voxels, np.float32)
    sp = image.spacing
    thr = METAL_HU if sp[0] * sp[1] <= FINE_PIXEL_MM2 else COARSE_METAL_HU
    survey = MetalSurvey([], [], thr)
    if float(v.max()) < thr:
        return survey
    mask = v > thr
    lab, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return survey
    pieces = [np.argwhere(lab[sl] == idx) + np.array([s.start for s in sl])
              for idx, sl in enumerate(ndi.find_objects(lab), start=1)]
    pieces = _merge_collinear(image, v, pieces, thr)
    rough = []
    for kji in pieces:
        hu = v[kji[:, 0], kji[:, 1], kji[:, 2]]
        pts = image.ijk_to_lps(kji[:, ::-1].astype(float))
        peak = float(hu.max())
        if len(pts) < 2:
            survey.others.append(MetalObject(pts[0], float(sp.max()), peak, "compact: a single voxel (a marker, a "
                                             "clip, a calcification or noise)"))
            continue
        c, u, ev = _pca(pts, hu - thr * 0.5)
        t = (pts - c) @ u
        vox_along = float(np.abs(image.direction.T @ u) @ sp)  # a voxel's extent along u
        extent = float(t.max() - t.min()) + vox_along
        rms = float(np.sqrt(ev[1] + ev[2]))
        size = max(extent, 2 * float(np.sqrt(ev[1])) + float(sp.max()))
        if extent < min_length_mm:
            survey.others.append(MetalObject(c, size, peak, f"compact: {extent:.1f} mm long, shorter than "
                                             f"{min_length_mm:g} mm (a marker, a clip, a calcification, a bead)"))
            continue
        if rms > max(MAX_RMS_RADIUS_MM, 0.6 * float(sp.max())) or extent < MIN_ELONGATION * rms:
            survey.others.append(MetalObject(c, size, peak, f"not line-like: {extent:.1f} mm long but {rms:.1f} mm "
                                             "RMS across (bone, a prosthesis, dental or surgical metal)"))
            continue
        rough.append((c, u, float(t.min()), float(t.max()), peak, rms, extent))
    if not rough:
        return survey
    depth = _depth_field(image)
    for c, u, t0, t1, peak, rms, extent in rough:
        f = _refine(image, v, depth, c, u, t0, t1, peak, rms, extent, min_length_mm)
        if isinstance(f, NeedleFinding):
            survey.needles.append(f)
        else:
            survey.others.append(MetalObject(c, extent, peak, f))
    survey.needles.sort(key=lambda f: -f.score)
    return survey


def _merge_collinear(image: Image, v: np.ndarray, pieces: list[np.ndarray], thr: float) -> list[np.ndarray]:
    """Join pieces of one thin needle that the threshold broke apart (a thin needle crossing
    slices at a slant): pieces whose lines agree within 6 degrees (when both are longer than
    2 mm) and pass within 1.5 mm (or half a voxel) of each other's centre, with a gap of at
    most 15 mm between them."""
    fits = []
    for kji in pieces:
        pts = image.ijk_to_lps(kji[:, ::-1].astype(float))
        hu = v[kji[:, 0], kji[:, 1], kji[:, 2]]
        if len(kji) < 2:
            fits.append((pts[0], np.array([0.0, 0.0, 1.0]), 0.0, 0.0))
            continue
        c, u, _ = _pca(pts, hu - thr * 0.5)
        t = (pts - c) @ u
        fits.append((c, u, float(t.min()), float(t.max())))
    tol = max(1.5, 0.5 * float(image.spacing.max()))
    parent = list(range(len(pieces)))

    def root(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    order = sorted(range(len(pieces)), key=lambda a: -(fits[a][3] - fits[a][2]))
    for x, a in enumerate(order):
        ca, ua, a0, a1 = fits[a]
        if a1 - a0 < 2.0:
            continue
        for b in order[x + 1:]:
            cb, ub, b0, b1 = fits[b]
            if b1 - b0 > 2.0 and abs(float(ua @ ub)) < np.cos(np.radians(6)):
                continue
            d = cb - ca
            tt = float(d @ ua)
            if np.linalg.norm(d - tt * ua) > tol:
                continue
            half_o = 0.5 * (b1 - b0)
            if max(a0 - (tt + half_o), (tt - half_o) - a1, 0.0) <= 15.0:
                parent[root(b)] = root(a)
    groups: dict[int, list[np.ndarray]] = {}
    for a, kji in enumerate(pieces):
        groups.setdefault(root(a), []).append(kji)
    return [np.concatenate(g) for g in groups.values()]


def _depth_field(image: Image):
    """Signed distance (mm) to the skin, positive inside the body; None when no body is found."""
    from planner.anatomy.autoseg import body_mask

    try:
        body = body_mask(image)
    except Exception:  # noqa: BLE001 - a slab the segmenter cannot read: fall back to the scan's edges
        return None
    if not body.any():
        return None
    sp = image.spacing[::-1]
    inside = ndi.distance_transform_edt(body, sampling=sp)
    outside = ndi.distance_transform_edt(~body, sampling=sp)
    return (inside - outside).astype(np.float32)


def _sample(v: np.ndarray, image: Image, pts: np.ndarray) -> np.ndarray:
    ijk = image.lps_to_ijk(pts.reshape(-1, 3))
    out = ndi.map_coordinates(v, ijk[:, ::-1].T, order=1, mode="constant", cval=np.nan)
    return out.reshape(pts.shape[:-1])


def _refine(image, v, depth, c, u, t0, t1, peak, rms, extent, min_length_mm) -> NeedleFinding | str:
    """The needle on the rough line ``c + t u``, or why it is not one."""
    sp = image.spacing
    notes: list[str] = []
    # tissue level: a shell 4-8 mm around the line
    e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    ts = np.linspace(t0, t1, max(3, int((t1 - t0) / 2) + 1))
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = np.concatenate([rr * (np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2) for rr in (4.0, 6.0, 8.0)])
    shell = _sample(v, image, c + ts[:, None, None] * u + ring[None, :, :])
    shell = shell[np.isfinite(shell)]
    bg = float(np.median(shell)) if shell.size else 0.0
    if bg > MAX_SURROUNDING_HU:
        return f"line-like but surrounded by {bg:.0f} HU (median 4-8 mm around): the edge of a bone"
    # refit the axis on the voxels within a cylinder, weighted by their excess over the tissue
    rad = max(2.5, 1.2 * float(sp[:2].max()))
    nk, nj, ni = v.shape
    ends = image.lps_to_ijk(np.array([c + (t0 - 3) * u, c + (t1 + 3) * u]))
    pad = rad / sp + 1
    lo = np.maximum(np.floor(ends.min(0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(ends.max(0) + pad) + 1, [ni, nj, nk]).astype(int)
    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo[::-1], hi[::-1])), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1)
    pts = image.ijk_to_lps(ijk.astype(float))
    t = (pts - c) @ u
    r = np.linalg.norm(pts - c - t[:, None] * u, axis=1)
    hu = v[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    thr_w = bg + 0.25 * (min(peak, 3000.0) - bg)
    sel = (r <= rad) & (t >= t0 - 3) & (t <= t1 + 3) & (hu > thr_w)
    if sel.sum() >= 3:
        c2, u2, _ = _pca(pts[sel], hu[sel] - bg)
        if u2 @ u < 0:
            u2 = -u2
        t0 += float((c - c2) @ u2)
        t1 += float((c - c2) @ u2)
        c, u = c2, u2
        e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
    ring = np.concatenate([rr * (np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2) for rr in (4.0, 6.0)])
    # metal content per mm along the axis: mean excess over a disc across it
    step = 0.25
    tt = np.arange(t0 - 6.0, t1 + 6.0 + step, step)
    ds = 0.4 * float(sp[:2].min())
    g = np.arange(-rad, rad + 1e-6, ds)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    keep = gx ** 2 + gy ** 2 <= rad * rad
    disc = gx[keep][:, None] * e1 + gy[keep][:, None] * e2
    prof_pts = c + tt[:, None, None] * u + disc[None, :, :]
    samp = _sample(v, image, prof_pts)
    outside = np.isnan(samp).mean(1) > 0.5
    # the tissue around changes along the needle (chest wall, lung): a local level per position
    ring_s = _sample(v, image, c + tt[:, None, None] * u + ring[None, :, :])
    local = np.nanmedian(np.where(np.isnan(ring_s), bg, ring_s), axis=1)
    local = ndi.median_filter(local, size=int(round(4.0 / step)) | 1, mode="nearest")
    m = np.nanmean(np.where(np.isnan(samp), local[:, None], samp) - local[:, None], axis=1)
    core = (tt >= t0 + 0.25 * (t1 - t0)) & (tt <= t1 - 0.25 * (t1 - t0))
    if core.sum() < 2:
        core = (tt >= t0) & (tt <= t1)
    plateau = float(np.median(m[core]))
    if plateau <= 0:
        return "no metal above the surrounding tissue along its line"
    half = 0.5 * plateau
    mid = int(np.argmin(np.abs(tt - 0.5 * (t0 + t1))))

    # a thin needle crossing slices at a slant dips between slices: a dip shorter than a voxel's
    # extent along the axis (and 3 mm) is bridged, so the walk stops only at the real end
    gap = int(np.ceil(max(3.0, 1.5 * float(np.abs(image.direction.T @ u) @ sp)) / step))

    def end(direction: int) -> tuple[float, bool]:
        i = mid
        while True:
            nxt = None
            for d in range(1, gap + 1):
                j = i + direction * d
                if not (0 <= j < len(tt)) or outside[j]:
                    break
                if m[j] >= half:
                    nxt = j
                    break
            if nxt is None:
                break
            i = nxt
        j = i + direction
        if not (0 <= j < len(tt)) or outside[j]:
            return float(tt[i]), True
        a, b = m[i], m[j]
        frac = (a - half) / (a - b) if a != b else 0.5
        return float(tt[i] + direction * step * frac), False

    ta, a_edge = end(-1)
    tb, b_edge = end(+1)
    pa, pb = c + ta * u, c + tb * u
    size = np.array(image.size_ijk)
    for p, flag in ((pa, "a"), (pb, "b")):
        q = image.lps_to_ijk(p)
        at_edge = bool(np.any(q < 1.0) or np.any(q > size - 2.0))
        if flag == "a":
            a_edge = a_edge or at_edge
        else:
            b_edge = b_edge or at_edge
    length = float(tb - ta)
    if length < min_length_mm:
        return f"compact: {length:.1f} mm long end to end, shorter than {min_length_mm:g} mm"

    def dep(p: np.ndarray, at_edge: bool) -> float:
        if at_edge:
            return -np.inf
        if depth is None:
            return 0.0
        q = np.clip(np.rint(image.lps_to_ijk(p)).astype(int), 0, size - 1)
        return float(depth[q[2], q[1], q[0]])

    da, db = dep(pa, a_edge), dep(pb, b_edge)
    if a_edge and b_edge:
        notes.append("the metal runs out of the scan at both ends: the tip is not in the scan")
        da = db = 0.0
        if depth is not None:
            qa = np.clip(np.rint(image.lps_to_ijk(pa)).astype(int), 0, size - 1)
            qb = np.clip(np.rint(image.lps_to_ijk(pb)).astype(int), 0, size - 1)
            da, db = float(depth[qa[2], qa[1], qa[0]]), float(depth[qb[2], qb[1], qb[0]])
    elif da == db:
        notes.append("neither end leaves the body or the scan: tip and hub end told apart by depth alone")
    if da > db:
        tip, hub, direction = pa, pb, -u
    else:
        tip, hub, direction = pb, pa, u
    # apparent diameter: the disc area above half the metal level, over the plateau
    lvl = bg + 0.5 * (np.nanmax(samp[core]) - bg) if core.any() else bg
    area = float(np.mean(np.sum(samp[core] > lvl, axis=1))) * ds * ds if core.any() else 0.0
    diameter = 2.0 * float(np.sqrt(area / np.pi))
    elong = min(1.0, length / 30.0)
    thin = float(np.clip(1.0 - rms / max(MAX_RMS_RADIUS_MM, 0.6 * float(sp.max())), 0.0, 1.0))
    contrast = float(np.clip((peak - bg) / 2000.0, 0.0, 1.0))
    score = round(float(0.4 * elong + 0.3 * thin + 0.3 * contrast), 3)
    return NeedleFinding(np.asarray(tip, float), np.asarray(hub, float), np.asarray(direction, float), length,
                         diameter, peak, score, notes)
