"""Joint targets found from the bones of the joint (musculoskeletal procedures).

Each function returns a :class:`~planner.anatomy.target.Target` in LPS mm, computed from the
segmented bones alone, with ``how`` saying how it was found so the report can show it. They
are geometric rules a radiologist would apply by eye, written down; the point is always shown
for checking, never used unseen.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..images import Image
from .structures import StructureSet
from .target import Target

FEMORAL_HEAD_RADIUS_MM = 23.0  # adult femoral head, about 20-26 mm


def _voxels_lps(ct: Image, sset: StructureSet, name: str) -> np.ndarray:
    if name not in sset or not sset[name].mask.any():
        raise InputError(f"{name} is not in the structure set: it is needed to place the joint target "
                         f"(give --target X,Y,Z instead)")
    kji = np.argwhere(sset.mask(name))
    return ct.ijk_to_lps(kji[:, ::-1].astype(float))


def hip_injection_target(ct: Image, sset: StructureSet, side: str, clearance_mm: float = 3.0) -> Target:
    """The anterior femoral head-neck junction of the hip on ``side``, just outside the cortex.

    The femoral head is the superomedial end of ``femur_<side>``: its centre lies one head radius
    below the top of the femur, under the centroid of its top centimetre. The neck runs from
    there towards the greater trochanter (the most lateral part of the upper femur). The
    junction is one head radius along the neck from the centre; the target is the first point
    anterior to it whose distance to every femur voxel centre is at least ``clearance_mm``:
    inside the capsule, where the needle tip rests on the bone for an intra-articular injection.
    """
    if side not in ("left", "right"):
        raise InputError(f"side must be left or right, not {side!r}")
    femur = _voxels_lps(ct, sset, f"femur_{side}")
    lateral = -1.0 if side == "right" else 1.0  # LPS x of the patient's lateral side
    top = femur[:, 2].max()
    dome = femur[femur[:, 2] > top - 10.0]
    # the head is the medial one of the two tops (head and greater trochanter) near the top
    medial_dome = dome[(dome[:, 0] - np.median(dome[:, 0])) * -lateral >= 0] if len(dome) > 3 else dome
    centre = np.array([*medial_dome[:, :2].mean(axis=0), top - FEMORAL_HEAD_RADIUS_MM])
    upper = femur[femur[:, 2] > top - 2.5 * FEMORAL_HEAD_RADIUS_MM]
    reach = upper[:, 0] * lateral
    trochanter = upper[reach >= reach.max() - 10.0].mean(axis=0)
    neck = trochanter - centre
    if np.linalg.norm(neck) < 10.0:
        raise InputError(f"femur_{side}: the head and the greater trochanter cannot be told apart "
                         f"(give --target X,Y,Z instead)")
    neck /= np.linalg.norm(neck)
    junction = centre + FEMORAL_HEAD_RADIUS_MM * neck
    tree = cKDTree(femur)
    anterior = np.array([0.0, -1.0, 0.0])
    for step in np.arange(0.0, 60.0, 0.25):
        p = junction + step * anterior
        if tree.query(p)[0] >= clearance_mm:
            break
    else:
        raise InputError(f"femur_{side}: no point in front of the head-neck junction (give --target instead)")
    kji = np.rint(ct.lps_to_ijk(p[None])[0][::-1]).astype(int)
    if np.any(kji < 0) or np.any(kji >= np.array(ct.shape)):
        raise InputError(f"the hip target {np.round(p, 1).tolist()} lies outside the scan")
    how = (f"anterior femoral head-neck junction ({side}): head centre {np.round(centre, 1).tolist()}, "
           f"neck towards the greater trochanter, {clearance_mm:g} mm in front of the cortex")
    return Target(point=tuple(float(x) for x in p), label=f"hip_joint_{side}", how=how)  # type: ignore[arg-type]


def knee_recess_target(ct: Image, sset: StructureSet, side: str, above_patella_mm: float = 10.0,
                       clearance_mm: float = 3.0) -> Target:
    """The suprapatellar recess of the knee on ``side``, found from ``femur_<side>`` and ``patella_<side>``.

    The recess lies over the front of the distal femur, above the patella, under the quadriceps
    tendon. On the axial slice ``above_patella_mm`` above the patella's upper pole, the target is
    ``clearance_mm`` in front of the femur's anterior cortex, at the middle of the femur's width:
    where the recess is when it holds fluid, and where a needle for an injection is aimed when it
    does not. With an effusion segmented, target the effusion itself (its deepest point) instead;
    on a knee MR whose segmentation found fluid in the suprapatellar recess (a thick prefemoral
    fat pad can hold the recess well in front of the femur), the recess target is that pocket.
    """
    if side not in ("left", "right"):
        raise InputError(f"side must be left or right, not {side!r}")
    eff = f"knee_effusion_{side}"
    if eff in sset and sset[eff].source == "automatic (MR)":
        import dataclasses

        from .autoseg.knee_mr import effusion_target

        t = effusion_target(ct, sset, eff)
        if "suprapatellar" in t.how:
            return dataclasses.replace(t, label=f"knee_recess_{side}",
                                       how=f"suprapatellar recess ({side}): the fluid found there; {t.how}")
    femur = _voxels_lps(ct, sset, f"femur_{side}")
    patella = _voxels_lps(ct, sset, f"patella_{side}")
    z = patella[:, 2].max() + above_patella_mm
    band = femur[np.abs(femur[:, 2] - z) <= max(1.0, float(ct.spacing[2]))]
    if len(band) < 10:
        raise InputError(f"femur_{side} does not reach {above_patella_mm:g} mm above the patella "
                         f"(give --target X,Y,Z instead)")
    x_mid = float(np.median(band[:, 0]))
    front = band[np.abs(band[:, 0] - x_mid) <= 5.0]
    start = np.array([x_mid, float(front[:, 1].min()), z])  # the anterior cortex (LPS: anterior is -y)
    tree = cKDTree(femur)
    for step in np.arange(0.0, 40.0, 0.25):
        p = start + np.array([0.0, -step, 0.0])
        if tree.query(p)[0] >= clearance_mm:
            break
    else:  # pragma: no cover - the femur has a front
        raise InputError(f"femur_{side}: no point in front of the femur (give --target instead)")
    how = (f"suprapatellar recess ({side}): {above_patella_mm:g} mm above the patella, "
           f"{clearance_mm:g} mm in front of the femur")
    return Target(point=tuple(float(x) for x in p), label=f"knee_recess_{side}", how=how)  # type: ignore[arg-type]


JOINT_TARGETS = {"hip": hip_injection_target, "knee_recess": knee_recess_target}


def joint_target(ct: Image, sset: StructureSet, spec: str) -> Target:
    """A joint target by name: ``hip_left``, ``hip_right``, ``knee_recess_left``, ``knee_recess_right``."""
    for name, fn in JOINT_TARGETS.items():
        for side in ("left", "right"):
            if spec == f"{name}_{side}":
                return fn(ct, sset, side)
    known = ", ".join(f"{n}_{s}" for n in JOINT_TARGETS for s in ("left", "right"))
    raise InputError(f"unknown joint target {spec!r}; known: {known}")
