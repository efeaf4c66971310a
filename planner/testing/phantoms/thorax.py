"""Synthetic adult chest CT (head first supine, axial) with a solid nodule in the right upper lobe.

Everything is placed in LPS millimetres around the origin: x to the patient's left, y to
posterior, z to superior. The cross-section of the chest is a set of nested superellipses
(skin, subcutaneous fat, muscle, thoracic cavity) that narrow towards the apex; ribs run just
outside the cavity, descending from the spine to the sternum; the lungs fill the cavity above
the diaphragm domes except for the mediastinum, which is the union of the heart, the great
vessels, the airways and the oesophagus, each wrapped in fat.

Contrast-enhanced (venous phase) blood: heart chambers, aorta, pulmonary arteries, caval veins
and the intrapulmonary vessels are all +190 HU; myocardium +90.
"""

from __future__ import annotations

import numpy as np

from .common import (
    Canvas,
    Grid,
    Phantom,
    bone_fill,
    distance_inside,
    ellipsoid,
    finish_ct,
    intersect,
    lps_list,
    make_image,
    rotation_from_axis,
    smooth_noise,
    smooth_tube,
    smoothstep,
    sub_slices,
    superellipse_radius,
    superellipse_rho,
    tube_sdf,
)

# --- materials (HU) -------------------------------------------------------------------------
AIR = -1000.0
LUNG = -855.0
FISSURE = -600.0
FAT = -100.0
MED_FAT = -90.0
MUSCLE = 45.0
SKIN = 30.0
BLOOD = 190.0
MYOCARDIUM = 90.0
LIVER = 100.0
SPLEEN = 110.0
CSF = 12.0
CORD = 35.0
CARTILAGE = 110.0
DISC = 80.0
NODULE = 40.0
CORTEX = 1150.0
CANCELLOUS = {"rib": 340.0, "vertebra": 280.0, "sternum": 300.0, "scapula": 420.0, "clavicula": 360.0}

MURRAY = 2.6  # exponent of the branching law (Murray's 3, lowered for a tree cut at 1 mm)
NODULE_CENTRE = (-85.0, -14.0, 39.0)  # right upper lobe, anterior segment
NODULE_RADIUS = 9.0

# --- body layers: superellipses (a, b_anterior, b_posterior, exponent) centred on x = y = 0 ----
BODY = (165.0, 110.0, 118.0, 2.3)
SKIN_IN = (163.0, 108.0, 116.0, 2.3)
MUSCLE_OUT = (150.0, 99.0, 105.0, 2.3)
CAVITY = (125.0, 85.0, 78.0, 2.2)

# --- thoracic vertebrae: centre z and height (body + disc), T1 at the top ------------------
_H = 20.0 + 0.65 * np.arange(12)
_ZV = 128.0 - np.r_[0.0, np.cumsum((_H[:-1] + _H[1:]) / 2.0)]
VERTEBRA_Z = _ZV  # T1..T12 centres
VERTEBRA_H = _H
VB_Y = 48.0  # centre of the vertebral bodies (y)
VB_ML = 15.0 + 0.5 * np.arange(12)  # semi-axes of the bodies
VB_AP = 12.0 + 0.45 * np.arange(12)

# --- ribs -------------------------------------------------------------------------------------
PHI_TUB = 0.44  # angle (from the posterior midline) of the rib tubercle
RIB_DROP = np.array([47.3, 66.6, 76.7, 84.8, 90.5, 94.3, 95.6, 94.9, 91.9, 80.0, 59.0, 32.8])
RIB_PHI_BONE = np.array([2.75, 2.65, 2.6, 2.6, 2.6, 2.55, 2.5, 2.4, 2.3, 2.15, 1.85, 1.45])
RIB_PHI_CART = np.array([2.98, 2.98, 2.98, 2.98, 2.98, 2.98, 2.98, 2.8, 2.62, 2.42, 0.0, 0.0])
RIB_CART_RISE = np.array([0.0, 0.0, 4.0, 8.0, 12.0, 14.0, 16.0, 24.0, 20.0, 15.0, 0.0, 0.0])


def cavity_scale(z: np.ndarray | float) -> np.ndarray:
    """The thoracic cavity narrows towards the apex."""
    return 1.0 - 0.22 * smoothstep((np.asarray(z, float) - 30.0) / 106.0)


def body_scale(z: np.ndarray | float) -> np.ndarray:
    return 1.0 - 0.08 * smoothstep((np.asarray(z, float) - 40.0) / 96.0)


def diaphragm_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the diaphragm: two domes, the right one higher, deep posterior recesses."""
    def dome(z0: float, x0: float, y0: float) -> np.ndarray:
        c = np.where(y < y0, 0.007, 0.012)
        return z0 - c * ((x - x0) ** 2 + (y - y0) ** 2)

    return np.maximum(dome(-40.0, -55.0, -5.0), dome(-55.0, 55.0, 0.0))


def apex_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Top of the lungs: one dome over each apex."""
    return 133.0 - 0.006 * ((np.abs(x) - 45.0) ** 2 + (y - 15.0) ** 2)


