"""Ultrasound-guided mode: the needle lies in the virtual probe's imaging plane."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import ROOT
from planner.cli.main import main
from planner.planning.ultrasound import PLANE_TOL_MM, UltrasoundLimits, place_probes


def flat_skin(step=1.0, half=60.0):
    """A flat skin at z = 0 (the body below, z < 0), outward normal +z."""
    g = np.arange(-half, half + step / 2, step)
    x, y = np.meshgrid(g, g)
    pts = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    return pts, np.tile([0.0, 0.0, 1.0], (len(pts), 1))


def test_probe_on_flat_skin_holds_the_needle_in_its_plane():
    skin, normals = flat_skin()
    target = np.array([0.0, 0.0, -30.0])
    limits = UltrasoundLimits(probe_length_mm=40, max_depth_mm=50, min_needle_angle_deg=15, max_needle_angle_deg=60)
    # entries along +x at 45 and 30 degrees to the skin, one too steep (80) and one too deep target
    entries = np.array([[30.0, 0.0, 0.0], [30.0 / np.tan(np.radians(30)), 0.0, 0.0], [30.0 / np.tan(np.radians(80)), 0, 0]])
    placed = place_probes(entries, np.tile([0.0, 0.0, 1.0], (3, 1)), target, skin, normals, limits)
    assert placed[2] is None  # 80 degrees: the needle is not seen
    for e, p in zip(entries[:2], placed[:2]):
        assert p is not None
        assert abs(np.dot(e - p.centre, p.plane_normal)) <= PLANE_TOL_MM + 1e-9
        assert abs(np.dot(target - p.centre, p.plane_normal)) <= PLANE_TOL_MM + 1e-9
        assert np.allclose(p.looking, [0, 0, -1])
        assert p.long_axis[0] > 0.99  # the marker towards the entry (+x)
        assert abs(p.target_offset_mm) <= 18.0 and p.entry_offset_mm >= 22.0
        assert p.target_depth_mm == pytest.approx(30.0)
    assert placed[0].needle_angle_deg == pytest.approx(45.0)
    deep = place_probes(entries[:1], np.array([[0.0, 0.0, 1.0]]), np.array([0.0, 0.0, -80.0]), skin, normals, limits)
    assert deep[0] is None  # deeper than the probe shows


def test_knee_synovial_biopsy_under_ultrasound(tmp_path):
    out = tmp_path / "plan"
    code = main(["plan", "--ct", str(ROOT / "assets/demo/knee/ct"), "--structures",
                 str(ROOT / "assets/demo/knee/structures.nii.gz"), "--target-label", "knee_effusion_right",
                 "--procedure", "knee-synovial-biopsy", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "plan.json").read_text())
    limits = json.loads((ROOT / "planner/data/presets/knee-synovial-biopsy.json").read_text())["ultrasound"]
    tgt = np.array(doc["target"]["point"])
    for t in doc["trajectories"]:
        p = t["ultrasound_probe"]
        c, m = np.array(p["centre"]), np.array(p["plane_normal"])
        e = np.array(t["entry"])
        # the whole needle is in the imaging plane (rounding of the written numbers allowed)
        assert abs(np.dot(e - c, m)) <= PLANE_TOL_MM + 0.05 and abs(np.dot(tgt - c, m)) <= PLANE_TOL_MM + 0.05
        axis, look = np.array(p["long_axis_towards_entry"]), np.array(p["looking"])
        assert abs(np.dot(axis, m)) < 0.02 and abs(np.dot(look, m)) < 0.02 and abs(np.dot(axis, look)) < 0.02
        assert 0 < p["target_depth_mm"] <= limits["max_depth_mm"]
        assert abs(p["target_offset_mm"]) <= limits["probe_length_mm"] / 2
        assert p["entry_from_probe_centre_mm"] >= limits["probe_length_mm"] / 2
        assert limits["min_needle_angle_deg"] - 0.05 <= p["needle_angle_to_skin_deg"] <= limits["max_needle_angle_deg"] + 0.05
        assert np.dot(e - c, axis) > 0  # the marker points at the entry
    view = np.asarray(PILImage.open(out / "images" / "probe_plane.png").convert("L"), float)
    assert view.std() > 20  # not blank
