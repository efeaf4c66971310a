"""The main neurovascular bundles of a limb placed by anatomical position, where they cannot be
segmented (a non-contrast CT of a thigh: the femoral vessels and the sciatic nerve are soft tissue
among soft tissue).

What it does: on every axial slice that shows a limb's single long bone (a bone cross-section
``MIN_BONE_MM``-``MAX_BONE_MM`` across, with no other such bone within ``ALONE_MM`` of it and no
lung in the slice: a thigh or an upper arm, not the pelvis, the knee or a forearm), it marks,
within the body, the soft tissue of two sectors around the bone, each measured from the bone's
surface: toward the medial side (the femoral vessels in the adductor canal and the profunda
femoris run anteromedial to posteromedial to the femoral shaft; the brachial bundle medial to the
humerus) and toward the posterior side (the sciatic nerve behind the femur; the radial nerve in
the humerus's spiral groove). Sizes, angles and depths are the preset's (``limb_bundles_by_position``).

What it does not do: see the bundles. Their real place varies between patients and a mass
displaces them; the sectors are wide for that reason, the target lesion is left out of them (a
mass pushes the bundle aside, it does not hold it), and the notes say that they are placed by
position. Imported vessels or nerves (``--structures``) replace them: this runs only when the
structures hold no vessel and no nerve. Medial is toward x = 0 of the patient coordinates (the
table's centre line, where the patient lies centred): a bone at x > 0 is in the patient's left
limb. Only axial series are handled (the slices are the grid's k planes); another orientation is
said in the notes and nothing is placed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from ..images import Image
from .registry import StructureClass
from .structures import StructureSet

#: A limb's long bone in an axial slice: its equivalent diameter (mm) lies in this range.
MIN_BONE_MM = 15.0
MAX_BONE_MM = 45.0
#: No other bone of that size within this distance (mm) of its centre (else: a joint or the pelvis).
ALONE_MM = 120.0


def _axial(ct: Image) -> bool:
    a = np.asarray(ct.affine, float)[:3, :3]
    k = a[:, 2] / np.linalg.norm(a[:, 2])
    return abs(k[2]) > 0.97


def limb_bundles(ct: Image, sset: StructureSet, body: np.ndarray, rules: dict[str, Any]) -> list[str]:
    """Add the bundles of ``rules`` (a preset's ``limb_bundles_by_position``) to ``sset`` by
    position; returns the notes to show. Nothing is added where the structures already hold a
    vessel or a nerve, or where no slice shows a limb's single long bone."""
    if any(s.cls in (StructureClass.VESSEL, StructureClass.NERVE) for s in sset):
        return []
    bones = [s for s in sset if s.cls == StructureClass.BONE]
    if not bones:
        return []
    if not _axial(ct):
        return ["limb neurovascular bundles: not placed by position (the series is not axial); import the vessels "
                "and nerves of the limb, or check the path against them on the scan"]
    bone = np.zeros(ct.shape, bool)
    for s in bones:
        bone[s.bbox()] |= s.mask
    lungs = np.zeros(ct.shape[0], bool)
    for s in sset:
        if s.cls in (StructureClass.LUNG, StructureClass.LOBE):
            lungs[s.offset[0]:s.offset[0] + s.mask.shape[0]] |= s.mask.any(axis=(1, 2))
    targets = [s for s in sset if s.cls == StructureClass.TARGET]
    sx, sy = float(ct.spacing[0]), float(ct.spacing[1])
    a = np.asarray(ct.affine, float)
    zones = {key: np.zeros(ct.shape, bool) for key in ("vessels", "nerve")}
    n_slices = 0
    jj, ii = np.indices(ct.shape[1:])
    for k in range(ct.shape[0]):
        if lungs[k] or not bone[k].any():
            continue
        lab, n = ndimage.label(bone[k])
        if n == 0:
            continue
        areas = ndimage.sum_labels(np.ones_like(lab), lab, range(1, n + 1)) * sx * sy
        diam = 2.0 * np.sqrt(areas / math.pi)
        big = [i + 1 for i in range(n) if diam[i] >= MIN_BONE_MM]
        centres = ndimage.center_of_mass(bone[k], lab, big) if big else []
        for label, (cj, ci) in zip(big, centres):
            d = diam[label - 1]
            if d > MAX_BONE_MM:
                continue
            others = [(oj, oi) for other, (oj, oi) in zip(big, centres) if other != label]
            if any(math.hypot((oi - ci) * sx, (oj - cj) * sy) < ALONE_MM for oj, oi in others):
                continue
            c_lps = a[:3, :3] @ np.array([ci, cj, k]) + a[:3, 3]
            medial = np.array([-1.0 if c_lps[0] > 0 else 1.0, 0.0])  # toward x = 0, in (x, y) LPS
            posterior = np.array([0.0, 1.0])
            # in-plane LPS offsets of every voxel of the slice from the bone's centre
            dx = a[0, 0] * (ii - ci) + a[0, 1] * (jj - cj)
            dy = a[1, 0] * (ii - ci) + a[1, 1] * (jj - cj)
            r = np.hypot(dx, dy) + 1e-9
            solid = ndimage.binary_fill_holes(lab == label)  # the cortex and its marrow
            depth = ndimage.distance_transform_edt(~solid, sampling=(sy, sx))
            for key, toward in (("vessels", medial), ("nerve", posterior)):
                rule = rules.get(key)
                if not rule:
                    continue
                cos = (dx * toward[0] + dy * toward[1]) / r
                sector = cos >= math.cos(math.radians(float(rule["sector_deg"])))
                zones[key][k] |= sector & (depth > 0) & (depth <= float(rule["depth_mm"])) & body[k]
            n_slices += 1
    if n_slices == 0:
        return []
    for t in targets:  # a mass displaces the bundle; the bundle is not inside it
        for z in zones.values():
            z[t.bbox()] &= ~t.mask
    notes = []
    for key, cls in (("vessels", StructureClass.VESSEL), ("nerve", StructureClass.NERVE)):
        rule = rules.get(key)
        if not rule or not zones[key].any():
            continue
        name = str(rule["name"])
        sset.add(name, zones[key] & ~bone, cls=cls, source="placed by anatomical position (not seen on the scan)")
        notes.append(f"{name}: PLACED BY ANATOMICAL POSITION, NOT SEEN: the soft tissue within "
                     f"{float(rule['depth_mm']):g} mm of the long bone's surface, {float(rule['sector_deg']):g} degrees "
                     f"either side of its {rule['toward']} side, on {n_slices} slices ({rule.get('why', '')}); avoided "
                     "like a segmented one; import the real vessels and nerves to replace it")
    return notes
