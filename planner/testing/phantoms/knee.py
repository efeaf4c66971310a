"""Synthetic CT of a right knee (head first supine, axial slices) with a joint effusion.

The leg's long axis runs along z; the joint line lies near z = 0. The right knee sits to the
patient's right, around x = -100 mm; medial is towards +x (the midline), lateral towards -x,
anterior is -y. Local coordinates below: ``u = x - KNEE_X`` (u > 0 medial, u < 0 lateral).

The effusion distends the suprapatellar recess between the quadriceps tendon and the anterior
femur, runs down the medial and lateral gutters beside the condyles, and fills the
patellofemoral and tibiofemoral joint spaces. Blood is contrast enhanced (+190 HU), as in the
thorax phantom.
"""

from __future__ import annotations

import numpy as np

from .common import (
    Canvas,
    Grid,
    Phantom,
    bone_fill,
    distance_inside,
    distance_outside,
    ellipsoid,
    finish_ct,
    lps_list,
    make_image,
    smooth_noise,
    smooth_tube,
    smoothstep,
    superellipse_rho,
    tube_sdf,
)

KNEE_X = -100.0  # x of the knee's axis (patient right)
KNEE_Y = 0.0

AIR = -1000.0
SKIN = 30.0
FAT = -95.0
MUSCLE = 48.0
EFFUSION = 10.0
CARTILAGE = 100.0
MENISCUS = 75.0
TENDON = 90.0
BLOOD = 190.0
NERVE = 32.0
CORTEX = 1250.0
CANCELLOUS = 320.0
MARROW = -30.0  # fatty marrow of the shafts

JOINT_LINE_Z = -1.0
TIBIA_TOP = -3.0


def _interp(z: np.ndarray, zs: list[float], vs: list[float]) -> np.ndarray:
    return np.interp(z, zs, vs)


