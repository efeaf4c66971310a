"""Needles in a check scan: the metal lines, their axes and their tips.

Method
------
1. **Seeds.** Stainless steel is about +34,000 HU before beam hardening (NIST XCOM: iron 1.2
   cm2/g at 60 keV, density 8.0 g/cm3) and +12,000 to +25,000 HU after it (Boas & Fleischmann
   2012, "CT artifacts: causes and reduction techniques"); it saturates at the top of the stored
   range (+3,071 HU on the 12-bit scale), where cortical bone stays at 1,500-2,000 HU on thin
   slices. Where voxels are fine in plane (at most :data:`FINE_PIXEL_MM2`), voxels above
   :data:`METAL_HU` are metal. A thin needle in thick slices does not always get there: a 22 G
   needle (0.72 mm, ISO 9626) lying in a 2 mm slice fills a fifth of a voxel's cross-section;
   straddling two slices in lung at the lowest steel excess it shows a few hundred HU in each.
   So voxels above :data:`WEAK_MIN_HU` that stand :data:`WEAK_EXCESS_HU` above the in-plane grey
   opening over :data:`OPENING_MM` (the tissue around with anything narrower, a needle included,
   taken away) seed too when they lie on a bright line. In coarse voxels (3 mm) a thin needle
   fills a few per cent of a voxel and shows 100-600 HU above the tissue, no more than bone, a
   contrast-filled vessel or a bowel wall against gas; there every voxel :data:`COARSE_EXCESS_HU`
   above the opening is a candidate, and it seeds when it lies on a bright line. A bright line
   is where the Hessian of the image smoothed at :data:`LINE_SIGMA_VOX` in-plane voxels has its
   two eigenvalues across the line both strongly negative (the middle one at least
   :data:`MIN_TUBULARITY` of the most negative: a needle's blurred cross-section is round, a
   plate, a cortex, a lamina or an edge has one only), the middle one beyond
   :data:`LINE_SEED_FRACTION` of what the thinnest needle (:data:`NEEDLE_AREA_MIN_MM2`) at the
   lowest steel excess (:data:`STEEL_EXCESS_MIN_HU`) gives, ``A / (2 pi s^4)`` with ``s^2`` the
   smoothing plus the voxel's box.
2. **Candidates.** Connected components (26-connected) of the seeds, each fitted with a line
   (principal component analysis of the positions weighted by their excess over the piece's
   median); pieces of one thin needle that the seeding broke apart (a thin needle crossing
   slices at a slant dips between slice centres) are joined when their lines agree. A piece
   :data:`MIN_SEED_EXTENT_MM` or more long and thin across (RMS radius at most
   :data:`MAX_RMS_RADIUS_MM` or 0.6 voxel, 0.9 where voxels are coarse; :data:`MIN_ELONGATION`
   times as long as wide) is a candidate line; in a piece that is not (a needle touching bone,
   bowel content or another needle) the straight lines inside are found by sequential RANSAC.
   Metal (above the metal threshold) that turns out not to be a needle is listed with the reason
   (:func:`survey_metal`): compact (a marker, a clip, a calcification, a bead), not line-like
   (bone, a prosthesis, dental metal) or why its line is not a needle.
3. **Model fit.** Around each candidate line every voxel within a few millimetres is compared
   with the scanner's picture of a needle: a straight steel cylinder of content ``A`` (HU x mm2:
   its cross-section times its excess over the tissue) and radius ``r``, blurred in its
   cross-section and at both ends ``t0``, ``t1`` by the reconstruction kernel, a Gaussian of
   ``s`` (the blurred disc taken radially as a blurred interval, with its exact area), averaged
   over each voxel's full extent, the slice thickness included (partial volume; sub-points
   :data:`SUBPOINT_MM` apart), added to the tissue under the voxel plus one offset and
   clipped softly at the top of the stored range (the image's maximum where several voxels hold
   it). The tissue under a voxel is that of its nearest neighbours holding no metal
   (:data:`TISSUE_NEIGHBOURS`, in the axial plane, and in the slices either side where voxels are
   coarse): their median where voxels are fine; where they are coarse a voxel often mixes
   tissues (gas and a bowel wall, fat and bone), and its own tissue is only known to lie between
   the lowest and the highest of them: the residual is then about zero within that range and
   grows beyond it. The axis (4 parameters), both ends, ``A``, ``r``, ``s`` (fixed at
   :data:`BLUR_MM` where voxels are coarse: far below a voxel, it cannot be told there) and the
   offset are fitted by robust least squares (:func:`scipy.optimize.least_squares`, soft-L1 loss
   at three noise standard deviations; the noise is the robust spread of neighbouring
   soft-tissue voxels). Saturated voxels and the partial-volume voxels around them both count, so
   the axis and the ends come out to a fraction of a voxel on thick slices too. The fitted region
   follows the line and grows where an end reaches its border. Then each end inside the scan is
   searched along the line, from a few voxels short of it to :data:`END_SEARCH_MM` beyond, for
   the lowest cost (a local minimum can hold the fit a voxel short of the tip where the tissue
   around it is uneven, or short of a stretch of bowel gas that tells little of the metal), and
   the fit is repeated from there.
4. **Needle or not.** A needle holds at least :data:`A_MIN_FRACTION` of the thinnest needle's
   content at the lowest steel excess. Where voxels are fine its width (``sqrt(r^2 / 4 + s^2)``)
   is at most :data:`MAX_SIGMA_MM` and its core, the blurred metal's density at the axis, is
   above :data:`MIN_PEAK_HU`, more than any bone shows: that tells steel from bone and vessels.
   Where voxels are coarse its width is at most :data:`MAX_COARSE_SIGMA_MM`. A line along the
   edge of something as dense as metal all along it (a sector of the ring 4-8 mm around the axis
   at :data:`METAL_HU` or more) is the edge of a larger metal object (a prosthesis). Unless the
   line is denser than bone (its voxels reach :data:`METAL_HU` along most of it), it is a bone's
   edge where the tissue 4-8 mm around it is bone (median above :data:`MAX_SURROUNDING_HU`), and,
   where voxels are coarse, where one side is (a sector above :data:`MAX_SECTOR_HU` and
   :data:`BONE_SIDE_HU` above the rest: the edge of a lamina, a crest or a cortex); and where
   voxels are coarse a needle's content is the same all along it (a uniform cylinder; stretch by
   stretch within :data:`MAX_UNEVEN`), along most of it (:data:`MIN_SURE`) some voxel on it is
   denser than the densest tissue around it can be (metal beyond doubt), and it comes in through
   the skin: one end leaves the scan, or lies outside the body or at most
   :data:`MAX_HUB_DEPTH_MM` inside it. A needle in the patient reaches :data:`MIN_TIP_DEPTH_MM`
   into the body. It is at least ``min_length_mm`` long, or, where it runs out of the scan (a
   steep needle in a thin slab), at least :data:`MIN_EDGE_LENGTH_MM` and :data:`MIN_EDGE_VOXELS`
   voxels' extents along it.
5. **Tip or hub end.** A needle goes in from the skin: the end where the metal leaves the scan
   (within half a voxel of the grid's edge) is not an end of the metal, and the metal ends
   outside the body at the hub; the tip is the end inside the body (signed distance to the skin
   from :func:`planner.anatomy.autoseg.body_mask`, positive inside), the deeper one when both
   are. Where the only end inside the scan lies outside the body, or where the metal leaves the
   scan at both ends, the tip is beyond the scan: the deepest visible metal is given as the tip
   and the finding's ``notes`` say so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import least_squares
from scipy.special import ndtr

from planner.images import Image

try:  # numba makes the model fit fast; the same code runs (slowly) without it
    from numba import njit
except ImportError:  # pragma: no cover
    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f
        return wrap

#: Metal threshold (HU) where voxels are fine in plane: above cortical bone on thin slices.
METAL_HU = 2000.0
#: Metal threshold (HU) for coarse in-plane voxels (above :data:`FINE_PIXEL_MM2`): partial volume
#: brings a needle down to bone's level there; only what is above it is listed as other metal.
COARSE_METAL_HU = 1000.0
#: In-plane voxel area (mm2) up to which voxels are "fine".
FINE_PIXEL_MM2 = 2.5
#: Fine voxels: a weak seed stands this much (HU) above the in-plane grey opening. A 22 G needle
#: at the lowest steel excess straddling two 2 mm slices in lung stands about 1,000 HU above it.
WEAK_EXCESS_HU = 800.0
#: Fine voxels: and is above this (HU): lung vessels without contrast stand 900 HU above the lung
#: but stay below it.
WEAK_MIN_HU = 150.0
#: Width (mm) of the in-plane grey opening: wider than any needle with its blur (14 G: 2.1 mm).
OPENING_MM = 5.0
#: Coarse voxels: a candidate voxel stands this much (HU) above the in-plane grey opening: a 22 G
#: needle at the lowest steel excess straddling four 3 mm voxels still shows about 100 HU in each.
COARSE_EXCESS_HU = 60.0
#: The line filter's scale, in in-plane voxels (at least 0.6 slice).
LINE_SIGMA_VOX = 1.0
#: Weak seeds where the line filter exceeds this fraction of the thinnest needle's response.
LINE_SEED_FRACTION = 0.5
#: And where the middle eigenvalue is at least this fraction of the most negative one.
MIN_TUBULARITY = 0.4
#: Cross-section (mm2) of the thinnest needle looked for: 22 G, 0.718 mm (ISO 9626:2016).
NEEDLE_AREA_MIN_MM2 = math.pi * 0.359 ** 2
#: Lowest excess of steel over tissue (HU) after beam hardening: 12,000 HU and more reconstructed
#: (Boas & Fleischmann 2012; Barrett & Keat 2004), taken lower for margin.
STEEL_EXCESS_MIN_HU = 10000.0
#: A needle's content ``A`` (HU x mm2) is at least this fraction of the thinnest needle's at the
#: lowest steel excess (4,050 HU mm2): 3,645; 22 G needles fit to 6,000 or more.
A_MIN_FRACTION = 0.9
#: Coarse voxels: a needle is a uniform cylinder; its content, stretch by stretch along it (a
#: voxel's extent, 4 mm at least), varies by at most this fraction (robust spread) of the fitted
#: one (needles: under 0.1; a wall or a vessel followed along a bone: 0.5).
MAX_UNEVEN = 0.3
#: Coarse voxels: metal is denser than any tissue: along at least this fraction of a needle (in
#: stretches as for :data:`MAX_UNEVEN`) a voxel on it stands above the densest its tissue can be
#: by a fifth of what the needle's whole cross-section adds to a voxel (and five noise deviations).
#: (Needles: 0.86 and more; walls against gas, vessels and bones' edges: mostly under 0.6.)
MIN_SURE = 0.7
#: Fine voxels: a needle's width (``sqrt(r^2 / 4 + s^2)``, mm) is at most this: a 14 G needle
#: (radius 1.05 mm) blurred by a soft kernel (0.8 mm) gives 0.95; a vessel or a cortex as
#: bright is wider.
MAX_SIGMA_MM = 1.2
#: Fine voxels: a needle's core (the blurred metal's density at its axis, HU) is above this:
#: above cortical bone (2,000 HU at most), below the thinnest needle at the lowest steel excess
#: blurred by a body kernel (22 G, 0.4 mm: 3,400 HU; fitted needles show 4,000 and more).
MIN_PEAK_HU = 2500.0
#: Coarse voxels: a needle's width is at most this (mm). It is not measured there below a voxel
#: (needles fit to 0.4-0.6), but a vessel or a wall holding a needle's content is wider.
MAX_COARSE_SIGMA_MM = 0.8
#: Coarse voxels: a needle's outer end lies at the scan's edge, outside the body or at most this
#: deep (mm: a hub pressed on the skin, and the body's outline drawn on coarse voxels).
MAX_HUB_DEPTH_MM = 10.0
#: A needle in the patient reaches this deep into the body at one of its ends at least (mm).
MIN_TIP_DEPTH_MM = 3.0
#: A needle lies in soft tissue, fat or lung: a line whose surroundings (4-8 mm around) are denser
#: than this (HU, median) is a bone's edge, not a needle, unless it is denser than bone itself.
MAX_SURROUNDING_HU = 250.0
#: Coarse voxels: no sector (an eighth of the ring 4-8 mm around) is denser than this (HU, median
#: along the line) and stands more than :data:`BONE_SIDE_HU` above the median all around: bone on
#: one side of the line all along it is a bone's edge. (Needles in soft tissue: sectors under
#: 170 HU; in an organ enhanced by contrast the whole ring is dense, up to 250 HU, and the densest
#: sector stands 40-70 HU above the rest; bones' edges: 200-300 HU, 100-200 above.)
MAX_SECTOR_HU = 200.0
BONE_SIDE_HU = 80.0
#: A needle's seeds' RMS radius across their line, bloom included, is at most this (mm).
MAX_RMS_RADIUS_MM = 1.6
#: Length over RMS radius of a needle's seeds: at least this.
MIN_ELONGATION = 6.0
#: A candidate piece is at least this long (mm).
MIN_SEED_EXTENT_MM = 3.0
#: A needle that runs out of the scan is at least this long inside it (mm), and at least this
#: many voxels (their extent along it): a steep needle in a thin slab shows only a few slices.
MIN_EDGE_LENGTH_MM = 4.0
MIN_EDGE_VOXELS = 2.5
#: Each end inside the scan is searched this far beyond the fitted one along the needle's line
#: (mm; a needle crossing bowel gas leaves little trace of its metal there on coarse voxels).
END_SEARCH_MM = 60.0
#: The reconstruction kernel's blur (mm, Gaussian sigma; a standard body kernel: FWHM 0.94 mm).
#: Fitted where voxels are fine, fixed where they are coarse.
BLUR_MM = 0.4
#: Softness (HU) of the model's clipping at the top of the stored range.
CLIP_SOFTNESS_HU = 10.0
#: The tissue under a voxel comes from this many of its nearest neighbours holding no metal.
TISSUE_NEIGHBOURS = 8
#: Spacing (mm) of the sub-points a voxel is averaged over in the model (at most the blur's 1.25).
SUBPOINT_MM = 0.5
#: At most this many candidate lines are fitted (the strongest first).
MAX_CANDIDATES = 40


@dataclass
class NeedleFinding:
    """One needle in the check scan (LPS mm)."""

    tip_lps: np.ndarray
    hub_end_lps: np.ndarray  # the other visible end of the metal
    direction_lps: np.ndarray  # unit, hub end -> tip
    length_mm: float  # visible metal length, end to end
    diameter_mm: float  # apparent diameter (an upper estimate)
    peak_hu: float
    score: float  # confidence in [0, 1]
    notes: list[str] = field(default_factory=list)
    tip_in_scan: bool = True  # False: the metal runs out of the scan on the tip's side; tip_lps is a lower bound


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


def _frame(u: np.ndarray):
    u = np.asarray(u, float) / np.linalg.norm(u)
    e1 = np.cross(u, [1.0, 0, 0] if abs(u[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    return u, e1, np.cross(u, e1)


def _noise_hu(v: np.ndarray) -> float:
    """Standard deviation of the image noise (HU): the robust spread of differences between
    neighbouring voxels along i where both are soft tissue (-100..150 HU), over sqrt(2)."""
    a, b = v[:, :, :-1], v[:, :, 1:]
    ok = (a > -100) & (a < 150) & (b > -100) & (b < 150)
    d = (a - b)[ok]
    if d.size < 100:
        return 10.0
    if d.size > 1_000_000:
        d = d[:: d.size // 1_000_000 + 1]
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(1.0, 1.4826 * mad / math.sqrt(2.0))


def _clip_level(v: np.ndarray) -> float:
    """The top of the stored range where the image reaches it (several voxels at the maximum:
    saturated metal), else no clipping."""
    top = float(v.max())
    return top if int(np.count_nonzero(v >= top)) >= 3 else np.inf


def _gauss_kernels(sig: float):
    """Sampled 1-D Gaussian of ``sig`` voxels and its first and second derivatives, normalised so
    that they act on constants, ramps and parabolas exactly."""
    r = max(1, math.ceil(3.0 * sig))
    x = np.arange(-r, r + 1, dtype=float)
    g = np.exp(-0.5 * x * x / (sig * sig))
    g /= g.sum()
    g1 = -x * g
    g1 /= float(np.sum(x * g1))  # sum x g1 = 1
    g2 = (x * x - float(np.sum(x * x * g))) * g
    g2 /= float(np.sum(0.5 * x * x * g2))  # sum g2 = 0, sum x^2 / 2 g2 = 1
    return x.astype(int), (g, -g1, g2)


def _line_strength(image: Image, v: np.ndarray, kji: np.ndarray) -> tuple[np.ndarray, float]:
    """At the voxels ``kji``: ``-lambda2`` (HU/mm2) of the Hessian of the image smoothed at
    :data:`LINE_SIGMA_VOX` in-plane voxels (at least 0.6 slice), zero where not negative; and
    what the thinnest needle at the lowest steel excess gives. On a bright line the two
    eigenvalues across it are both strongly negative; on a plate, a cortex or an edge the middle
    one is near zero."""
    sp = image.spacing  # (i, j, k)
    s_mm = max(LINE_SIGMA_VOX * float(sp[:2].max()), 0.6 * float(sp[2]))
    spk = np.array([sp[2], sp[1], sp[0]])
    offs, ker = [], []
    for a in range(3):
        x, (g0, g1, g2) = _gauss_kernels(s_mm / spk[a])
        offs.append(x)
        ker.append((g0, g1 / spk[a], g2 / spk[a] ** 2))
    grid = np.stack(np.meshgrid(*offs, indexing="ij"), -1).reshape(-1, 3)
    kernels = []
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    for a, b in pairs:
        order = [0, 0, 0]
        order[a] += 1
        order[b] += 1
        k3 = np.einsum("i,j,k->ijk", ker[0][order[0]], ker[1][order[1]], ker[2][order[2]])
        kernels.append(k3.reshape(-1))
    kmat = np.stack(kernels, 1).astype(np.float32)  # (n_off, 6)
    shape = np.array(v.shape)
    out = np.zeros(len(kji), np.float32)
    for s0 in range(0, len(kji), 20000):
        idx = kji[s0:s0 + 20000, None, :] + grid[None]
        idx = np.clip(idx, 0, shape - 1)
        vals = v[idx[..., 0], idx[..., 1], idx[..., 2]]
        h6 = vals @ kmat
        m = np.empty((len(h6), 3, 3), np.float32)
        for n, (a, b) in enumerate(pairs):
            m[:, a, b] = h6[:, n]
            m[:, b, a] = h6[:, n]
        lam = np.linalg.eigvalsh(m)  # ascending: the most negative first
        tubular = lam[:, 1] <= MIN_TUBULARITY * lam[:, 0]  # both eigenvalues across the line negative
        out[s0:s0 + 20000] = np.where(tubular, np.clip(-lam[:, 1], 0.0, None), 0.0)
    # the thinnest needle's response: A / (2 pi s_t^4), s_t^2 = smoothing + the voxel's box across
    st2 = s_mm ** 2 + float(sp.max()) ** 2 / 12.0
    expected = NEEDLE_AREA_MIN_MM2 * STEEL_EXCESS_MIN_HU / (2 * math.pi * st2 ** 2)
    return out, expected


def _seeds(image: Image, v: np.ndarray, coarse: bool) -> np.ndarray:
    """Metal voxels, and voxels above the tissue around them in plane that lie on a bright line."""
    sp = image.spacing
    n = max(3, math.ceil(OPENING_MM / float(sp[:2].min())) | 1)
    excess = v - ndi.grey_opening(v, size=(1, n, n))
    if coarse:
        weak = excess > COARSE_EXCESS_HU
        strong = np.zeros_like(weak)
    else:
        strong = v > METAL_HU
        weak = (v > WEAK_MIN_HU) & (excess > WEAK_EXCESS_HU) & ~strong
    kji = np.argwhere(weak)
    if len(kji):
        line, expected = _line_strength(image, v, kji)
        ok = line > LINE_SEED_FRACTION * expected
        weak[:] = False
        weak[tuple(kji[ok].T)] = True
    return strong | weak


def survey_metal(image: Image, *, min_length_mm: float = 8.0) -> MetalSurvey:
    """Every metal object in ``image``: the needles and the rest (see the module's docstring)."""
    v = np.asarray(image.voxels, np.float32)
    sp = image.spacing
    coarse = float(sp[0] * sp[1]) > FINE_PIXEL_MM2
    thr = COARSE_METAL_HU if coarse else METAL_HU
    survey = MetalSurvey([], [], thr)
    if v.size == 0:
        return survey
    seeds = _seeds(image, v, coarse)
    lab, n = ndi.label(seeds, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return survey
    pieces = [np.argwhere(lab[sl] == idx) + np.array([s.start for s in sl])
              for idx, sl in enumerate(ndi.find_objects(lab), start=1)]
    pieces = _merge_collinear(image, v, pieces)
    candidates = []
    metal_pieces: list[MetalObject] = []  # metal: listed among the others unless a needle is found along it
    line_rms = max(MAX_RMS_RADIUS_MM, (0.9 if coarse else 0.6) * float(sp.max()))
    for kji in pieces:
        hu = v[kji[:, 0], kji[:, 1], kji[:, 2]]
        pts = image.ijk_to_lps(kji[:, ::-1].astype(float))
        peak = float(hu.max())
        metal = peak > thr
        if len(pts) < 2:
            if metal:
                survey.others.append(MetalObject(pts[0], float(sp.max()), peak, "compact: a single voxel (a marker, "
                                                 "a clip, a calcification or noise)"))
            continue
        # weights: the excess over the piece's median (the seeds' halo around a dense line is tissue)
        w = np.maximum(hu - float(np.median(hu)), 0.0) + 1.0
        line = _line_of(image, pts, w)
        c, u, t0, t1, extent, rms, size = line
        lines = [line]
        if extent < max(MIN_SEED_EXTENT_MM, 1.5 * _extent_along(image, u)):
            lines = []
        elif rms > line_rms or extent < MIN_ELONGATION * rms:
            # a needle may touch bone, bowel content or another needle: the straight lines inside
            lines = _lines_within(image, pts, w, line_rms)
        if metal:
            if extent < min_length_mm:
                why = (f"compact: {extent:.1f} mm long, shorter than {min_length_mm:g} mm (a marker, a clip, a "
                       "calcification, a bead)")
            elif rms > line_rms or extent < MIN_ELONGATION * rms:
                why = (f"not line-like: {extent:.1f} mm long but {rms:.1f} mm RMS across (bone, a prosthesis, dental "
                       "or surgical metal)")
            else:
                why = ""
            metal_pieces.append(MetalObject(c, size, peak, why))
        for c, u, t0, t1, extent, rms, size in lines:
            tt = (pts - c) @ u
            near = (np.linalg.norm(pts - c - tt[:, None] * u, axis=1) <= 2.0 * line_rms) & (tt >= t0) & (tt <= t1)
            strength = float(np.sum(np.minimum(hu[near], 3000.0) - min(float(hu.min()), 0.0))) * float(np.prod(sp))
            candidates.append((strength, c, u, t0, t1, float(hu[near].max()) if near.any() else peak, size,
                               len(metal_pieces) - 1 if metal else -1))
    rejected: dict[int, str] = {}
    if candidates:
        candidates.sort(key=lambda x: -x[0])
        ctx = _Context(image, v, coarse)
        for strength, c, u, t0, t1, peak, size, piece in candidates[:MAX_CANDIDATES]:
            if any(_on_needle(f, c, u, t0, t1) for f in survey.needles):
                continue  # a piece of a needle already found
            f = _measure(ctx, c, u, t0, t1, peak, min_length_mm)
            if isinstance(f, NeedleFinding):
                if not any(_same_needle(g, f) and g.length_mm >= f.length_mm for g in survey.needles):
                    survey.needles = [g for g in survey.needles if not _same_needle(g, f)] + [f]
            elif piece >= 0:
                rejected.setdefault(piece, f)
    for n, obj in enumerate(metal_pieces):
        if any(_on_needle(f, obj.centre_lps, np.array([0.0, 0.0, 1.0]), 0.0, 0.0) for f in survey.needles):
            continue
        obj.reason = obj.reason or rejected.get(n, "not a needle")
        survey.others.append(obj)
    survey.needles.sort(key=lambda f: -f.score)
    return survey


def _on_needle(f: NeedleFinding, c, u, t0, t1, tol_mm: float = 2.0) -> bool:
    """Whether the rough line ``c + t u`` (t0..t1) lies along the found needle ``f``."""
    a, b = f.hub_end_lps, f.tip_lps
    d = b - a
    L = float(np.linalg.norm(d))
    for p in (c + t0 * u, c + t1 * u):
        s = float(np.clip((p - a) @ d / (L * L), 0.0, 1.0))
        if np.linalg.norm(p - a - s * d) > tol_mm:
            return False
    return True


def _same_needle(f: NeedleFinding, g: NeedleFinding) -> bool:
    if abs(float(f.direction_lps @ g.direction_lps)) < math.cos(math.radians(5.0)):
        return False
    return _on_needle(f, g.hub_end_lps, g.direction_lps, 0.0, 0.0) or \
        _on_needle(g, f.hub_end_lps, f.direction_lps, 0.0, 0.0) or \
        _on_needle(f, g.tip_lps, g.direction_lps, 0.0, 0.0) or _on_needle(g, f.tip_lps, f.direction_lps, 0.0, 0.0)


def _extent_along(image: Image, u: np.ndarray) -> float:
    """A voxel's extent (mm) along the unit vector ``u``."""
    return float(np.abs(image.direction.T @ u) @ image.spacing)


def _line_of(image: Image, pts: np.ndarray, w: np.ndarray):
    """The weighted principal line of ``pts``: centre, direction, t range, extent (a voxel
    included), RMS radius across and size."""
    c, u, ev = _pca(pts, w)
    t = (pts - c) @ u
    extent = float(t.max() - t.min()) + _extent_along(image, u)
    rms = float(np.sqrt(ev[1] + ev[2]))
    size = max(extent, 2 * float(np.sqrt(ev[1])) + float(image.spacing.max()))
    return c, u, float(t.min()), float(t.max()), extent, rms, size


def _lines_within(image: Image, pts: np.ndarray, w: np.ndarray, max_rms: float, n_lines: int = 4,
                  n_tries: int = 300) -> list:
    """Straight lines of seeds inside a piece that is not one (a needle touching bone, bowel
    content or another needle): sequential RANSAC, a random pair of the heavier seeds at a time
    (seeded, so the result is repeatable), scored by the weight of the seeds within a voxel of the
    line; the best line's seeds, refitted and cut at gaps over 15 mm, make a candidate, and are
    taken away for the next one."""
    sp = image.spacing
    tol = max(1.0, 0.75 * float(sp[:2].max()))
    rng = np.random.default_rng(0)
    left = np.ones(len(pts), bool)
    out = []
    for _ in range(n_lines):
        idx = np.flatnonzero(left)
        if len(idx) < 4:
            break
        p, ww = pts[idx], w[idx]
        heavy = idx[ww >= np.median(ww)]
        a = rng.choice(heavy, n_tries)
        b = rng.choice(heavy, n_tries)
        d = pts[b] - pts[a]
        ln = np.linalg.norm(d, axis=1)
        ok = ln >= 2.0 * float(sp.max())
        if not ok.any():
            break
        a, d = a[ok], d[ok] / ln[ok, None]
        rel = p[None, :, :] - pts[a][:, None, :]  # (hyp, n, 3)
        along = np.einsum("hnk,hk->hn", rel, d)
        dist2 = np.einsum("hnk,hnk->hn", rel, rel) - along ** 2
        score = ((dist2 <= tol * tol) * ww[None, :]).sum(1)
        best = int(np.argmax(score))
        inl = idx[dist2[best] <= tol * tol]
        if len(inl) < 3:
            break
        c, u, _, _, _, _, _ = _line_of(image, pts[inl], w[inl])
        rel = pts[idx] - c
        t = rel @ u
        r = np.linalg.norm(rel - t[:, None] * u, axis=1)
        inl = idx[r <= tol]
        t = (pts[inl] - c) @ u
        order = np.argsort(t)
        cuts = np.flatnonzero(np.diff(t[order]) > 15.0)
        runs = np.split(order, cuts + 1)
        run = max(runs, key=lambda rr: float(w[inl[rr]].sum()))
        mem = inl[run]
        left[idx[r <= 2.0 * tol]] = False
        if len(mem) < 3:
            continue
        line = _line_of(image, pts[mem], w[mem])
        if line[4] >= MIN_SEED_EXTENT_MM and line[5] <= max_rms and line[4] >= MIN_ELONGATION * line[5]:
            out.append(line)
    return out


def _merge_collinear(image: Image, v: np.ndarray, pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Join pieces of one thin needle that the seeding broke apart (a thin needle crossing
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
        c, u, _ = _pca(pts, np.maximum(hu - float(np.median(hu)), 0.0) + 1.0)
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


# --- the model fit ---------------------------------------------------------------------------

_SQ2PI = math.sqrt(2.0 * math.pi)
_SQ2 = math.sqrt(2.0)


@njit(cache=True, nogil=True)
def _phi(z):  # pragma: no cover - compiled
    return math.exp(-0.5 * z * z) / _SQ2PI


@njit(cache=True, nogil=True)
def _cdf(z):  # pragma: no cover - compiled
    return 0.5 * (1.0 + math.erf(z / _SQ2))


@njit(cache=True, nogil=True)
def _tube_model(theta, free, c0, u0, e1, e2, X, D, B, clip, tau, out, jac):  # pragma: no cover - compiled
    """The blurred-cylinder model at the voxel centres ``X`` (n, 3), averaged over the sub-point
    offsets ``D`` (m, 3), over the tissue ``B`` (n,), soft-clipped at ``clip``: values into
    ``out`` and the derivatives by the free parameters into ``jac``.

    ``theta``: shift of the axis along e1 and e2 (mm), tilt of the direction along e1 and e2,
    the ends t0 and t1 (mm along the axis from ``c0``), log A (HU mm2), log r (the metal's
    radius, mm), log s (the blur, mm) and the tissue offset (HU). Across the axis the metal is a
    disc of radius r blurred by a Gaussian of s, taken radially as the blurred interval,
    ``[Phi((r - rho) / s) + Phi((r + rho) / s) - 1] / N`` with ``N = pi [(r^2 + s^2) (2 Phi(r/s) - 1)
    + 2 r s phi(r/s)]`` its exact area (a disc for r >> s, a Gaussian of s for r << s); along it a
    step at each end blurred by s."""
    a, b, p, q, t0, t1, ln_a, ln_r, ln_s, b0 = theta
    amp = math.exp(ln_a)
    rad = math.exp(ln_r)
    sg = math.exp(ln_s)
    c = c0 + a * e1 + b * e2
    w = u0 + p * e1 + q * e2
    nw = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    u = w / nw
    ue1 = u[0] * e1[0] + u[1] * e1[1] + u[2] * e1[2]
    ue2 = u[0] * e2[0] + u[1] * e2[1] + u[2] * e2[2]
    ur = rad / sg
    two_cdf = 2.0 * _cdf(ur) - 1.0
    area = math.pi * ((rad * rad + sg * sg) * two_cdf + 2.0 * rad * sg * _phi(ur))
    d_area_r = math.pi * (2.0 * rad * two_cdf + 4.0 * sg * _phi(ur))
    d_area_s = math.pi * 2.0 * sg * two_cdf
    reach2 = (rad + 6.0 * sg) ** 2
    n_sub = D.shape[0]
    g = np.zeros(10)
    for n in range(X.shape[0]):
        m = 0.0
        for k in range(10):
            g[k] = 0.0
        for s_ in range(n_sub):
            d0 = X[n, 0] + D[s_, 0] - c[0]
            d1 = X[n, 1] + D[s_, 1] - c[1]
            d2 = X[n, 2] + D[s_, 2] - c[2]
            s = d0 * u[0] + d1 * u[1] + d2 * u[2]
            r2 = d0 * d0 + d1 * d1 + d2 * d2 - s * s
            if r2 > reach2:
                continue
            z0 = (s - t0) / sg
            z1 = (s - t1) / sg
            if z0 < -6.0 or z1 > 6.0:
                continue
            rho = math.sqrt(max(r2, 0.0))
            za = (rad - rho) / sg
            zb = (rad + rho) / sg
            pa = _phi(za)
            pb = _phi(zb)
            num = _cdf(za) + _cdf(zb) - 1.0
            prof = num / area
            p0 = _phi(z0)
            p1 = _phi(z1)
            e = _cdf(z0) - _cdf(z1)
            f = amp * prof * e
            m += f
            fs = amp * prof * (p0 - p1) / sg  # d f / d s
            if rho > 1e-6:  # d f / d r2
                fr = amp * e * (pb - pa) / (sg * area) / (2.0 * rho)
            else:
                fr = -amp * e * rad * _phi(ur) / (sg ** 3 * area)
            de1 = d0 * e1[0] + d1 * e1[1] + d2 * e1[2]
            de2 = d0 * e2[0] + d1 * e2[1] + d2 * e2[2]
            g[0] += -fs * ue1 + fr * (2.0 * s * ue1 - 2.0 * de1)
            g[1] += -fs * ue2 + fr * (2.0 * s * ue2 - 2.0 * de2)
            sp_ = (de1 - s * ue1) / nw
            sq_ = (de2 - s * ue2) / nw
            g[2] += (fs - 2.0 * s * fr) * sp_
            g[3] += (fs - 2.0 * s * fr) * sq_
            g[4] += -amp * prof * p0 / sg
            g[5] += amp * prof * p1 / sg
            g[6] += f
            g[7] += amp * e * rad * ((pa + pb) / sg - prof * d_area_r) / area
            d_num_s = -(za * pa + zb * pb) / sg
            g[8] += amp * sg * (e * (d_num_s - prof * d_area_s) / area + prof * (z1 * p1 - z0 * p0) / sg)
        val = B[n] + b0 + m / n_sub
        x = (clip - val) / tau
        if x > 30.0:
            mc = val
            dm = 1.0
        elif x < -30.0:
            mc = clip
            dm = 0.0
        else:
            mc = clip - tau * math.log1p(math.exp(x))
            dm = 1.0 / (1.0 + math.exp(-x))
        out[n] = mc
        col = 0
        for k in range(10):
            if free[k]:
                jac[n, col] = dm if k == 9 else dm * g[k] / n_sub
                col += 1


class _Context:
    """What every candidate's fit shares: the image, its noise, clipping, sub-points, the body."""

    def __init__(self, image: Image, v: np.ndarray, coarse: bool):
        self.image = image
        self.v = v
        self.coarse = coarse
        self.sp = image.spacing
        self.size = np.array(image.size_ijk)
        self.noise = _noise_hu(v)
        self.clip = _clip_level(v)
        self.sub = self._subpoints(SUBPOINT_MM)  # sub-point offsets, LPS mm
        self.sub_rough = self._subpoints(2.0 * SUBPOINT_MM)  # for the first, rough fit
        self.rad = max(3.0, 1.5 * float(self.sp[:2].max()) + 0.5)  # the fit's reach around the axis (mm)
        # voxels that may hold metal: within half a voxel's cross-section, the thickest needle's
        # radius (14 G, 1.05 mm) and twice the kernel's blur (0.4 mm) of the axis
        big = np.sort(self.sp)[1:]
        self.footprint = 0.5 * float(np.hypot(*big)) + 1.05 + 0.8
        px = float(self.sp[:2].min())
        h = math.ceil((self.footprint + max(px, 1.5)) / px)
        hk = 1 if coarse else 0  # coarse voxels: the slices on either side too, as near as the voxels beside
        ok, oj, oi = np.meshgrid(np.arange(-hk, hk + 1), np.arange(-h, h + 1), np.arange(-h, h + 1), indexing="ij")
        off = np.stack([oi.ravel(), oj.ravel(), ok.ravel()], 1)  # (m, 3) as (i, j, k)
        dist = np.linalg.norm(off * self.sp, axis=1)
        self.tissue_offsets = off[np.argsort(dist, kind="stable")][1:]  # nearest first, the voxel itself left out
        self._skin = None

    def _subpoints(self, step: float) -> np.ndarray:
        n = np.maximum(1, np.ceil(self.sp / step - 1e-6).astype(int))
        offs = np.stack(np.meshgrid(*[(np.arange(m) + 0.5) / m - 0.5 for m in n], indexing="ij"), -1).reshape(-1, 3)
        return offs @ np.asarray(self.image.affine, float)[:3, :3].T

    def sample(self, pts: np.ndarray, order: int = 1) -> np.ndarray:
        ijk = self.image.lps_to_ijk(pts.reshape(-1, 3))
        out = ndi.map_coordinates(self.v, ijk[:, ::-1].T, order=order, mode="nearest")
        return out.reshape(pts.shape[:-1])

    def exit_t(self, c: np.ndarray, u: np.ndarray) -> tuple[float, float]:
        """The stretch of the line ``c + t u`` inside the scan's grid (voxel edges)."""
        p = self.image.lps_to_ijk(c)
        du = self.image.lps_to_ijk(c + u) - p
        lo, hi = -np.inf, np.inf
        for ax in range(3):
            a, b = -0.5 - p[ax], self.size[ax] - 0.5 - p[ax]
            if abs(du[ax]) < 1e-12:
                if a > 0 or b < 0:
                    return 0.0, -1.0
                continue
            ta, tb = sorted((a / du[ax], b / du[ax]))
            lo, hi = max(lo, ta), min(hi, tb)
        return float(lo), float(hi)

    def depth(self, p: np.ndarray) -> float | None:
        """Signed distance (mm) from ``p`` to the skin, positive inside; None without a body."""
        if self._skin is None:
            from scipy.spatial import cKDTree

            from planner.anatomy.autoseg import body_mask

            try:
                body = body_mask(self.image)
            except Exception:  # noqa: BLE001 - a slab the segmenter cannot read: fall back to the scan's edges
                body = None
            if body is None or not body.any():
                self._skin = (None, None)
            else:
                edge = body & ~ndi.binary_erosion(body, border_value=1)
                kji = np.argwhere(edge)
                self._skin = (body, cKDTree(self.image.ijk_to_lps(kji[:, ::-1].astype(float))))
        body, tree = self._skin
        if body is None:
            return None
        q = np.clip(np.rint(self.image.lps_to_ijk(p)).astype(int), 0, self.size - 1)
        d = float(tree.query(p)[0])
        return d if body[q[2], q[1], q[0]] else -d


def _roi(ctx: _Context, c, u, t_lo, t_hi, rad):
    """Voxels (ijk, LPS centres) within ``rad`` of the line ``c + t u``, t_lo <= t <= t_hi."""
    image = ctx.image
    ends = image.lps_to_ijk(np.array([c + t_lo * u, c + t_hi * u]))
    pad = rad / ctx.sp + 1
    lo = np.maximum(np.floor(ends.min(0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(ends.max(0) + pad) + 1, ctx.size).astype(int)
    if np.any(hi <= lo):
        return np.zeros((0, 3), int), np.zeros((0, 3))
    kk, jj, ii = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo[::-1], hi[::-1])), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1)
    pts = image.ijk_to_lps(ijk.astype(float))
    t = (pts - c) @ u
    r = np.linalg.norm(pts - c - t[:, None] * u, axis=1)
    sel = (r <= rad) & (t >= t_lo) & (t <= t_hi)
    return ijk[sel], pts[sel]


def _tissue(ctx: _Context, ijk: np.ndarray, c, u, t0: float, t1: float, reach: float):
    """The tissue at each voxel ``ijk`` as if the needle were not there: the median of its
    nearest neighbours in the axial plane (:data:`TISSUE_NEIGHBOURS`) that hold no metal: whose
    box lies farther than ``reach`` from the segment ``c + t u`` (t0..t1). Beside a gas pocket,
    a bone or an organ's edge this is the level right at the needle, which a wider ring misses.
    Returns ``(level, half_range)``: where voxels are coarse a voxel often mixes tissues (gas and
    a bowel wall, fat and bone) and its own level is only known to lie between the lowest and the
    highest of its neighbours: the middle of that range and half of it (where voxels are fine,
    the median and zero)."""
    off = ctx.tissue_offsets
    nb = ijk[:, None, :] + off[None]
    inside = np.all((nb >= 0) & (nb < ctx.size), axis=2)
    nb = np.clip(nb, 0, ctx.size - 1)
    pts = ctx.image.ijk_to_lps(nb.reshape(-1, 3).astype(float)).reshape(nb.shape)
    rel = pts - c
    t = np.clip(rel @ u, t0, t1)
    dist = np.linalg.norm(rel - t[..., None] * u, axis=2)
    # half the diagonal of a voxel's box seen along the needle
    half = 0.5 * math.sqrt(float(np.sum(ctx.sp ** 2 * (1.0 - (ctx.image.direction.T @ u) ** 2))))
    ok = inside & (dist > half + reach)
    vals = ctx.v[nb[..., 2], nb[..., 1], nb[..., 0]].astype(np.float64)
    rank = np.cumsum(ok, axis=1)
    use = ok & (rank <= TISSUE_NEIGHBOURS)
    vals = np.where(use, vals, np.nan)
    out = np.empty(len(ijk))
    some = use.any(1)
    half = np.zeros(len(ijk))
    if some.any():
        if ctx.coarse:  # anywhere between the lowest and the highest of them
            lo, hi = np.nanmin(vals[some], axis=1), np.nanmax(vals[some], axis=1)
            out[some] = 0.5 * (lo + hi)
            half[some] = 0.5 * (hi - lo)
        else:
            out[some] = np.nanmedian(vals[some], axis=1)
    if (~some).any():  # no neighbour outside the footprint: the median of all around
        out[~some] = np.median(ctx.v[nb[~some, :, 2], nb[~some, :, 1], nb[~some, :, 0]], axis=1)
    return out, half


def _within(d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals ``d`` (model - image) where the tissue is known only to within +-``half``: about
    zero inside the range, ``d -+ half`` beyond it (``d - half tanh(d / half)``, smooth); and
    their derivative by ``d``."""
    h = np.maximum(half, 1e-6)
    th = np.tanh(d / h)
    soft = half > 0.5
    return np.where(soft, d - h * th, d), np.where(soft, th * th, 1.0)


def _fit(ctx: _Context, c, u, t0, t1, t_lo, t_hi, prev: dict | None = None, rough: bool = False) -> dict | None:
    """One least-squares fit of the needle model on the voxels around ``c + t u``
    (``t_lo <= t <= t_hi``), starting with ends ``t0``, ``t1`` (and the content, radius and blur
    of ``prev``, an earlier fit)."""
    ijk, X = _roi(ctx, c, u, t_lo, t_hi, ctx.rad)
    if len(X) < 10:
        return None
    obs = ctx.v[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float64)
    u, e1, e2 = _frame(u)
    va = _extent_along(ctx.image, u)
    radius = prev["radius"] if prev else 0.6
    blur = prev["blur"] if prev else BLUR_MM
    # the needle may go on beyond the ends fitted so far: no voxel near its line serves as tissue
    B, H = _tissue(ctx, ijk, c, u, t0 - va, t1 + va, radius + 3.0 * blur)
    free = np.ones(10, np.bool_)
    if ctx.coarse:
        free[8] = False  # the blur is far below a voxel: the kernel's
        blur = BLUR_MM
    if prev:
        amp0 = prev["A"]
    else:  # the excess of the voxels the axis runs through, over a voxel's cross-section (low where saturated)
        t = (X - c) @ u
        axial = (np.linalg.norm(X - c - t[:, None] * u, axis=1) <= 0.5 * float(ctx.sp.min())) & (t >= t0) & (t <= t1)
        cross = float(np.prod(ctx.sp)) / va
        amp0 = float(np.median(obs[axial] - B[axial])) * cross if axial.any() else 1000.0
    amp0 = float(np.clip(amp0, 1000.0, 2e5))
    # parameters as fitted: the model's, but the length t1 - t0 (at least 1 mm) in place of t1
    span = t_hi - t_lo + 10.0
    lo = np.array([-4.0, -4.0, -0.3, -0.3, t_lo - 5.0, 1.0, math.log(50.0), math.log(0.15), math.log(0.15), -500.0])
    hi = np.array([4.0, 4.0, 0.3, 0.3, t_hi + 4.0, span, math.log(3e5), math.log(4.0), math.log(2.0), 500.0])
    theta0 = np.array([0.0, 0.0, 0.0, 0.0, t0, t1 - t0, math.log(amp0), math.log(radius), math.log(blur), 0.0])
    theta0 = np.clip(theta0, lo + 1e-6, hi - 1e-6)
    out = np.empty(len(X))
    jac = np.empty((len(X), int(free.sum())))
    scale = 1.0 / ctx.noise
    last = [None]
    sub = ctx.sub_rough if rough else ctx.sub

    def full(x):
        th = theta0.copy()
        th[free] = x
        th[5] += th[4]  # t1 = t0 + length
        return th

    def evaluate(x):  # one pass gives the values and the derivatives: keep both for the same x
        if last[0] is None or not np.array_equal(last[0], x):
            _tube_model(full(x), free, c, u, e1, e2, X, sub, B, ctx.clip, CLIP_SOFTNESS_HU, out, jac)
            jac[:, 4] += jac[:, 5]  # by t0 with the length held: both ends move
            last[0] = np.array(x)

    def fun(x):
        evaluate(x)
        return _within(out - obs, H)[0] * scale

    def jfun(x):
        evaluate(x)
        return jac * (_within(out - obs, H)[1] * scale)[:, None]

    r = least_squares(fun, theta0[free], jac=jfun, bounds=(lo[free], hi[free]), loss="soft_l1", f_scale=3.0,
                      x_scale="jac", max_nfev=20 if rough else 60, ftol=1e-6, xtol=1e-6)
    th = full(r.x)
    metal = np.empty(len(X))  # the metal's part of the model, unclipped
    _tube_model(np.concatenate([th[:9], [0.0]]), np.zeros(10, np.bool_), c, u, e1, e2, X, sub, np.zeros(len(X)),
                np.inf, CLIP_SOFTNESS_HU, metal, np.empty((len(X), 0)))
    a, b, p, q, ft0, ft1, ln_a, ln_r, ln_s, b0 = th
    w = u + p * e1 + q * e2
    uu = w / np.linalg.norm(w)
    cc = c + a * e1 + b * e2
    # re-centre: express the ends from the foot of c on the new axis
    shift = float((c - cc) @ uu)
    return _fit_result(cc + shift * uu, uu, float(ft0 - shift), float(ft1 - shift), math.exp(ln_a), math.exp(ln_r),
                       math.exp(ln_s), float(b0), X=X, obs=obs, B=B, H=H, resid=(out - obs), nfev=r.nfev,
                       metal=metal)


def _fit_result(c, u, t0, t1, amp, radius, blur, b0, **more) -> dict:
    """A fit's parameters, with the blurred metal's density at its axis (``core``, HU) and its
    equivalent Gaussian width (``width``, mm: sqrt(r^2 / 4 + s^2))."""
    ur = radius / blur
    cdf = 0.5 * (1.0 + math.erf(ur / _SQ2))
    phi = math.exp(-0.5 * ur * ur) / _SQ2PI
    area = math.pi * ((radius ** 2 + blur ** 2) * (2 * cdf - 1) + 2 * radius * blur * phi)
    return dict(c=c, u=u, t0=t0, t1=t1, A=amp, radius=radius, blur=blur, b0=b0, core=amp * (2 * cdf - 1) / area,
                width=math.sqrt(radius ** 2 / 4 + blur ** 2), **more)


def _scan_end(ctx: _Context, res: dict, which: int, inward: float, outward: float) -> float:
    """The end ``which`` (0: t0, 1: t1) of the fitted needle ``res`` where the robust cost is lowest,
    from ``inward`` mm short of the fitted end to ``outward`` mm beyond it (steps of 0.5 mm, then
    0.125 mm around the best), everything else as fitted. A least-squares fit can stop short of
    the tip where the tissue around the needle is uneven (a gas bubble in bowel content) or where
    the needle crosses bowel gas, which tells little of metal on coarse voxels (the tissue's range
    there spans the metal's excess); the needle is straight, and the scan along its line finds
    the global minimum beyond such a stretch."""
    c = res["c"]
    u = _frame(res["u"])[0]
    end = res["t1"] if which else res["t0"]
    sign = 1.0 if which else -1.0
    lo_e, hi_e = (end - inward, end + outward) if which else (end - outward, end + inward)
    ijk, X = _roi(ctx, c, u, lo_e - 4.0, hi_e + 4.0, ctx.rad)
    if len(X) < 4:
        return end
    obs = ctx.v[ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float64)
    va = _extent_along(ctx.image, u)
    # no voxel that may hold metal for any end scanned serves as tissue: none near the line (as in the fit)
    B, H = _tissue(ctx, ijk, c, u, min(res["t0"], lo_e) - va, max(res["t1"], hi_e) + va, res["radius"] + 3.0 * res["blur"])
    # the model's metal, sub-point by sub-point (as in _tube_model), with the scanned end as a variable:
    # only the voxels within 6 blurs of an end change with it
    amp, rad, sg = res["A"], res["radius"], res["blur"]
    d = X[:, None, :] + ctx.sub[None] - c
    s_ax = d @ u
    rho = np.sqrt(np.maximum(np.einsum("nmk,nmk->nm", d, d) - s_ax ** 2, 0.0))
    ur = rad / sg
    area = math.pi * ((rad * rad + sg * sg) * (2 * ndtr(ur) - 1) + 2 * rad * sg * math.exp(-0.5 * ur * ur) / _SQ2PI)
    w = amp / len(ctx.sub) * (ndtr((rad - rho) / sg) + ndtr((rad + rho) / sg) - 1.0) / area
    total = w.sum(1)
    s_min, s_max = s_ax.min(1), s_ax.max(1)
    fixed = float(res["t0"] if which else res["t1"])
    held = (w * ndtr((s_ax - fixed) / sg)).sum(1)
    base = res["b0"] + B

    def cost(e: float) -> float:
        if (e - fixed) * sign < 1.0:  # at least 1 mm long
            return np.inf
        beyond = total * (s_min > e + 6 * sg)  # sum of w Phi((s - e) / s): 0 well before e, all of w well beyond
        mid = (s_max >= e - 6 * sg) & (s_min <= e + 6 * sg)
        beyond[mid] = (w[mid] * ndtr((s_ax[mid] - e) / sg)).sum(1)
        metal = held - beyond if which else beyond - held
        val = base + metal
        model = val if not np.isfinite(ctx.clip) else ctx.clip - CLIP_SOFTNESS_HU * np.logaddexp(
            0.0, (ctx.clip - val) / CLIP_SOFTNESS_HU)
        z = (_within(model - obs, H)[0] / (3.0 * ctx.noise)) ** 2
        return float(np.sum(np.sqrt(1.0 + z) - 1.0))

    def best(grid):
        return float(grid[int(np.argmin([cost(e) for e in grid]))])

    rough = best(end + sign * np.arange(-inward, outward + 1e-9, 0.5))  # then finer around the best
    return best(rough + np.arange(-0.5, 0.5 + 1e-9, 0.125))


def _measure(ctx: _Context, c, u, t0, t1, peak, min_length_mm) -> NeedleFinding | str:
    """The needle on the rough line ``c + t u`` (t0..t1), or why it is not one."""
    image = ctx.image
    sp = ctx.sp
    u, _, _ = _frame(u)
    vox_along = float(np.abs(image.direction.T @ u) @ sp)
    margin = 6.0 + vox_along
    if peak < METAL_HU:  # not denser than bone: bone around the rough line already tells (with margins)
        rough = _features(ctx, {"c": c, "u": u, "t0": t0, "t1": t1}, t0, t1, tissue_only=True)
        why = _rejection(ctx, dict(rough, A=np.inf, width=0.0, core=np.inf, surround=rough["surround"] - 50.0,
                                   sector=rough["sector"] - 50.0), 0.0, quick=True)
        if why:
            return why
    t_lo, t_hi = t0 - margin, t1 + margin
    res = None
    for it in range(6):
        e_lo, e_hi = ctx.exit_t(c, u)
        t_lo, t_hi = max(t_lo, e_lo - vox_along), min(t_hi, e_hi + vox_along)
        if t_hi - t_lo < 2.0:
            return "no metal above the surrounding tissue along its line"
        res = _fit(ctx, c, u, t0, t1, t_lo, t_hi, res, rough=it == 0)
        if res is None:
            return "no metal above the surrounding tissue along its line"
        # clearly not a needle: no need to refine (with margins: the fit is not final)
        quick = _features(ctx, res, max(res["t0"], t_lo), min(res["t1"], t_hi))
        quick.update(A=2.0 * res["A"], width=res["width"] / 1.5, core=2.0 * res["core"],
                     surround=quick["surround"] - 50.0, sector=quick["sector"] - 50.0)
        why = _rejection(ctx, quick, 0.0, quick=True)
        if why:
            return why
        moved = float(np.linalg.norm(res["c"] - c)) + 50.0 * float(np.linalg.norm(res["u"] - u))
        c, u, t0, t1 = res["c"], res["u"], res["t0"], res["t1"]
        e_lo, e_hi = ctx.exit_t(c, u)
        grow = False
        if t0 < t_lo + 2.0 + vox_along and t_lo > e_lo - vox_along + 1e-6:
            t_lo = t0 - margin - 10.0
            grow = True
        else:
            t_lo = t0 - margin
        if t1 > t_hi - 2.0 - vox_along and t_hi < e_hi + vox_along - 1e-6:
            t_hi = t1 + margin + 10.0
            grow = True
        else:
            t_hi = t1 + margin
        if not grow and moved < 0.2:
            break
    assert res is not None
    e_lo, e_hi = ctx.exit_t(c, u)
    # each end inside the scan: the global minimum of the cost along it, then a final fit
    inward = 4.0 * vox_along + 4.0
    moved = False
    for which, (end, lim) in enumerate(((t0, e_lo), (t1, e_hi))):
        if abs(end - lim) > 0.5 * vox_along and (end > lim if which == 0 else end < lim):
            outward = min(max(inward, END_SEARCH_MM), abs(lim - end) + vox_along)
            best = _scan_end(ctx, res, which, inward, outward)
            if abs(best - end) > 0.3:
                res = dict(res, **{("t1" if which else "t0"): best})
                moved = True
    if moved:
        again = _fit(ctx, res["c"], res["u"], res["t0"], res["t1"], min(t_lo, res["t0"] - margin),
                     max(t_hi, res["t1"] + margin), res)
        if again is not None:
            res = again
            c, u, t0, t1 = res["c"], res["u"], res["t0"], res["t1"]
            e_lo, e_hi = ctx.exit_t(c, u)
    # the ends: where the metal leaves the scan, the last visible metal
    edge_tol = 0.5 * vox_along
    ta, a_edge = (max(t0, e_lo), True) if t0 < e_lo + edge_tol else (t0, False)
    tb, b_edge = (min(t1, e_hi), True) if t1 > e_hi - edge_tol else (t1, False)
    pa, pb = c + ta * u, c + tb * u
    da, db = ctx.depth(pa), ctx.depth(pb)
    feats = _features(ctx, res, ta, tb)
    feats.update(a_edge=a_edge, b_edge=b_edge, da=da, db=db, vox_along=vox_along)
    reason = _rejection(ctx, feats, min_length_mm)
    if reason:
        return reason
    notes: list[str] = []
    tip_in_scan = True
    if da is None or db is None:
        da = db = 0.0
        notes.append("no body found: tip and hub end told apart by the scan's edges alone")
    inside_a, inside_b = da > 0 and not a_edge, db > 0 and not b_edge
    if a_edge and b_edge:
        notes.append("the metal runs out of the scan at both ends: the tip is not in the scan")
        tip_is_b = db >= da
        tip_in_scan = False
    elif a_edge or b_edge:
        free_inside = inside_b if a_edge else inside_a
        tip_is_b = a_edge
        if not free_inside:
            notes.append("the metal's only end in the scan lies outside the body (the hub end): the tip is beyond "
                         "the scan; the deepest visible metal is given")
            tip_is_b = not tip_is_b
            tip_in_scan = False
    else:
        tip_is_b = db > da
        if inside_a and inside_b:
            notes.append("both ends of the metal lie inside the body: tip and hub end told apart by depth alone")
        elif not inside_a and not inside_b:
            notes.append("neither end of the metal lies inside the body: tip and hub end told apart by depth alone")
    if tip_is_b:
        tip, hub, direction = pb, pa, u
    else:
        tip, hub, direction = pa, pb, -u
    length = float(tb - ta)
    diameter = 2.0 * math.sqrt(res["A"] / (math.pi * STEEL_EXCESS_MIN_HU))
    # confidence: long, holding well over the thinnest needle's content, and even along its length
    elong = min(1.0, length / 30.0)
    content = float(np.clip(res["A"] / (NEEDLE_AREA_MIN_MM2 * STEEL_EXCESS_MIN_HU) / 2.0, 0.0, 1.0))
    even = float(np.clip(1.0 - feats["uneven"] / MAX_UNEVEN, 0.0, 1.0))
    score = round(0.4 * elong + 0.3 * content + 0.3 * even, 3)
    return NeedleFinding(np.asarray(tip, float), np.asarray(hub, float), np.asarray(direction, float), length,
                         diameter, float(peak), score, notes, tip_in_scan)


def _features(ctx: _Context, res: dict, ta: float, tb: float, tissue_only: bool = False) -> dict:
    """What tells a needle from the rest, from the fitted model and the tissue around it
    (``tissue_only``: the tissue around the line alone)."""
    c, u, t0, t1 = res["c"], res["u"], res["t0"], res["t1"]
    length = float(tb - ta)
    u, e1, e2 = _frame(u)
    # the tissue 4-8 mm around the axis, in 8 sectors, along the visible length
    ts = np.linspace(ta, tb, max(3, int(length / 2.0) + 1))
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    rr = np.array([4.0, 6.0, 8.0])
    ring = (rr[:, None, None] * (np.cos(ang)[None, :, None] * e1 + np.sin(ang)[None, :, None] * e2))  # (3, 16, 3)
    pts = c + ts[:, None, None, None] * u + ring[None]
    vals = ctx.sample(pts)  # (nt, 3, 16)
    surround = float(np.median(vals))
    sectors = vals.reshape(len(ts), 3, 8, 2).transpose(0, 1, 3, 2).reshape(len(ts), 6, 8)
    per_sector = np.median(sectors, axis=(0, 1))
    sector, sector_low = float(per_sector.max()), float(per_sector.min())
    if tissue_only:
        return {"surround": surround, "sector": sector, "sector_low": sector_low}
    X = res["X"]
    t = (X - c) @ u
    # the metal content stretch by stretch along the needle, against the fitted one
    va = _extent_along(ctx.image, u)
    step = max(va, 4.0)
    n_st = max(1, int(length // step))
    edges = np.linspace(ta, tb, n_st + 1)
    m = res["metal"]
    excess = res["obs"] - res["B"] - res["b0"]
    usable = (res["obs"] < ctx.clip - 50.0) & (m > 0.02 * float(m.max() if m.size else 0.0))
    ratios, peaks, sure = [], [], []
    near = m > 0.02 * float(m.max() if m.size else 0.0)
    # metal beyond doubt: a voxel above the highest its tissue can be by a fifth of what the whole
    # cross-section would add to one voxel (and five noise deviations)
    above = res["obs"] - (res["B"] + res["H"] + res["b0"])
    beyond = max(5.0 * ctx.noise, 0.2 * res["A"] * va / float(np.prod(ctx.sp)))
    for lo_, hi_ in itertools.pairwise(edges):
        inside = (t >= lo_) & (t < hi_)
        sel = usable & inside
        den = float(np.sum(m[sel] ** 2))
        if den > 0:
            ratios.append(float(np.sum(excess[sel] * m[sel])) / den)
        if (near & inside).any():
            peaks.append(float(res["obs"][near & inside].max()))
            sure.append(float(above[near & inside].max()) >= beyond)
    ratios = np.array(ratios) if ratios else np.array([1.0])
    return {"uneven": float(1.4826 * np.median(np.abs(ratios - np.median(ratios)))),
            "sure": float(np.mean(sure)) if sure else 0.0,
            "dense": float(np.median(peaks)) if peaks else 0.0,
            "A": res["A"], "width": res["width"], "core": res["core"], "radius": res["radius"], "blur": res["blur"],
            "length": length, "t0": t0, "t1": t1,
            "surround": surround, "sector": sector, "sector_low": sector_low, "b0": res["b0"], "c": c, "u": u}


def _rejection(ctx: _Context, f: dict, min_length_mm: float, quick: bool = False) -> str:
    """Why the fitted line is not a needle ('' when it is one); ``quick``: only what its content, its
    width and the tissue around it tell (the fit is not final: the caller gives margins)."""
    a_min = A_MIN_FRACTION * NEEDLE_AREA_MIN_MM2 * STEEL_EXCESS_MIN_HU
    if f["A"] < a_min:
        return (f"line-like but only {f['A']:.0f} HU mm2 of excess across it, less than a needle's metal "
                f"({a_min:.0f}): not metal")
    max_sigma = MAX_COARSE_SIGMA_MM if ctx.coarse else MAX_SIGMA_MM
    if f["width"] > max_sigma:
        return f"line-like but {f['width']:.1f} mm wide (Gaussian width), wider than a needle: a vessel or a bone's edge"
    if not ctx.coarse and f["core"] < MIN_PEAK_HU:
        return f"line-like but only {f['core']:.0f} HU at its core, less than metal: a vessel or a bone's edge"
    # a line denser than any bone shows in a voxel is steel whatever bone lies around it, but one
    # along the edge of something as dense all along is the edge of a larger metal object
    if f["sector"] >= METAL_HU:
        return (f"line-like but with {f['sector']:.0f} HU beside it along its length: the edge of a larger metal "
                "object (a prosthesis)")
    dense = f.get("dense", 0.0) >= METAL_HU
    if f["surround"] > MAX_SURROUNDING_HU and not dense:
        return f"line-like but surrounded by {f['surround']:.0f} HU (median 4-8 mm around): the edge of a bone"
    if ctx.coarse and f["sector"] > MAX_SECTOR_HU and f["sector"] - f["surround"] > BONE_SIDE_HU and not dense:
        return (f"line-like but with {f['sector']:.0f} HU beside it along its length, {f['surround']:.0f} HU around: "
                "the edge of a bone")
    if quick:
        return ""
    if ctx.coarse and not dense and f["sure"] < MIN_SURE:
        return (f"line-like but beyond doubt denser than the tissue around it along only {100 * f['sure']:.0f} % "
                "of its length: a wall against gas, a vessel or a bone's edge")
    if ctx.coarse and not dense and f["uneven"] > MAX_UNEVEN:
        return (f"line-like but its content varies by {100 * f['uneven']:.0f} % along it: a needle is a uniform "
                "cylinder (a wall, a vessel or a bone's edge)")
    at_edge = f["a_edge"] or f["b_edge"]
    if f["da"] is not None and max(f["da"], f["db"]) < MIN_TIP_DEPTH_MM:
        return "line-like but outside the body (a wire, the table or the skin's edge): not a needle in the patient"
    if ctx.coarse and not at_edge and f["da"] is not None and min(f["da"], f["db"]) > MAX_HUB_DEPTH_MM:
        return ("line-like but both its ends lie deep in the body and inside the scan: a needle comes in through "
                "the skin")
    need = max(MIN_EDGE_LENGTH_MM, MIN_EDGE_VOXELS * f["vox_along"]) if at_edge else min_length_mm
    if f["length"] < need:
        return f"compact: {f['length']:.1f} mm long end to end, shorter than {need:g} mm"
    return ""