def _vertebra_dims(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    zs = VERTEBRA_Z[::-1]
    return np.interp(z, zs, VB_ML[::-1]), np.interp(z, zs, VB_AP[::-1])


def _rib_z(n: int, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre-line height of rib n (1-based) at angle phi, and dz/dphi (bony part and beyond)."""
    z0 = VERTEBRA_Z[n - 1] + 2.0
    span = np.pi - PHI_TUB
    u = np.clip((phi - PHI_TUB) / span, 0.0, None)
    z = z0 - RIB_DROP[n - 1] * u**1.4
    dz = -RIB_DROP[n - 1] * 1.4 * u**0.4 / span
    pb = RIB_PHI_BONE[n - 1]
    pc = RIB_PHI_CART[n - 1]
    if pc > pb:
        ub = (pb - PHI_TUB) / span
        zb = z0 - RIB_DROP[n - 1] * ub**1.4
        rise = RIB_CART_RISE[n - 1] / (pc - pb)
        beyond = phi > pb
        z = np.where(beyond, zb + rise * (phi - pb), z)
        dz = np.where(beyond, rise, dz)
    return z, dz


def _rib_neck(n: int, sgn: float) -> np.ndarray:
    """Head, middle and tubercle of rib n on one side (sgn -1 right, +1 left)."""
    zt = VERTEBRA_Z[n - 1] + 2.0
    rt = float(superellipse_radius(np.array(PHI_TUB), *CAVITY) * cavity_scale(zt)) + 6.0
    tub = np.array([sgn * rt * np.sin(PHI_TUB), rt * np.cos(PHI_TUB), zt])
    head = np.array([sgn * (VB_ML[n - 1] + 3.0), VB_Y + 3.0, zt + 3.0])
    mid = 0.5 * (head + tub) + np.array([0.0, 0.0, 1.0])
    return np.array([head, mid, tub])


# --------------------------------------------------------------------------------------------


def _fissure_band(normal_parts: tuple[float, float, float], spacing: np.ndarray) -> float:
    """Half-thickness of a fissure band that no two face-neighbours can straddle."""
    n = np.abs(np.asarray(normal_parts, float))
    n = n / np.linalg.norm(n)
    return 0.5 * float(np.max(n * spacing)) + 1e-6


def _colonize(
    rng: np.random.Generator,
    grid: Grid,
    lobe: np.ndarray,
    roots: list[np.ndarray],
    avoid_centre: np.ndarray,
    avoid_radius: float,
    attractor_spacing_mm: float = 11.0,
    step: float = 4.0,
    influence: float = 32.0,
    kill: float = 6.0,
    leaf_radius: float = 0.55,
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Vessel trees filling one lobe, grown from hilar roots by space colonisation.

    Attraction points are scattered through the lobe (none near the nodule); every point pulls
    the nearest tree node within ``influence``; nodes grow one ``step`` towards the mean pull and
    points closer than ``kill`` to the tree are consumed. Radii follow Murray's law from the leaves.
    Returns segments (start, end, radius at start, radius at end).
    """
    from scipy.spatial import cKDTree

    kk, jj, ii = np.nonzero(lobe)
    vol = len(kk) * grid.voxel_volume_mm3
    n_attr = max(20, int(vol / attractor_spacing_mm**3))
    pick = rng.choice(len(kk), size=min(n_attr, len(kk)), replace=False)
    pick.sort()
    ijk = np.column_stack([ii[pick], jj[pick], kk[pick]]).astype(float) + rng.uniform(-0.5, 0.5, (len(pick), 3))
    attr = (grid.affine[:3, :3] @ ijk.T).T + grid.affine[:3, 3]
    attr = attr[np.linalg.norm(attr - avoid_centre, axis=1) > avoid_radius + 8.0]
    centroid = attr.mean(axis=0)

    nodes = [np.asarray(r, float) for r in roots]
    parent = [-1] * len(roots)
    alive = np.ones(len(attr), dtype=bool)
    # trunks: straight towards the lobe until some attraction point is in reach
    for t in range(len(roots)):
        cur = t
        d0 = centroid - nodes[t]
        d0 /= np.linalg.norm(d0)
        for _ in range(40):
            if np.min(np.linalg.norm(attr - nodes[cur], axis=1)) < influence:
                break
            nodes.append(nodes[cur] + step * d0)
            parent.append(cur)
            cur = len(nodes) - 1
    for _ in range(400):
        if not alive.any():
            break
        pts = np.asarray(nodes)
        tree = cKDTree(pts)
        live = np.nonzero(alive)[0]
        dist, idx = tree.query(attr[live], distance_upper_bound=influence)
        ok = np.isfinite(dist)
        if not ok.any():
            break
        a_pts = attr[live[ok]]
        n_idx = idx[ok]
        v = a_pts - pts[n_idx]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
        sums = np.zeros_like(pts)
        np.add.at(sums, n_idx, v)
        growing = np.unique(n_idx)
        dirs = sums[growing]
        norm = np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs / np.maximum(norm, 1e-9) + rng.normal(0.0, 0.12, dirs.shape)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        new = pts[growing] + step * dirs
        keep = np.linalg.norm(new - avoid_centre, axis=1) > avoid_radius + 4.0
        if not keep.any():
            break
        new, growing = new[keep], growing[keep]
        # refuse a node that lands on an existing one (a stalled tip)
        dd, _ = tree.query(new)
        fresh = dd > 0.5 * step
        if not fresh.any():
            break
        new, growing = new[fresh], growing[fresh]
        for p_new, g in zip(new, growing):
            nodes.append(p_new)
            parent.append(int(g))
        dk, _ = cKDTree(new).query(attr[live])
        alive[live[dk < kill]] = False

    pts = np.asarray(nodes)
    par = np.asarray(parent)
    n = len(pts)
    children = [[] for _ in range(n)]
    for c in range(n):
        if par[c] >= 0:
            children[par[c]].append(c)
    radius = np.zeros(n)
    for c in range(n - 1, -1, -1):  # children always come after their parent
        if children[c]:
            radius[c] = float(np.sum(radius[children[c]] ** MURRAY) ** (1.0 / MURRAY))
        else:
            radius[c] = leaf_radius
    return [(pts[par[c]], pts[c], radius[par[c]], radius[c]) for c in range(n) if par[c] >= 0]


def make_thorax(seed: int = 0) -> Phantom:
    """The synthetic chest CT; ``seed`` drives the noise, the lung texture and the vessel trees."""
    rng = np.random.Generator(np.random.PCG64(seed))
    grid = Grid.axial((240, 200, 110), (1.6, 1.6, 2.5), (0.0, 0.0, 0.0))
    cv = Canvas(grid, AIR)
    full = grid.full()
    X, Y, Z = grid.coords()
    shape = grid.shape
    spacing = grid.spacing_ijk
    sb = body_scale(Z)
    sc = cavity_scale(Z)

    # --- body wall --------------------------------------------------------------------------
    rho_body = superellipse_rho(X, Y, *BODY) / sb
    body = rho_body <= 1.0
    cv.paint(full, body, SKIN)
    cv.paint(full, superellipse_rho(X, Y, *SKIN_IN) / sb <= 1.0, FAT)
    cv.paint(full, superellipse_rho(X, Y, *MUSCLE_OUT) / sb <= 1.0, MUSCLE)
    ml, ap = _vertebra_dims(Z)
    spine_block = (Y > VB_Y - 2.0) & (np.abs(X) < ml + 4.0 + 0.35 * np.maximum(Y - VB_Y, 0.0))
    cavity = (superellipse_rho(X, Y, *CAVITY) / sc <= 1.0) & ~spine_block
    del spine_block

    zd = diaphragm_z(X, Y)  # (1, nj, ni)
    above = Z > zd
    thoracic = cavity & above
    abdomen = cavity & (Z <= zd - 5.0)
    cv.paint(full, thoracic, MED_FAT)
    cv.paint(full, thoracic & (Z >= apex_z(X, Y) + 6.0) & (np.abs(X) > 20.0), 35.0)  # neck base soft tissue
    cv.paint(full, cavity & ~above, MUSCLE)  # diaphragm
    cv.paint(full, abdomen, MED_FAT)

    # --- mediastinal structures (centre-lines), needed first for the mediastinal envelope -----
    heart_c = np.array([18.0, -28.0, -22.0])
    heart_rot = rotation_from_axis((0.65, -0.45, -0.6))
    heart_semi = np.array([62.0, 48.0, 45.0])

    vessels = {
        "aorta": (
            [(10, -25, -2), (2, -32, 20), (-6, -30, 45), (-4, -28, 62), (2, -22, 74), (20, -8, 80),
             (28, 12, 74), (28, 28, 60), (27, 32, 42), (26, 33, 20), (24, 30, -20), (18, 24, -70),
             (10, 18, -110), (6, 16, -140)],
            [13, 15, 15, 14, 13, 12.5, 12, 12, 12, 12, 11.5, 11, 11, 10.5],
        ),
        "brachiocephalic_trunk": ([(6, -20, 80), (-8, -16, 105), (-14, -12, 140)], [6.5, 6.5, 6.0]),
        "common_carotid_artery_left": ([(16, -10, 84), (15, -9, 110), (14, -8, 140)], [4.0, 4.0, 4.0]),
        "subclavian_artery_left": ([(26, 4, 82), (30, 8, 110), (40, 10, 140)], [5.0, 5.0, 5.0]),
        "pulmonary_artery": (
            [(18, -50, -5), (30, -48, 15), (26, -26, 30), (14, -10, 34)], [13, 14, 12, 11]),
        "pulmonary_artery_left": ([(14, -10, 34), (32, -4, 40), (48, 10, 38), (58, 20, 30)], [11, 10, 9, 7]),
        "pulmonary_artery_right": ([(14, -10, 34), (-8, -8, 27), (-28, -4, 24), (-45, 0, 20)], [11, 10, 9, 7]),
        "superior_vena_cava": ([(-30, -22, 140), (-34, -24, 90), (-35, -24, 40), (-32, -22, 5), (-26, -22, -12)],
                               [9, 10, 10, 10, 10]),
        "brachiocephalic_vein_left": ([(55, -28, 128), (10, -40, 112), (-30, -28, 96)], [6, 6, 7]),
        "brachiocephalic_vein_right": ([(-52, -20, 140), (-38, -24, 105), (-34, -24, 95)], [7, 7, 8]),
        "inferior_vena_cava": ([(-24, -18, -40), (-22, 0, -75), (-20, 12, -100), (-20, 18, -140)], [11, 11, 11, 11]),
    }
    airways = {
        "trachea": ([(-2, 2, 140), (-3, 5, 90), (-3, 8, 50), (-3, 10, 40)], [11.0, 11.0, 11.0, 10.0]),
        "bronchus_right": ([(-3, 10, 40), (-22, 14, 33), (-40, 18, 26), (-47, 22, 12), (-52, 26, -5)],
                           [8.3, 8.3, 7.5, 6.5, 5.5]),
        "bronchus_right_upper": ([(-36, 17, 28), (-48, 15, 38), (-56, 12, 46)], [6.0, 5.5, 4.5]),
        "bronchus_left": ([(-3, 10, 40), (20, 18, 32), (45, 24, 22), (55, 32, 2), (58, 36, -12)],
                          [7.5, 7.5, 7.0, 6.0, 5.0]),
        "bronchus_left_upper": ([(45, 24, 22), (56, 16, 34), (62, 10, 44)], [6.0, 5.5, 4.5]),
    }
    esophagus = ([(2, 24, 140), (3, 25, 90), (4, 26, 50), (8, 22, 10), (10, 12, -30), (28, 4, -62), (45, -8, -85)],
                 [7.0] * 7)

    sdf = {}
    for name, (ctrl, radii) in {**vessels, **airways, "esophagus": esophagus}.items():
        sdf[name] = smooth_tube(grid, ctrl, radii, pad=6.0)

    # Mediastinal envelope: everything within a few mm of a mediastinal organ, plus a thin band
    # between the sternum and the great vessels (the anterior junction line).
    envelope = np.zeros(shape, dtype=bool)
    envelope |= (np.abs(X) <= 4.0) & (Y <= 0.0) & thoracic
    hq = ellipsoid(grid, heart_c, heart_semi + 7.0, heart_rot)
    if hq is not None:
        envelope[hq[0]] |= hq[1] <= 1.0
    for name, res in sdf.items():
        if res is None or name.startswith("bronchus_") and name.endswith("_upper"):
            continue
        sl, sd = res
        envelope[sl] |= sd <= (3.0 if name.startswith("bronchus") else 4.5)
    # Spine and rib necks: no lung there (the vertebral body bulges into the cavity, with a
    # rim of fat; the posterior elements and the paraspinal muscles lie outside it).
    spine_excl = (X / (ml + 4.0)) ** 2 + ((Y - VB_Y) / (ap + 4.0)) ** 2 <= 1.0
    for n in range(1, 13):
        for sgn in (-1.0, 1.0):
            res = tube_sdf(grid, _rib_neck(n, sgn), [4.2, 4.0, 4.0], pad=3.0)
            if res is not None:
                spine_excl[res[0]] |= res[1] <= 3.0

    # --- lungs, lobes and fissures ------------------------------------------------------------
    lung = thoracic & (Z < apex_z(X, Y)) & ~envelope & ~spine_excl
    del envelope, spine_excl
    ax = np.abs(X)
    # Right oblique fissure: rises from anterior-inferior to posterior-superior.
    m_r, t_r = 0.77, 0.10
    f_obl_r = (Z - (-55.0 + m_r * (Y + 70.0) - t_r * (ax - 80.0))) / np.sqrt(1 + m_r**2 + t_r**2)
    h_obl_r = _fissure_band((t_r, m_r, 1.0), spacing)
    # Right horizontal (minor) fissure, slightly tilted.
    hx, hy = 0.16, -0.10
    f_hor = (Z - (8.0 + hx * (X + 60.0) + hy * (Y + 40.0))) / np.sqrt(1 + hx**2 + hy**2)
    h_hor = _fissure_band((hx, hy, 1.0), spacing)
    # Left oblique fissure.
    m_l, t_l = 0.885, 0.10
    f_obl_l = (Z - (-65.0 + m_l * (Y + 65.0) - t_l * (ax - 80.0))) / np.sqrt(1 + m_l**2 + t_l**2)
    h_obl_l = _fissure_band((t_l, m_l, 1.0), spacing)

    right = lung & (X < 0)
    left = lung & (X >= 0)
    lobes = {
        "lung_upper_lobe_right": right & (f_obl_r > h_obl_r) & (f_hor > h_hor),
        "lung_middle_lobe_right": right & (f_obl_r > h_obl_r) & (f_hor < -h_hor),
        "lung_lower_lobe_right": right & (f_obl_r < -h_obl_r),
        "lung_upper_lobe_left": left & (f_obl_l > h_obl_l),
        "lung_lower_lobe_left": left & (f_obl_l < -h_obl_l),
    }
    fissures = (right & ((np.abs(f_obl_r) <= h_obl_r) | ((f_obl_r > h_obl_r) & (np.abs(f_hor) <= h_hor)))) | (
        left & (np.abs(f_obl_l) <= h_obl_l)
    )
    del f_obl_r, f_hor, f_obl_l, right, left
    for name, m in lobes.items():
        cv.paint(full, m, LUNG, name)
    cv.paint(full, fissures, FISSURE, "lung_fissures")

    # --- abdomen below the diaphragm ----------------------------------------------------------
    for c, semi in (((-40.0, 8.0, -112.0), (92.0, 88.0, 72.0)), ((12.0, -42.0, -100.0), (52.0, 36.0, 34.0))):
        lv = ellipsoid(grid, c, semi)
        if lv is not None:
            cv.paint(lv[0], abdomen[lv[0]] & (lv[1] <= 1.0), LIVER, "liver")
    st = ellipsoid(grid, (58.0, -12.0, -108.0), (34.0, 34.0, 42.0))
    if st is not None:
        sl, q = st
        qi = ellipsoid(grid, (58.0, -12.0, -108.0), (31.0, 31.0, 39.0), pad=3.0)[1]  # same box
        inner = qi <= 1.0
        y_loc = grid.coords(sl)[1]
        ab = abdomen[sl]
        cv.paint(sl, ab & (q <= 1.0), 55.0, "stomach")
        cv.paint(sl, ab & inner, 15.0, "stomach")
        cv.paint(sl, ab & inner & (y_loc < -24.0), AIR + 10.0, "stomach")
    sp = ellipsoid(grid, (88.0, 40.0, -112.0), (40.0, 42.0, 17.0), rotation_from_axis((0.5, 0.866, 0.0)))
    if sp is not None:
        cv.paint(sp[0], abdomen[sp[0]] & (sp[1] <= 1.0), SPLEEN, "spleen")

    # --- heart --------------------------------------------------------------------------------
    hq = ellipsoid(grid, heart_c, heart_semi, heart_rot)
    assert hq is not None
    hsl, hqv = hq
    heart = hqv <= 1.0
    cv.paint(hsl, heart, MYOCARDIUM, "heart")
    chambers = [  # (centre in the heart's frame: apex-ward, up, right-anterior), semi-axes
        ((8.0, -4.0, -15.0), (42.0, 24.0, 16.0)),  # left ventricle
        ((2.0, 2.0, 22.0), (40.0, 30.0, 13.0)),  # right ventricle
        ((-38.0, 14.0, -16.0), (20.0, 22.0, 20.0)),  # left atrium
        ((-32.0, -10.0, 22.0), (22.0, 22.0, 19.0)),  # right atrium
    ]
    for c, s in chambers:
        res = ellipsoid(grid, heart_c + heart_rot @ np.array(c), s, heart_rot)
        if res is None:
            continue
        sl, q = res
        # keep a wall inside the heart's outline
        ov = intersect(sl, hsl)
        if ov is None:
            continue
        inner = (q[sub_slices(sl, ov)] <= 1.0) & (hqv[sub_slices(hsl, ov)] <= 0.8)
        cv.paint(ov, inner, BLOOD, "heart")

    # --- pulmonary vessel trees ---------------------------------------------------------------
    nodule_c = np.array(NODULE_CENTRE)
    lung_mask = lung
    lobe_masks = {name: cv.mask(name) for name in lobes}
    roots = {  # pulmonary artery branch and pulmonary vein of each lobe, at the hilum
        "lung_upper_lobe_right": [(-44.0, -2.0, 26.0), (-38.0, -16.0, 12.0)],
        "lung_middle_lobe_right": [(-44.0, -6.0, 16.0), (-36.0, -18.0, 2.0)],
        "lung_lower_lobe_right": [(-46.0, 4.0, 16.0), (-36.0, 12.0, -6.0)],
        "lung_upper_lobe_left": [(56.0, 16.0, 32.0), (42.0, 0.0, 12.0)],
        "lung_lower_lobe_left": [(58.0, 22.0, 24.0), (42.0, 16.0, -4.0)],
    }
    vessel_hu = np.full(shape, -np.inf)
    vessel_mask = np.zeros(shape, dtype=bool)
    not_other_lobes_base = thoracic & ~fissures
    n_segments = 0
    for name, lobe in lobe_masks.items():
        allowed = not_other_lobes_base & ~(lung_mask & ~lobe)
        tree = np.zeros(shape, dtype=bool)
        segs = _colonize(rng, grid, lobe, [np.array(r) for r in roots[name]], nodule_c, NODULE_RADIUS,
                         attractor_spacing_mm=8.0)
        n_segments += len(segs)
        for a, b, ra, rb in segs:
            rmean = 0.5 * (ra + rb)
            r_draw = max(rmean, 0.95)
            frac = min(1.0, (rmean / r_draw) ** 2) * min(1.0, np.pi * rmean**2 / (spacing[0] * spacing[1]) + 0.3)
            res = tube_sdf(grid, [a, b], [max(ra, 0.95), max(rb, 0.95)])
            if res is None:
                continue
            sl, sd = res
            m = sd <= 0.0
            tree[sl] |= m
            hu_val = LUNG + (BLOOD - LUNG) * frac
            reg = vessel_hu[sl]
            np.maximum(reg, np.where(m, hu_val, -np.inf), out=reg)
        vessel_mask |= tree & allowed
    vessel_hu[~vessel_mask] = 0.0
    cv.paint(full, vessel_mask, vessel_hu, "lung_vessels")
    del vessel_hu, vessel_mask, lobe_masks

    # --- great vessels, airways, oesophagus ---------------------------------------------------
    label_of = {"pulmonary_artery_left": "pulmonary_artery", "pulmonary_artery_right": "pulmonary_artery",
                "bronchus_right_upper": "bronchus_right", "bronchus_left_upper": "bronchus_left"}
    for name in ("inferior_vena_cava", "superior_vena_cava", "brachiocephalic_vein_left", "brachiocephalic_vein_right",
                 "pulmonary_artery", "pulmonary_artery_left", "pulmonary_artery_right",
                 "brachiocephalic_trunk", "common_carotid_artery_left", "subclavian_artery_left", "aorta"):
        res = sdf[name]
        if res is None:
            continue
        sl, sd = res
        m = sd <= 0.0
        if name == "inferior_vena_cava":
            m &= Z[sl[0]] < -20.0
        cv.paint(sl, m, BLOOD, label_of.get(name, name))
    res = sdf["esophagus"]
    if res is not None:
        sl, sd = res
        cv.paint(sl, (sd <= 0.0) & (Z[sl[0]] > zd[:, sl[1], sl[2]] - 30.0), MUSCLE, "esophagus")
        cv.paint(sl, (sd <= -5.0) & (Z[sl[0]] > zd[:, sl[1], sl[2]]), -800.0, "esophagus")
    wall = {"trachea": 2.2, "bronchus_right": 1.8, "bronchus_right_upper": 1.5, "bronchus_left": 1.8,
            "bronchus_left_upper": 1.5}
    for name in ("bronchus_right_upper", "bronchus_left_upper", "bronchus_right", "bronchus_left", "trachea"):
        res = sdf[name]
        if res is None:
            continue
        sl, sd = res
        cv.paint(sl, sd <= 0.0, MUSCLE, label_of.get(name, name))
    for name in ("bronchus_right_upper", "bronchus_left_upper", "bronchus_right", "bronchus_left", "trachea"):
        res = sdf[name]
        if res is None:
            continue
        sl, sd = res
        cv.paint(sl, sd <= -wall[name], AIR, label_of.get(name, name))
    del sdf

    # --- skeleton -----------------------------------------------------------------------------
    bone_names: list[str] = []
    core_hu: dict[str, float] = {}
    r_xy = np.sqrt(X**2 + Y**2)  # (1, nj, ni)
    phi = np.arctan2(np.abs(X), Y)  # 0 posterior midline .. pi anterior midline
    r_cav0 = superellipse_radius(phi, *CAVITY)

    # Sternum
    zs = Z[:, 0, 0]
    in_st = (zs <= 100.0) & (zs >= -76.0)
    w = np.where(zs > 55.0, 15.0 + 10.0 * smoothstep((zs - 55.0) / 45.0), np.where(zs > -55.0, 14.0, 7.0))
    thick = np.where(zs > 55.0, 7.0, np.where(zs > -55.0, 6.0, 3.5))
    yc = -CAVITY[1] * cavity_scale(zs) - 8.0
    ster = ((np.abs(X) / w[:, None, None]) ** 3 + (np.abs(Y - yc[:, None, None]) / thick[:, None, None]) ** 3 <= 1.0)
    ster &= in_st[:, None, None]
    cv.paint(full, ster, 300.0, "sternum")
    bone_names.append("sternum")
    core_hu["sternum"] = CANCELLOUS["sternum"]
    del ster

    # Ribs and costal cartilages
    for n in range(1, 13):
        zr, dz = _rib_z(n, phi)
        s_here = cavity_scale(zr)
        rr = r_cav0 * s_here + 6.0
        slope = dz / np.maximum(rr, 1.0)
        if n == 1:
            a_r, a_z = 6.5, 3.8
        else:
            a_r, a_z = 3.6, 6.0 - 0.1 * n
        az_eff = a_z * np.sqrt(1.0 + slope**2)
        pb, pc = RIB_PHI_BONE[n - 1], RIB_PHI_CART[n - 1]
        zlo = float(np.min(zr[phi <= max(pb, pc)])) - 15.0
        zhi = float(np.max(zr[phi <= max(pb, pc)])) + 15.0
        box = grid.box((-200.0, -200.0, zlo), (200.0, 200.0, zhi))
        if box is None:
            continue
        zz = Z[box[0]]
        q = ((r_xy - rr) / a_r) ** 2 + ((zz - zr) / az_eff) ** 2
        inside = q <= 1.0
        for side, sgn in (("right", -1.0), ("left", 1.0)):
            side_ok = (X * sgn) > 0
            bone = inside & side_ok & (phi >= PHI_TUB) & (phi <= pb)
            name = f"rib_{side}_{n}"
            cv.paint(box, bone, 340.0, name)
            if pc > pb:
                cart = inside & side_ok & (phi > pb) & (phi <= pc)
                cv.paint(box, cart, CARTILAGE, "costal_cartilages")
            # neck and head: from the side of the vertebral body to the tubercle
            res = tube_sdf(grid, _rib_neck(n, sgn), [4.2, 4.0, 4.0])
            if res is not None:
                cv.paint(res[0], res[1] <= 0.0, 340.0, name)
            bone_names.append(name)
            core_hu[name] = CANCELLOUS["rib"]

    # Scapulae
    z_sup, z_inf = 118.0, -25.0
    t = np.clip((Z - z_sup) / (z_inf - z_sup), 0.0, 1.0)
    in_z = (Z <= z_sup) & (Z >= z_inf)
    phi_m = 0.56 + 0.04 * t
    phi_l = 1.45 - 0.8 * t**1.3
    r_bl = r_cav0 * sc + 16.0
    half = 2.2 + 2.3 * smoothstep((phi - (phi_l - 0.16)) / 0.16)
    blade = in_z & (phi >= phi_m) & (phi <= phi_l) & (np.abs(r_xy - r_bl) <= half) & (Y > -40.0)
    z_sp = 92.0 + 14.0 * np.clip((phi - phi_m) / (phi_l - phi_m + 1e-9), 0.0, 1.5)
    spine_of = in_z & (phi >= phi_m + 0.05) & (phi <= phi_l + 0.12) & (r_xy >= r_bl) & (r_xy <= r_bl + 14.0) & (
        np.abs(Z - z_sp) <= 4.0)
    scap = blade | spine_of
    for side, sgn in (("right", -1.0), ("left", 1.0)):
        name = f"scapula_{side}"
        cv.paint(full, scap & ((X * sgn) > 0), 420.0, name)
        gl_r = float(superellipse_radius(np.array(1.55), *CAVITY) * cavity_scale(118.0) + 19.0)
        gl = ellipsoid(grid, (sgn * gl_r * np.sin(1.55), gl_r * np.cos(1.55), 120.0), (11.0, 10.0, 14.0))
        if gl is not None:
            cv.paint(gl[0], gl[1] <= 1.0, 420.0, name)
        bone_names.append(name)
        core_hu[name] = CANCELLOUS["scapula"]
    del blade, spine_of, scap, t, in_z, half, r_bl

    # Clavicles
    for side, sgn in (("right", -1.0), ("left", 1.0)):
        ctrl = [(sgn * 22, -84, 106), (sgn * 60, -90, 112), (sgn * 100, -74, 120), (sgn * 130, -46, 128),
                (sgn * 146, -26, 134)]
        res = smooth_tube(grid, ctrl, [7.5, 6.5, 6.0, 6.5, 7.5])
        if res is not None:
            name = f"clavicula_{side}"
            cv.paint(res[0], res[1] <= 0.0, 360.0, name)
            bone_names.append(name)
            core_hu[name] = CANCELLOUS["clavicula"]

    # Vertebrae: body, pedicles and laminae, transverse and spinous processes; discs between.
    canal_y = []
    for n in range(1, 13):
        zc, h = VERTEBRA_Z[n - 1], VERTEBRA_H[n - 1]
        mlv, apv = VB_ML[n - 1], VB_AP[n - 1]
        yc_c = VB_Y + apv + 8.5
        canal_y.append(yc_c)
        name = f"vertebrae_T{n}"
        box = grid.box((-45.0, 20.0, zc - h / 2 - 22.0), (45.0, 115.0, zc + h / 2 + 2.0))
        if box is None:
            continue
        xb, yb, zb = grid.coords(box)
        vb = ((xb / mlv) ** 2 + ((yb - VB_Y) / apv) ** 2 <= 1.0) & (np.abs(zb - zc) <= h / 2 - 2.0)
        rc = np.sqrt((xb / 8.5) ** 2 + ((yb - yc_c) / 7.5) ** 2)
        ring = (rc > 1.0) & (np.sqrt(xb**2 + (yb - yc_c) ** 2) <= 13.5) & (yb >= VB_Y + apv - 4.0) & (
            zb >= zc - h / 2 + 3.0) & (zb <= zc + h / 2 - 2.0)
        zsp = zc - 0.7 * (yb - yc_c - 10.0)
        spinous = (np.abs(xb) <= 3.5) & (yb >= yc_c + 8.0) & (yb <= yc_c + 31.0) & (np.abs(zb - zsp) <= 6.0)
        cv.paint(box, vb | ring | spinous, 280.0, name)
        for sgn in (-1.0, 1.0):
            res = tube_sdf(grid, [(sgn * 9.0, yc_c - 1.0, zc + 2.0), (sgn * 33.0, yc_c + 7.0, zc + 1.0)], [5.0, 4.5])
            if res is not None:
                cv.paint(res[0], res[1] <= 0.0, 280.0, name)
        disc = ((xb / mlv) ** 2 + ((yb - VB_Y) / apv) ** 2 <= 1.0) & (zb < zc - h / 2 + 2.0) & (
            zb > zc - h / 2 - 2.0)
        cv.paint(box, disc, DISC, "intervertebral_discs")
        bone_names.append(name)
        core_hu[name] = CANCELLOUS["vertebra"]
    # above T1: the disc and a sliver of C7 are left out; canal and cord run through the FOV.
    cy = np.interp(Z, VERTEBRA_Z[::-1], np.array(canal_y)[::-1])
    canal = (X / 8.5) ** 2 + ((Y - cy) / 7.5) ** 2 <= 1.0
    cv.paint(full, canal, CSF)
    cord = (X / 6.0) ** 2 + ((Y - cy) / 4.5) ** 2 <= 1.0
    cv.paint(full, cord, CORD, "spinal_cord")
    del canal, cord, cy

    # --- the nodule ---------------------------------------------------------------------------
    nq = ellipsoid(grid, nodule_c, (NODULE_RADIUS,) * 3)
    assert nq is not None
    cv.paint(nq[0], nq[1] <= 1.0, NODULE, "lung_nodule")

    # --- bone structure, texture, noise -------------------------------------------------------
    bone_fill(cv, bone_names, 2.6, CORTEX, core_hu)
    hu = cv.hu
    parenchyma = np.isin(cv.label, [cv.names.index(n) + 1 for n in lobes])
    tex = smooth_noise(rng, shape, 14.0, (1.2, 2.5, 2.5))
    hu[parenchyma] += np.broadcast_to(18.0 * (Y / 80.0), shape)[parenchyma] + tex[parenchyma]
    del tex
    noise = smooth_noise(rng, shape, 9.0, 0.7)
    hu[body] += noise[body]
    del noise
    voxels = finish_ct(hu)

    labels = cv.masks()
    vox_mm3 = grid.voxel_volume_mm3
    nod_vox = int(labels["lung_nodule"].sum())
    nod_d = float((6.0 * nod_vox * vox_mm3 / np.pi) ** (1.0 / 3.0))

    # A reference point deep in aerated lung (right upper lobe, far from everything else).
    rul = labels["lung_upper_lobe_right"]
    kz, jz, iz = (np.nonzero(rul.any(axis=ax))[0] for ax in ((1, 2), (0, 2), (0, 1)))
    box = (slice(kz[0], kz[-1] + 1), slice(jz[0], jz[-1] + 1), slice(iz[0], iz[-1] + 1))
    d = distance_inside(rul[box], grid.spacing_kji)
    kji = np.array(np.unravel_index(int(np.argmax(d)), d.shape)) + [kz[0], jz[0], iz[0]]
    lung_ref = grid.to_lps([kji[2], kji[1], kji[0]])

    image = make_image(grid, voxels, "Synthetic thorax phantom")
    landmarks = {
        "nodule_center": lps_list(nodule_c, 2),
        "carina": [-3.0, 10.0, 40.0],
        "lung_reference": lps_list(lung_ref, 2),
    }
    info = {
        "phantom": "thorax",
        "seed": int(seed),
        "nodule_diameter_mm": 2.0 * NODULE_RADIUS,
        "nodule_lobe": "lung_upper_lobe_right",
        "nodule_mask_diameter_mm": round(nod_d, 2),
        "nodule_hu": NODULE,
        "contrast": "venous phase, blood +190 HU",
        "vessel_segments": n_segments,
        "materials_hu": {"air": AIR, "lung": LUNG, "fissure": FISSURE, "fat": FAT, "muscle": MUSCLE, "blood": BLOOD,
                         "myocardium": MYOCARDIUM, "liver": LIVER, "cortical_bone": CORTEX,
                         "cancellous_bone": CANCELLOUS["rib"], "cartilage": CARTILAGE, "nodule": NODULE},
    }
    return Phantom(image, labels, landmarks, info)
