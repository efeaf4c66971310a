"""The deviation figures of a check scan, against an independent computation.

Each figure is computed here a second way (cross products, a line-plane intersection solved as
a linear system, atan2 of sine and cosine), on random plans and needles, and on hand-made cases
whose answer is known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.anatomy.structures import StructureSet
from planner.checks.compare import HIT_MARGIN_MM, deviation, direction_change
from planner.checks.correct import MAX_REDIRECT_DEG, PIVOT_DEPTH_MM, PLEURA_STANDOFF_MM, choose_correction
from planner.images import Image
from planner.planning.presets import load_preset


def _independent(entry, target, tip, u):
    w = (target - entry) / np.linalg.norm(target - entry)
    angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(u, w)), u @ w))
    lateral = np.linalg.norm(np.cross(tip - entry, w))
    depth_reached = np.dot(tip - entry, w)
    # the point of the line tip + s u on the plane through the target normal to w
    a = np.array([[u @ w]])
    s = np.linalg.solve(a, np.array([(target - tip) @ w]))[0]
    miss = np.linalg.norm(tip + s * u - target)
    return angle, lateral, depth_reached, miss


def test_random_needles_agree_with_an_independent_computation():
    rng = np.random.default_rng(14)
    for _ in range(300):
        entry = rng.uniform(-150, 150, 3)
        v = rng.normal(size=3)
        target = entry + rng.uniform(30, 120) * v / np.linalg.norm(v)
        w = (target - entry) / np.linalg.norm(target - entry)
        u = w + rng.normal(scale=0.15, size=3)
        u /= np.linalg.norm(u)
        tip = entry + rng.uniform(0.2, 1.2) * np.linalg.norm(target - entry) * u + rng.normal(scale=1.0, size=3)
        dev = deviation(entry, target, tip, u, target_diameter_mm=20.0)
        angle, lateral, reached, miss = _independent(entry, target, tip, u)
        assert dev.angle_deg == pytest.approx(angle, abs=1e-6)
        assert dev.lateral_offset_mm == pytest.approx(lateral, abs=1e-6)
        assert dev.depth_reached_mm == pytest.approx(reached, abs=1e-6)
        assert dev.remaining_mm == pytest.approx(np.linalg.norm(target - entry) - reached, abs=1e-6)
        assert dev.predicted_miss_mm == pytest.approx(miss, abs=1e-6)
        assert dev.target_hit == (miss <= 10.0 - HIT_MARGIN_MM)


def _room(lung_from_mm=None, bone=None):
    """A block of soft tissue (1 mm voxels, x -60..60, y -10..129, z -40..40 LPS mm), entered at
    the origin going posterior (+y); optionally aerated lung from a depth on, and a bone box."""
    shape = (81, 140, 121)  # k (z), j (y), i (x)
    affine = np.eye(4)
    affine[:3, 3] = [-60.0, -10.0, -40.0]
    image = Image(np.zeros(shape, np.int16), affine)
    sset = StructureSet.for_image(image)
    body = np.zeros(shape, bool)
    body[:, 10:, :] = True  # the skin at y = 0
    sset.add("body", body, cls="body")
    if lung_from_mm is not None:
        lung = np.zeros(shape, bool)
        lung[:, 10 + lung_from_mm:, :] = True
        sset.add("lung_right", lung, cls="lung")
    if bone is not None:
        m = np.zeros(shape, bool)
        (x0, x1), (y0, y1), (z0, z1) = bone
        m[z0 + 40:z1 + 40, y0 + 10:y1 + 10, x0 + 60:x1 + 60] = True
        sset.add("rib_right_5", m, cls="bone")
    return image, sset


def _correct(tip, u, lung_from_mm=None, bone=None, replan=None, target=(0.0, 100.0, 0.0), diameter=18.0):
    image, sset = _room(lung_from_mm, bone)
    entry, target = np.zeros(3), np.asarray(target, float)
    tip, u = np.asarray(tip, float), np.asarray(u, float) / np.linalg.norm(u)
    dev = deviation(entry, target, tip, u, diameter)
    return dev, choose_correction(dev, entry=entry, tip=tip, u=u, target=target, structures=sset, image=image,
                                  preset=load_preset("lung-biopsy"), extension_ok=True, replan=replan)


def test_known_cases():
    # on the line, 60 mm in: advance 40 mm
    dev, c = _correct([0, 60, 0], [0, 1, 0])
    assert (dev.angle_deg, dev.lateral_offset_mm, dev.remaining_mm, dev.predicted_miss_mm) == (0, 0, 40, 0)
    assert c.action == "advance" and c.text == "advance 40 mm along the current axis"
    # 5 degrees toward the patient's left (+x): at 100 mm depth the tip is 100 tan(5 deg) = 8.75 mm off
    u = np.array([np.sin(np.radians(5)), np.cos(np.radians(5)), 0.0])
    dev, c = _correct(60 / np.cos(np.radians(5)) * u, u)
    assert dev.angle_deg == pytest.approx(5.0)
    assert dev.lateral_offset_mm == pytest.approx(60 * np.tan(np.radians(5)))
    assert dev.predicted_miss_mm == pytest.approx(100 * np.tan(np.radians(5)))
    assert not dev.target_hit  # 8.7 mm off an 18 mm lesion's centre: beyond 9 - 2 mm
    # withdrawn to the pivot (15 mm under the skin, on the needle) the target lies at
    # atan2(-15 sin 5, 100 - 15 cos 5) from +y: the turn is 5 degrees plus that
    pivot = PIVOT_DEPTH_MM * u
    want = 5.0 - np.degrees(np.arctan2(-pivot[0], 100 - pivot[1]))
    assert c.action == "redirect" and c.withdraw_to_mm == pytest.approx(PIVOT_DEPTH_MM)
    assert c.redirect["toward_left_change_deg"] == pytest.approx(-want)
    assert c.redirect["advance_after_mm"] == pytest.approx(np.linalg.norm([0, 100, 0] - pivot))
    assert f"withdraw the tip to 15 mm from the skin, redirect {want:.0f} degrees more toward the patient's right" \
        in c.text and f"advance {np.linalg.norm([0, 100, 0] - pivot):.0f} mm to the target" in c.text
    # past the target on the line: withdraw
    dev, c = _correct([0, 104, 0], [0, 1, 0])
    assert dev.remaining_mm == -4 and c.action == "withdraw" and c.text.startswith("withdraw 4 mm along the current")
    # at the target: nothing to do
    dev, c = _correct([0, 99.5, 0.3], [0, 1, 0])
    assert c.action == "none"


def test_an_unsafe_advance_is_not_proposed():
    image, sset = _room()
    entry, target, tip, u = np.zeros(3), np.array([0, 100.0, 0]), np.array([0, 60.0, 0]), np.array([0, 1.0, 0])
    dev = deviation(entry, target, tip, u, 18.0)
    c = choose_correction(dev, entry=entry, tip=tip, u=u, target=target, structures=sset, image=image,
                          preset=load_preset("lung-biopsy"), extension_ok=False)
    assert c.action != "advance" and "closer than its margin" in c.considered[0]
    c = choose_correction(dev, entry=entry, tip=tip, u=u, target=target, structures=sset, image=image,
                          preset=load_preset("lung-biopsy"), extension_ok=False,
                          extension_why="lung_vessels at 2.2 mm (needs 2.7)")
    assert c.action != "advance" and "passes lung_vessels at 2.2 mm (needs 2.7)" in c.considered[0]


def test_the_pivot_stays_short_of_the_pleura():
    # aerated lung from 12 mm under the skin: the tip (60 mm deep) is through the pleura; the
    # needle is withdrawn into the chest wall, 5 mm short of it, and the second puncture is said
    u = np.array([np.sin(np.radians(6)), np.cos(np.radians(6)), 0.0])
    dev, c = _correct(60 * u, u, lung_from_mm=12)
    assert c.action == "redirect"
    # the lung starts at y = 12; the pivot's depth on the needle is where y = 12 - 5, within the
    # voxel grid's rounding (the depth is found by 0.5 mm steps on 1 mm voxels)
    assert c.withdraw_to_mm == pytest.approx((12 - PLEURA_STANDOFF_MM) / np.cos(np.radians(6)), abs=1.0)
    assert "short of the pleura" in c.text and "second time" in c.text


def test_a_redirect_through_bone_falls_back_to_a_new_trajectory_or_says_none_is_safe():
    # 8 degrees off toward the left, tip 30 mm deep (x 4.2 there); a rib across the planned line
    # (x -3..3, y 60..66), which the redirected line to the target must cross: not a redirect
    u = np.array([np.sin(np.radians(8)), np.cos(np.radians(8)), 0.0])
    asked = []

    def replan(point, radius):
        asked.append((np.asarray(point), radius))
        return [], {"bone": 30, "craniocaudal_angle": 10}, 40

    dev, c = _correct(30 * u, u, bone=((-3, 3), (60, 66), (-3, 3)), replan=replan)
    assert not dev.target_hit and c.action == "no_safe_correction"
    assert "rib_right_5" in " ".join(c.considered)
    assert asked and np.allclose(asked[0][0], 0.0) and "bone 75%" in c.considered[-1]
    assert "withdraw the needle and re-plan" in c.text


def test_a_turn_beyond_the_limit_is_not_a_redirect():
    a = MAX_REDIRECT_DEG + 4
    u = np.array([np.sin(np.radians(a)), np.cos(np.radians(a)), 0.0])
    dev, c = _correct(50 * u, u, replan=lambda p, r: ([], {}, 0))
    assert c.action == "no_safe_correction" and "a turn of" in c.considered[-2]


def test_craniocaudal_redirect_is_named_by_direction():
    turn = direction_change([0, 1, 0], [0, np.cos(np.radians(4)), -np.sin(np.radians(4))])
    assert turn["craniocaudal_change_deg"] == pytest.approx(-4.0)  # the tip must head 4 degrees caudal
    assert turn["toward_left_change_deg"] == pytest.approx(0.0, abs=1e-9)


def test_a_needle_across_the_plan_never_counts_as_a_hit():
    dev = deviation([0, 0, 0], [0, 100, 0], [0, 50, 0], [1, 0, 0], 40.0)
    assert dev.angle_deg == pytest.approx(90.0) and not dev.target_hit


def test_one_degree_is_singular():
    # 1.2 degrees cranial with the tip 5 mm deep (the pivot): a turn of 1.26 degrees, said "1 degree"
    u = np.array([0.0, np.cos(np.radians(1.2)), np.sin(np.radians(1.2))])
    dev = deviation([0, 0, 0], [0, 100, 0], 5 * u, u, 1.0)
    assert "1 degree more caudal" in choose_correction(
        dev, entry=np.zeros(3), tip=5 * u, u=u, target=np.array([0, 100.0, 0]), structures=_room()[1],
        image=_room()[0], preset=load_preset("lung-biopsy"), extension_ok=True).text


def test_a_segmented_target_is_hit_on_its_voxels():
    # a cube lesion of voxels x, y, z in -10..10 around (0, 100, 0) (1 mm voxels): depth inside is
    # the distance to the first voxel outside (x = 11): a predicted tip 8 mm off is 3 mm inside
    # (hit, 2 mm needed), 9.5 mm off is on the face voxel, 1 mm inside (missed)
    from planner.checks.compare import depth_inside, hit_structure

    image, sset = _room()
    m = np.zeros(image.shape, bool)
    m[30:51, 100:121, 50:71] = True  # z -10..10, y 90..110, x -10..10
    lesion = sset.add("lung_nodule", m, cls="target")
    assert depth_inside(lesion.mask, lesion.offset, image.affine, [0, 100, 0]) == pytest.approx(11.0)
    assert depth_inside(lesion.mask, lesion.offset, image.affine, [0, 50, 0]) == 0.0
    for off, hit in ((7.0, True), (8.0, True), (9.5, False), (12.0, False)):
        u = np.array([off, 100.0, 0]) / np.linalg.norm([off, 100.0, 0])
        dev = hit_structure(deviation([0, 0, 0], [0, 100, 0], 50 * u, u, 24.8), lesion, image.affine, [0, 100, 0])
        assert dev.target_hit is hit and dev.hit_by == "lung_nodule", off
