"""The image type: validation, geometry, identity."""

import numpy as np
import pytest

from planner.errors import GeometryError
from planner.images import Image
from planner.images.geometry import axis_codes


def oblique_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    a = np.eye(4)
    a[:3, 0] = [0.8 * c, 0.8 * s, 0]
    a[:3, 1] = [-0.9 * s, 0.9 * c, 0]
    a[:3, 2] = [0, 0, 2.5]
    a[:3, 3] = [-100, 50, -30]
    return a


def test_lps_round_trip_and_derived_geometry():
    im = Image(np.zeros((4, 5, 6), np.int16), oblique_affine())
    assert im.shape == (4, 5, 6) and im.size_ijk == (6, 5, 4)
    assert np.allclose(im.spacing, [0.8, 0.9, 2.5])
    assert np.allclose(im.origin, [-100, 50, -30])
    pts = np.array([[0, 0, 0], [5, 4, 3], [2.5, 1.5, 0.5]])
    assert np.allclose(im.lps_to_ijk(im.ijk_to_lps(pts)), pts)
    # voxel (i=5, j=0, k=0) lies 5 column steps along the row direction
    assert np.allclose(im.ijk_to_lps([5, 0, 0]), im.origin + 5 * im.affine[:3, 0])
    assert im.corners().shape == (8, 3)


@pytest.mark.parametrize(
    "affine, message",
    [
        (np.eye(3), "4x4"),
        (np.diag([1, 1, 0, 1.0]), "zero-length"),
        (np.array([[1, 0.2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "not orthogonal"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
        (np.diag([1, np.nan, 1, 1]), "NaN"),
    ],
)
def test_invalid_affines_are_refused(affine, message):
    with pytest.raises(GeometryError, match=message):
        Image(np.zeros((2, 2, 2)), affine)


def test_voxels_are_read_only_and_2d_is_refused():
    im = Image(np.zeros((2, 3, 4), np.int16), np.eye(4))
    with pytest.raises(ValueError):
        im.voxels[0, 0, 0] = 1
    with pytest.raises(GeometryError, match="3D"):
        Image(np.zeros((3, 4)), np.eye(4))


def test_hash_identifies_voxels_and_geometry():
    v = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    a = Image(v, np.eye(4))
    assert a.sha256 == Image(v.copy(), np.eye(4)).sha256
    moved = np.eye(4)
    moved[0, 3] = 0.5
    assert a.sha256 != Image(v, moved).sha256
    w = v.copy()
    w[1, 2, 3] += 1
    assert a.sha256 != Image(w, np.eye(4)).sha256


def test_axis_codes_name_patient_directions():
    assert axis_codes(np.diag([1, 1, 1, 1.0])) == "LPS"
    assert axis_codes(np.diag([-1, -1, 1, 1.0])) == "RAS"
    sag = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
    assert axis_codes(sag) == "PIL"
