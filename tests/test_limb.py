"""Neurovascular bundles of a limb placed by anatomical position (planner.anatomy.limb).

A synthetic thigh: a cylinder of soft tissue around a femur (a bone tube 28 mm across) at
x = +80 mm (the patient's left limb), on an axial grid. Where the sectors must fall is worked out
here from the definitions (medial = toward x = 0, posterior = +y), not from the code.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.anatomy.limb import limb_bundles
from planner.anatomy.structures import StructureSet
from planner.images import Image
from planner.planning import load_preset

RULES = load_preset("soft-tissue-biopsy").raw["limb_bundles_by_position"]


def _thigh(second_bone_at: float | None = None):
    shape = (20, 160, 160)
    aff = np.eye(4)
    aff[:3, :3] = np.diag([1.0, 1.0, 3.0])
    aff[:3, 3] = [0.0, -80.0, -100.0]  # x 0..159, y -80..79
    kk, jj, ii = np.indices(shape)
    x, y = ii + 0.0, jj - 80.0
    r_femur = np.hypot(x - 80.0, y)
    body = np.hypot(x - 80.0, y) <= 78.0
    bone = (r_femur <= 14.0) & (r_femur >= 8.0)
    if second_bone_at is not None:
        r2 = np.hypot(x - second_bone_at, y)
        bone |= (r2 <= 14.0) & (r2 >= 8.0)
    ct = Image(np.where(bone, 1200, np.where(body, 40, -1000)).astype(np.int16), aff)
    sset = StructureSet.for_image(ct)
    sset.add("bone", bone)
    return ct, sset, body, x, y


def test_vessels_medial_and_nerve_posterior_of_the_femur_with_the_notes():
    ct, sset, body, x, y = _thigh()
    notes = limb_bundles(ct, sset, body, RULES)
    vessels, nerve = sset.mask("limb_vessels_by_position"), sset.mask("limb_nerve_by_position")
    assert vessels.any() and nerve.any()
    dx, dy = x - 80.0, y
    r = np.hypot(dx, dy)
    # medial (toward x = 0: -x here), within 70 degrees of it, up to 40 mm beyond the bone's 14 mm radius
    ang_medial = np.degrees(np.arccos(np.clip(-dx / np.maximum(r, 1e-9), -1, 1)))
    assert np.all(ang_medial[vessels] <= 70.0 + 3.0) and np.all(r[vessels] <= 14.0 + 40.0 + 1.5)
    assert np.all(r[vessels] > 14.0 - 0.5)  # soft tissue, not the bone
    want = (ang_medial <= 67.0) & (r >= 16.0) & (r <= 14.0 + 38.0) & body
    assert vessels[want].mean() > 0.99
    ang_post = np.degrees(np.arccos(np.clip(dy / np.maximum(r, 1e-9), -1, 1)))
    assert np.all(ang_post[nerve] <= 40.0 + 3.0) and np.all(r[nerve] <= 14.0 + 50.0 + 1.5)
    # nothing on the lateral or anterior side
    assert not vessels[(dx > 5) | (ang_medial > 75)].any() and not nerve[dy < -5].any()
    assert len(notes) == 2 and all("PLACED BY ANATOMICAL POSITION, NOT SEEN" in n for n in notes)


def test_nothing_is_placed_where_vessels_are_imported_or_the_bone_is_not_a_lone_long_bone():
    ct, sset, body, x, y = _thigh()
    sset.add("femoral_artery", (np.hypot(x - 50.0, y) < 3) & body, cls="vessel")
    assert limb_bundles(ct, sset, body, RULES) == [] and "limb_vessels_by_position" not in sset
    ct, sset, body, _, _ = _thigh(second_bone_at=150.0)  # another bone 70 mm away: a joint, not a shaft
    assert limb_bundles(ct, sset, body, RULES) == [] and "limb_nerve_by_position" not in sset


@pytest.mark.parametrize("femur_x, medial_sign", [(80.0, -1.0)])
def test_a_target_lesion_is_left_out_of_the_sectors(femur_x, medial_sign):
    ct, sset, body, x, y = _thigh()
    lesion = (np.hypot(x - (femur_x + medial_sign * 30.0), y) < 8.0) & body
    sset.add("mass", lesion, cls="target")
    limb_bundles(ct, sset, body, RULES)
    assert not (sset.mask("limb_vessels_by_position") & lesion).any()
