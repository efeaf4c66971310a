"""The needle detector of check scans against simulated needles with known truth, in real scans.

Each case: a random plausible needle (entry on the skin, tip 30-120 mm deep, a random gauge of
14-22 G, up to 35 degrees out of the axial plane), the patient moved by a random rigid transform
of up to 3 mm and 3 degrees, the check scan cropped to 10-20 slices around the tip, streaks and
noise (:mod:`planner.testing.needle_sim`). What the doctor relies on (the issue's bound): the tip
within 1.5 mm and the axis within 1.5 degrees, in every check, on the chest CT (0.98 mm pixels, 2 mm
slices), the abdomen CT (3 mm voxels) and the demo knee (0.8 mm pixels, 1.5 mm slices), and no
needle where there is none. The default runs hold short seeded campaigns; the full campaigns of 20
checks per region (the seeds of ``benchmarks/needle.py``, which prints their distributions) are
marked long (make test-long). ``-s`` prints the distributions.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ABDOMEN_CT, CHEST_CT, ROOT

from planner.anatomy.autoseg import body_mask
from planner.checks.needle import find_needles, survey_metal
from planner.images import Image, load_image
from planner.testing.needle_sim import (
    AXIS_BOUND_DEG,
    GAUGE_OD_MM,
    TIP_BOUND_MM,
    campaign,
    insert_needle,
    random_needle,
    simulate_check,
    summary,
)

KNEE_CT = ROOT / "assets" / "demo" / "knee" / "ct"


@pytest.fixture(scope="module")
def chest():
    ct = load_image(CHEST_CT)
    return ct, body_mask(ct)


@pytest.fixture(scope="module")
def knee():
    ct = load_image(KNEE_CT)
    return ct, body_mask(ct)


@pytest.fixture(scope="module")
def abdomen():
    ct = load_image(ABDOMEN_CT)
    return ct, body_mask(ct)


def _assert_within_bounds(name, results):
    """Every check within the issue's bounds (tip 1.5 mm, axis 1.5 degrees), and no false needle."""
    print("\n" + summary(name, results))
    off = [(i, r) for i, r in enumerate(results) if not r.within]
    assert not off, f"{name}: off the bounds ({TIP_BOUND_MM} mm, {AXIS_BOUND_DEG} deg): {off}"
    false = [(i, r) for i, r in enumerate(results) if r.false_found]
    assert not false, f"{name}: false needles: {false}"


@pytest.mark.shared_data
def test_chest_needles_found_with_tip_and_axis(chest):
    ct, body = chest
    _assert_within_bounds("chest (seeded, 6)", campaign(ct, 6, seed=11, body=body))


def test_knee_needles_found_with_tip_and_axis(knee):
    ct, body = knee
    _assert_within_bounds("knee (seeded, 12)", campaign(ct, 12, seed=5, body=body))


@pytest.mark.shared_data
def test_abdomen_needles_found_with_tip_and_axis(abdomen):
    """3 mm voxels: a 22 G needle fills 4 % of a voxel."""
    ct, body = abdomen
    _assert_within_bounds("abdomen (seeded, 6)", campaign(ct, 6, seed=7, body=body))


@pytest.mark.long
@pytest.mark.shared_data
def test_chest_campaign_full(chest):
    ct, body = chest
    _assert_within_bounds("chest (20, as benchmarks/needle.py)", campaign(ct, 20, seed=100, body=body))


@pytest.mark.long
@pytest.mark.shared_data
def test_abdomen_campaign_full(abdomen):
    ct, body = abdomen
    _assert_within_bounds("abdomen (20, as benchmarks/needle.py)", campaign(ct, 20, seed=101, body=body))


@pytest.mark.long
def test_knee_campaign_full(knee):
    ct, body = knee
    _assert_within_bounds("knee (20, as benchmarks/needle.py)", campaign(ct, 20, seed=102, body=body))


def test_two_needles_both_listed(knee):
    ct, body = knee
    rng = np.random.default_rng(3)
    paths = []
    while len(paths) < 2:
        hub, _, tip = random_needle(ct, body, rng)
        if all(np.linalg.norm(tip - t) > 30 for _, t in paths):
            paths.append((hub, tip))
    img = insert_needle(ct, *paths[0], GAUGE_OD_MM[17], rng=rng)  # the needle
    img = insert_needle(img, *paths[1], GAUGE_OD_MM[14], rng=rng)  # a coaxial introducer left in
    found = find_needles(img)
    assert len(found) == 2
    for hub, tip in paths:
        f = min(found, key=lambda f: np.linalg.norm(f.tip_lps - tip))
        u = (tip - hub) / np.linalg.norm(tip - hub)
        assert np.linalg.norm(f.tip_lps - tip) <= TIP_BOUND_MM
        assert np.degrees(np.arccos(np.clip(f.direction_lps @ u, -1, 1))) <= AXIS_BOUND_DEG


