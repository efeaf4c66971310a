"""The deviation figures of a check scan, against an independent computation.

Each figure is computed here a second way (cross products, a line-plane intersection solved as
a linear system, atan2 of sine and cosine), on random plans and needles, and on hand-made cases
whose answer is known by construction.
"""

from __future__ import annotations

import numpy as np
import pytest

from planner.checks.compare import HIT_MARGIN_MM, correction, deviation, direction_change


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


def test_known_cases():
    entry, target = np.array([0.0, 0.0, 0.0]), np.array([0.0, 100.0, 0.0])  # straight posterior, 100 mm
    # on the line, 60 mm in: advance 40 mm
    dev = deviation(entry, target, [0, 60, 0], [0, 1, 0], 18.0)
    assert (dev.angle_deg, dev.lateral_offset_mm, dev.remaining_mm, dev.predicted_miss_mm) == (0, 0, 40, 0)
    c = correction(dev, entry, [0, 60, 0], [0, 1, 0], target)
    assert c.action == "advance" and c.text == "advance 40 mm along the current axis"
    # 5 degrees toward the patient's left (+x): at 100 mm depth the tip is 100 tan(5 deg) = 8.75 mm off
    u = np.array([np.sin(np.radians(5)), np.cos(np.radians(5)), 0.0])
    dev = deviation(entry, target, 60 / np.cos(np.radians(5)) * u, u, 18.0)
    assert dev.angle_deg == pytest.approx(5.0)
    assert dev.lateral_offset_mm == pytest.approx(60 * np.tan(np.radians(5)))
    assert dev.predicted_miss_mm == pytest.approx(100 * np.tan(np.radians(5)))
    assert not dev.target_hit  # 8.7 mm off an 18 mm lesion's centre: beyond 9 - 2 mm
    c = correction(dev, entry, 60 / np.cos(np.radians(5)) * u, u, target)
    assert c.action == "redirect"
    assert c.redirect["toward_left_change_deg"] == pytest.approx(-5.0)
    assert "5 degrees more toward the patient's right" in c.text
    # past the target on the line: withdraw
    dev = deviation(entry, target, [0, 104, 0], [0, 1, 0], 18.0)
    c = correction(dev, entry, [0, 104, 0], [0, 1, 0], target)
    assert dev.remaining_mm == -4 and c.action == "withdraw" and c.text == "withdraw 4 mm along the current axis"
    # at the target: nothing to do
    c = correction(deviation(entry, target, [0, 99.5, 0.3], [0, 1, 0], 18.0), entry, [0, 99.5, 0.3], [0, 1, 0],
                   target)
    assert c.action == "none"


def test_craniocaudal_redirect_is_named_by_direction():
    turn = direction_change([0, 1, 0], [0, np.cos(np.radians(4)), -np.sin(np.radians(4))])
    assert turn["craniocaudal_change_deg"] == pytest.approx(-4.0)  # the tip must head 4 degrees caudal
    assert turn["toward_left_change_deg"] == pytest.approx(0.0, abs=1e-9)


def test_a_needle_across_the_plan_never_counts_as_a_hit():
    dev = deviation([0, 0, 0], [0, 100, 0], [0, 50, 0], [1, 0, 0], 40.0)
    assert dev.angle_deg == pytest.approx(90.0) and not dev.target_hit


def test_one_degree_is_singular():
    u = np.array([0.0, np.cos(np.radians(1)), np.sin(np.radians(1))])
    dev = deviation([0, 0, 0], [0, 100, 0], 50 * u, u, 4.0)
    assert "1 degree more caudal" in correction(dev, [0, 0, 0], 50 * u, u, [0, 100, 0]).text
