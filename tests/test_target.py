"""Targets: a point, a named structure, a lesion grown from a seed."""

from __future__ import annotations

import numpy as np
import pytest

from planner.anatomy import load_structures
from planner.anatomy.target import parse_point, target_at_point, target_from_structure
from planner.demo import demo_cases
from planner.errors import InputError
from planner.images import load_image


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    ct = load_image(case.ct)
    return case, ct, load_structures(case.folder / case.info["structures"], ct)


@pytest.mark.parametrize("text, expected", [("-82,82,-8", [-82, 82, -8]), (" 1.5, -.5 ,3 ", [1.5, -0.5, 3])])
def test_points_parse_with_negative_numbers(text, expected):
    assert np.allclose(parse_point(text), expected)


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "1,2,3,4", ""])
def test_malformed_points_are_refused(text):
    with pytest.raises(InputError, match="three numbers"):
        parse_point(text)


def test_point_outside_the_scan_is_refused(thorax):
    _, ct, _ = thorax
    with pytest.raises(InputError, match="outside the scan"):
        target_at_point(ct, [0, 0, 900])


def test_named_nodule_gives_its_centre_and_size(thorax):
    case, ct, sset = thorax
    t = target_from_structure(ct, sset, "lung_nodule")
    assert t.how == "structure" and t.label == "lung_nodule"
    # The phantom's nodule: 18 mm across, centred at the case's target point.
    assert np.linalg.norm(np.array(t.point) - case.target_lps) < max(ct.spacing)
    assert 16.0 < t.diameter_mm < 20.0
    assert 16.0 < t.max_diameter_mm < 22.0
    assert abs(t.volume_ml - 4 / 3 * np.pi * 0.9**3) < 0.6
    with pytest.raises(InputError, match="not in the structure set"):
        target_from_structure(ct, sset, "no_such_thing")


def test_seed_grows_the_phantom_nodule(thorax):
    from planner.anatomy.target import target_from_seed

    case, ct, sset = thorax
    seed = np.array(case.target_lps) + [2.0, -2.0, 2.5]  # a click near, not at, the centre
    t = target_from_seed(ct, seed, label="lung_nodule")
    assert t.how == "seed" and t.structure is not None
    truth = sset["lung_nodule"].voxel_count
    assert abs(t.structure.voxel_count - truth) / truth < 0.2
    assert 15.0 < t.diameter_mm < 21.0
    assert np.linalg.norm(np.array(t.point) - case.target_lps) < 2 * max(ct.spacing)