def test_tip_beyond_the_scan_is_reported_so(knee):
    """A check scan that stops short of the tip: the deepest visible metal is given, and the
    finding says the tip is not in the scan."""
    ct, body = knee
    rng = np.random.default_rng(4)
    hub, _, tip = random_needle(ct, body, rng)
    k_tip = float(ct.lps_to_ijk(tip)[2])
    k_hub = float(ct.lps_to_ijk(hub)[2])
    if abs(k_tip - k_hub) < 8:  # steep enough to leave a slab through its top or bottom
        pytest.skip("needle too flat for this test")
    # the slab: the hub side of the needle, ending 6 slices short of the tip
    k0, k1 = (0, int(k_tip) - 5) if k_tip > k_hub else (int(k_tip) + 6, ct.shape[0])
    img = insert_needle(ct, hub, tip, GAUGE_OD_MM[18], rng=rng)
    aff = np.array(ct.affine, float)
    aff[:3, 3] = aff[:3, :3] @ np.array([0, 0, k0]) + aff[:3, 3]
    slab = Image(np.asarray(img.voxels)[k0:k1], aff, ct.meta)
    found = find_needles(slab)
    assert len(found) == 1
    f = found[0]
    assert any("tip" in n and "not in the scan" in n or "beyond the scan" in n for n in f.notes), f.notes
    u = (tip - hub) / np.linalg.norm(tip - hub)
    assert np.degrees(np.arccos(np.clip(f.direction_lps @ u, -1, 1))) <= AXIS_BOUND_DEG
    # the tip given is where the metal leaves the scan, on the needle's line
    assert abs(float(slab.lps_to_ijk(f.tip_lps)[2]) - (slab.shape[0] - 0.5 if k_tip > k_hub else -0.5)) < 1.0
    off_line = f.tip_lps - hub - float((f.tip_lps - hub) @ u) * u
    assert np.linalg.norm(off_line) <= TIP_BOUND_MM


@pytest.mark.shared_data
def test_no_needle_gives_empty_list(chest, knee):
    # the chest CT holds two small skin markers (about 3000 HU): metal, but not needles
    survey = survey_metal(chest[0])
    assert survey.needles == []
    assert len(survey.others) == 2 and all("compact" in o.reason for o in survey.others)
    assert find_needles(knee[0]) == []


@pytest.mark.shared_data
def test_bone_edges_are_not_needles(abdomen):
    """3 mm voxels: the laminae, the iliac crests and the ribs show thin straight bright lines of
    several hundred HU, as a thin needle does; with no needle in, none is reported, in the whole
    scan and in check-scan slabs of 15 slices through the spine and the pelvis."""
    ct, _ = abdomen
    assert find_needles(ct) == []
    aff = np.array(ct.affine, float)
    for k0 in (5, 35, 65, 95):
        slab_aff = aff.copy()
        slab_aff[:3, 3] = aff[:3, :3] @ np.array([0, 0, k0]) + aff[:3, 3]
        slab = Image(np.asarray(ct.voxels)[k0:k0 + 15], slab_aff, ct.meta)
        assert find_needles(slab) == [], f"slab at slice {k0}"


@pytest.mark.shared_data
def test_metal_bead_is_not_a_needle(chest):
    ct, body = chest
    rng = np.random.default_rng(8)
    hub, _, tip = random_needle(ct, body, rng)
    check, truth = simulate_check(ct, hub, tip, rng, outer_diameter_mm=GAUGE_OD_MM[18])
    # a 3 mm steel bead (a fiducial marker) 20 mm beside the tip: a short cylinder as long as wide
    side = np.cross(truth.direction_check, [0, 0, 1.0])
    side /= np.linalg.norm(side)
    c = truth.tip_check + 20 * side
    with_bead = insert_needle(check, c - [0, 0, 1.5], c + [0, 0, 1.5], 3.0, rng=rng, streaks=False)
    survey = survey_metal(with_bead)
    assert len(survey.needles) == 1
    assert np.linalg.norm(survey.needles[0].tip_lps - truth.tip_check) <= TIP_BOUND_MM
    assert any(np.linalg.norm(o.centre_lps - c) < 3 and "compact" in o.reason for o in survey.others)