def leg_axes(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-widths of the leg's outline at height z: medio-lateral, anterior, posterior."""
    a = _interp(z, [-82, -40, -20, 0, 40, 82], [52, 56, 60, 60, 62, 64])
    b_ant = _interp(z, [-82, -30, -5, 20, 32, 50, 82], [44, 47, 50, 59, 61, 56, 56])
    b_post = _interp(z, [-82, -40, 0, 40, 82], [66, 68, 68, 64, 62])
    return a, b_ant, b_post


def _leg_rho(u: np.ndarray, y: np.ndarray, z: np.ndarray, shrink: float | np.ndarray = 0.0) -> np.ndarray:
    a, ba, bp = leg_axes(z)
    b = np.where(y < KNEE_Y, ba, bp)
    p = 2.3
    return ((np.abs(u) / (a - shrink)) ** p + (np.abs(y - KNEE_Y) / (b - shrink)) ** p) ** (1.0 / p)


def femur_mask(u: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    # condyles: superellipsoids, flatter distally than an ellipsoid (p = 3 along z)
    med = (((u - 21.0) / 15.0) ** 2 + ((y - 4.0) / 30.0) ** 2) ** 1.5 + (np.abs(z - 22.0) / 20.0) ** 3 <= 1.0
    lat = (((u + 21.0) / 15.0) ** 2 + ((y - 4.0) / 29.0) ** 2) ** 1.5 + (np.abs(z - 22.0) / 20.0) ** 3 <= 1.0
    troch = (u / 36.0) ** 2 + ((y + 6.0) / 20.0) ** 2 + ((z - 30.0) / 22.0) ** 2 <= 1.0
    t = smoothstep((z - 26.0) / 34.0)
    rml = 38.0 - 24.0 * t
    rap = 24.0 - 10.0 * t
    uc = 1.0 - 0.08 * np.maximum(z - 60.0, 0.0)
    meta = (z >= 24.0) & (((u - uc) / rml) ** 2 + ((y + 3.0 + 1.0 * t) / rap) ** 2 <= 1.0)
    bone = med | lat | troch | meta
    groove = ((u / 9.0) ** 2 + ((y + 33.0) / 9.0) ** 2 <= 1.0) & (z > 8.0) & (z < 48.0)
    notch = (np.abs(u) < 8.5) & (y > 2.0) & (z < 26.0)
    return bone & ~groove & ~notch


def tibia_mask(u: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    s = np.clip((TIBIA_TOP - z) / 40.0, 0.0, 1.0)
    t = 1.0 - (1.0 - s) ** 2.2  # the plateau overhangs: the width falls fast just below it
    low = np.clip((-44.0 - z) / 42.0, 0.0, 1.0)
    rml = 38.0 - 23.0 * t - 2.0 * low
    rap = 26.0 - 10.0 * t - 1.0 * low
    yc = 4.0 - 6.0 * t
    body = (z <= TIBIA_TOP) & (superellipse_rho(u - 1.0, y - yc, rml, rap, rap, 2.4) <= 1.0)
    tub = ((u + 4.0) / 9.0) ** 2 + ((y + 20.0) / 7.0) ** 2 + ((z + 28.0) / 13.0) ** 2 <= 1.0
    emin = (u / 6.0) ** 2 + ((y - 4.0) / 10.0) ** 2 + ((z - TIBIA_TOP) / 6.5) ** 2 <= 1.0
    return body | tub | emin


def patella_mask(u: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    # a rounded plate, narrower towards its inferior apex
    w = 22.0 - 5.0 * np.clip((30.0 - z) / 21.0, 0.0, 1.0)
    return ((u - 2.0) / w) ** 2 + ((y + 44.0) / 10.0) ** 2 + ((z - 30.0) / 21.0) ** 2 <= 1.0


def make_knee(seed: int = 0) -> Phantom:
    """The synthetic right-knee CT; ``seed`` drives the noise and the trabecular texture."""
    rng = np.random.Generator(np.random.PCG64(seed + 1000))
    grid = Grid.axial((184, 184, 110), (0.8, 0.8, 1.5), (KNEE_X, KNEE_Y + 4.0, 0.0))
    cv = Canvas(grid, AIR)
    full = grid.full()
    shape = grid.shape
    X, Y, Z = grid.coords()
    U = X - KNEE_X

    # --- leg: skin, subcutaneous fat, muscle ---------------------------------------------------
    rho = _leg_rho(U, Y, Z)
    leg = rho <= 1.0
    cv.paint(full, leg, SKIN)
    cv.paint(full, _leg_rho(U, Y, Z, 1.5) <= 1.0, FAT)
    fat_t = _interp(Z, [-82, -20, 0, 30, 82], [8.0, 7.0, 5.0, 4.0, 9.0])
    cv.paint(full, _leg_rho(U, Y, Z, fat_t) <= 1.0, MUSCLE)
    inner = _leg_rho(U, Y, Z, fat_t) <= 1.0

    # intermuscular septa (thin fat planes) in the thigh and the calf
    r = np.sqrt(U**2 + (Y - KNEE_Y) ** 2)
    psi = np.arctan2(U, -(Y - KNEE_Y))  # 0 anterior, + medial, - lateral
    septa = np.zeros(shape, dtype=bool)
    for ang, zlo, zhi in ((0.7, 45, 90), (-0.75, 45, 90), (2.25, 40, 90), (-2.35, 40, 90), (3.1, 35, 90),
                          (-1.25, -90, -25), (1.5, -90, -30), (2.75, -90, -20), (-2.8, -90, -20)):
        band = (np.abs(np.sin(psi - ang)) * r < 0.9) & (np.cos(psi - ang) > 0) & (r > 22.0)
        septa |= band & (Z >= zlo) & (Z <= zhi)
    cv.paint(full, septa & inner, FAT)
    del septa
    # popliteal fossa fat: a diamond between the hamstrings above and the gastrocnemius heads below
    fz = np.sqrt(np.clip(1.0 - ((Z - 20.0) / 52.0) ** 2, 0.0, 1.0))
    fossa = ((U + 2.0) / (22.0 * fz + 1e-6)) ** 2 + ((Y - 45.0) / (15.0 * fz + 1e-6)) ** 2 <= 1.0
    cv.paint(full, fossa & inner, FAT)
    del fossa, fz

    # --- bones (masks first: the effusion and cartilage are shaped by them) ------------------
    femur = femur_mask(U, Y, Z)
    tibia = tibia_mask(U, Y, Z)
    patella = patella_mask(U, Y, Z)
    fib = ellipsoid(grid, (KNEE_X - 41.0, 20.0, -19.0), (9.5, 9.5, 9.0))
    fibula = np.zeros(shape, dtype=bool)
    if fib is not None:
        fibula[fib[0]] |= fib[1] <= 1.0
    res = tube_sdf(grid, [(KNEE_X - 41.0, 20.0, -22.0), (KNEE_X - 39.0, 17.0, -90.0)], [7.5, 6.0])
    if res is not None:
        fibula[res[0]] |= res[1] <= 0.0

    sp = grid.spacing_kji
    # distance from the femur, in a box around its distal end
    box = grid.box((KNEE_X - 70, -70, -10), (KNEE_X + 70, 80, 90))
    assert box is not None
    d_fem = np.full(shape, np.inf)
    d_fem[box] = distance_outside(femur[box], sp)
    d_tib = np.full(shape, np.inf)
    box_t = grid.box((KNEE_X - 70, -70, -20), (KNEE_X + 70, 80, 10))
    d_tib[box_t] = distance_outside(tibia[box_t], sp)
    d_pat = np.full(shape, np.inf)
    box_p = grid.box((KNEE_X - 40, -70, 0), (KNEE_X + 40, -20, 60))
    d_pat[box_p] = distance_outside(patella[box_p], sp)

    # --- effusion -----------------------------------------------------------------------------
    # suprapatellar recess: a crescent over the anterior femur under the quadriceps tendon
    ang0 = np.arctan2(U - 1.0, -(Y + 3.0))  # 0 anterior, around the femoral shaft
    zc, hz, t0, amax = 58.0, 25.0, 8.0, 1.25
    prof = np.sqrt(np.clip(1.0 - (ang0 / amax) ** 2, 0.0, 1.0)) * np.sqrt(np.clip(1.0 - ((Z - zc) / hz) ** 2, 0.0, 1.0))
    supra = (d_fem >= 2.0) & (d_fem <= 2.0 + t0 * prof) & (prof > 0.08)
    # medial and lateral gutters beside the condyles
    ang1 = np.abs(np.arctan2(U, -(Y + 2.0)))
    gutters = (d_fem >= 1.0) & (d_fem <= 3.0) & (ang1 > 1.2) & (ang1 < 2.0) & (Z > 8.0) & (Z < 44.0)
    # patellofemoral space, tibiofemoral space
    pf = (d_fem > 0.0) & (d_fem <= 6.0) & (Y < -15.0) & (np.abs(U - 2.0) < 22.0) & (Z > 12.0) & (Z < 50.0)
    plateau = superellipse_rho(U - 1.0, Y - 4.0, 38.0, 26.0, 26.0, 2.4)
    # between the condyles and the plateaus: cartilage in contact centrally, a rim of fluid
    # along the inner edge of the menisci
    gap = (Z > TIBIA_TOP) & (Z < 3.0) & (plateau <= 0.97) & (d_fem > 0.0) & (d_tib > 0.0) & (np.abs(U) > 7.0)
    tf = gap & (plateau >= 0.58)
    effusion = (supra | gutters | pf | tf) & inner
    parts_ml = {k: round(float(m.sum()) * grid.voxel_volume_mm3 / 1000.0, 1)
                for k, m in (("suprapatellar", supra), ("gutters", gutters), ("patellofemoral", pf), ("tibiofemoral", tf))}
    cv.paint(full, effusion, EFFUSION, "knee_effusion_right")
    del supra, gutters, pf, tf, ang0, ang1, prof

    # --- tendons and Hoffa's fat pad ----------------------------------------------------------
    # patellar tendon: from the patellar apex down to the tibial tuberosity
    zt = Z[:, 0, 0]
    f = np.clip((10.0 - zt) / 38.0, 0.0, 1.0)
    pt_u = (2.0 - 6.0 * f)[:, None, None]
    pt_y = (-46.0 + 17.0 * f)[:, None, None]
    in_pt = ((zt <= 12.0) & (zt >= -29.0))[:, None, None]
    hoffa = (((U - 1.0) / 24.0) ** 2 + ((Y + 20.0) / 16.0) ** 2 + ((Z - 4.0) / 15.0) ** 2 <= 1.0) & (Y > pt_y + 3.0)
    cv.paint(full, hoffa & inner, FAT)
    del hoffa

    cv.paint(full, gap & (plateau < 0.58), CARTILAGE, "cartilage_right")
    del gap
    # menisci: wedge rings on the tibial rim
    ztop = TIBIA_TOP + 7.0 * np.clip((plateau - 0.66) / 0.3, 0.0, 1.0)
    men = (plateau >= 0.66) & (plateau <= 1.0) & (Z > TIBIA_TOP) & (Z <= ztop) & (np.abs(U) > 7.0)
    cv.paint(full, men & ~femur, MENISCUS)
    del men, ztop

    # articular cartilage: femoral condyles and trochlea, tibial plateaus, patellar facet
    fem_c = (d_fem > 0.0) & (d_fem <= 2.5) & (
        (Z < 20.0) & (Y > -14.0) | ((Y < -12.0) & (Z < 46.0) & (np.abs(U) < 30.0))
    ) & ~((np.abs(U) < 8.0) & (Y > -4.0)) & ~((np.abs(U) > 33.0) & (Z > 6.0))
    tib_c = (d_tib > 0.0) & (d_tib <= 2.5) & (Z > TIBIA_TOP - 0.1) & (plateau < 0.93) & (np.abs(U) > 7.0)
    pat_c = (d_pat > 0.0) & (d_pat <= 3.0) & (Y > -38.0)
    cv.paint(full, fem_c | tib_c | pat_c, CARTILAGE, "cartilage_right")
    del fem_c, tib_c, pat_c, plateau

    # quadriceps tendon: a flat band inserting on the patellar base
    qt_y = (-45.0 + 0.15 * (zt - 44.0))[:, None, None]
    qt_w = (15.0 + 0.1 * (zt - 44.0))[:, None, None]
    quad = ((U - 2.0) / qt_w) ** 2 + ((Y - qt_y) / 4.0) ** 2 <= 1.0
    quad &= (Z >= 44.0)
    cv.paint(full, quad, TENDON, "quadriceps_tendon_right")
    pat_t = in_pt & (((U - pt_u) / 13.0) ** 2 + ((Y - pt_y) / 3.6) ** 2 <= 1.0)
    cv.paint(full, pat_t, TENDON, "patellar_tendon_right")
    del quad, pat_t

    # --- vessels and nerves of the popliteal fossa --------------------------------------------
    def path(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
        return [(KNEE_X + u, y, z) for u, y, z in points]

    tubes = [
        ("popliteal_vein_right", path([(3, 30, 90), (0, 38, 45), (-2, 48, 10), (-1, 46, -15), (-1, 42, -45),
                                       (-3, 38, -90)]), 4.5, BLOOD),
        ("popliteal_artery_right", path([(6, 22, 90), (3, 30, 45), (1, 39, 10), (1, 37, -15), (0, 34, -45),
                                         (-2, 30, -90)]), 3.2, BLOOD),
        ("tibial_nerve_right", path([(-4, 38, 90), (-5, 47, 45), (-4, 57, 10), (-2, 55, -15), (-1, 51, -45),
                                     (-2, 47, -90)]), 2.3, NERVE),
        ("common_peroneal_nerve_right", path([(-12, 42, 90), (-24, 46, 45), (-36, 42, 10), (-47, 31, -12),
                                              (-53, 17, -27), (-48, 4, -42), (-41, -5, -62), (-38, -8, -90)]),
         2.2, NERVE),
    ]
    for name, ctrl, radius, hu in tubes:
        res = smooth_tube(grid, ctrl, radius)
        if res is not None:
            cv.paint(res[0], res[1] <= 0.0, hu, name)

    # --- bones --------------------------------------------------------------------------------
    cv.paint(full, fibula, 300.0, "fibula_right")
    cv.paint(full, tibia, 300.0, "tibia_right")
    cv.paint(full, femur, 300.0, "femur_right")
    cv.paint(full, patella, 300.0, "patella_right")
    del femur, tibia, patella, fibula, d_fem, d_tib, d_pat
    # cortex thickens from the epiphyses (1.2 mm) to the shafts (4 mm); shafts hold fatty marrow
    shaft = np.maximum(smoothstep((Z - 35.0) / 35.0), smoothstep((-30.0 - Z) / 35.0))
    cortex = 1.6 + 2.6 * shaft
    core = CANCELLOUS + (MARROW - CANCELLOUS) * np.maximum(smoothstep((Z - 50.0) / 25.0),
                                                           smoothstep((-45.0 - Z) / 25.0))
    bone_names = ["femur_right", "tibia_right", "fibula_right", "patella_right"]
    bone_fill(cv, bone_names, cortex, CORTEX, {n: core for n in bone_names})

    # --- texture and noise --------------------------------------------------------------------
    hu = cv.hu
    ids = [cv.names.index(n) + 1 for n in bone_names]
    bone = np.isin(cv.label, ids) & (hu < 1000.0)
    trab = smooth_noise(rng, shape, 35.0, 1.0)
    hu[bone] += trab[bone]
    del trab, bone
    noise = smooth_noise(rng, shape, 9.0, 0.7)
    hu[leg] += noise[leg]
    del noise
    voxels = finish_ct(hu)

    labels = cv.masks()
    eff = labels["knee_effusion_right"]
    vol_ml = float(eff.sum()) * grid.voxel_volume_mm3 / 1000.0

    # effusion centre: the deepest point of the recess on its lateral side, mid-height
    kz = np.nonzero((Z[:, 0, 0] > 45.0) & (Z[:, 0, 0] < 70.0))[0]
    cols = np.nonzero(U[0, 0, :] < -6.0)[0]
    sub = (slice(kz[0], kz[-1] + 1), slice(0, shape[1]), slice(cols[0], cols[-1] + 1))
    d_in = distance_inside(eff[sub], grid.spacing_kji)
    kji = np.array(np.unravel_index(int(np.argmax(d_in)), d_in.shape)) + [kz[0], 0, cols[0]]
    eff_centre = grid.to_lps([kji[2], kji[1], kji[0]])

    image = make_image(grid, voxels, "Synthetic right knee phantom")
    landmarks = {
        "effusion_center": lps_list(eff_centre, 2),
        "joint_center": [KNEE_X + 1.0, 4.0, JOINT_LINE_Z],
        "patella_center": [KNEE_X + 2.0, -44.0, 30.0],
    }
    info = {
        "phantom": "knee",
        "side": "right",
        "seed": int(seed),
        "effusion_volume_ml": round(vol_ml, 2),
        "effusion_parts_ml_before_overlaps": parts_ml,
        "effusion_depth_mm_at_center": round(float(d_in.max()) * 2.0, 1),
        "effusion_hu": EFFUSION,
        "joint_line_z_mm": JOINT_LINE_Z,
        "contrast": "blood +190 HU",
        "materials_hu": {"air": AIR, "fat": FAT, "muscle": MUSCLE, "effusion": EFFUSION, "cartilage": CARTILAGE,
                         "meniscus": MENISCUS, "tendon": TENDON, "blood": BLOOD, "nerve": NERVE,
                         "cortical_bone": CORTEX, "cancellous_bone": CANCELLOUS, "marrow": MARROW},
    }
    return Phantom(image, labels, landmarks, info)
