"""The planner's shortcuts give the same answers as the plain way.

The engine prepares only the slab of the body a needle can reach within the craniocaudal
limit, smooths the body only where its normal is needed, and checks exactly only the stretch
of a path the distance fields could not decide. Each shortcut is compared here with the
plain computation on the demo thorax and on hand-built shapes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from planner.anatomy.target import target_at_point, target_from_structure
from planner.planning import load_preset, plan, prepare
from planner.planning import fields as F


def test_the_craniocaudal_slab_loses_no_candidate(demo_thorax):
    """Skin beyond the prepared slab is still counted, under the craniocaudal limit."""
    ct, sset, body = demo_thorax
    preset = load_preset("lung-biopsy")
    assert preset.max_craniocaudal_deg < 90
    target = target_from_structure(ct, sset, "lung_nodule")
    limited = plan(ct, sset, target, preset, body)
    free = plan(ct, sset, target, dataclasses.replace(preset, max_craniocaudal_deg=90.0), body)
    assert limited.n_candidates == free.n_candidates
    # the same skin points, each either steeper than the limit or judged the same way
    a = {tuple(np.round(e, 3)): r for e, r in zip(limited.risk_map["entries"], limited.risk_map["reason"])}
    b = {tuple(np.round(e, 3)): r for e, r in zip(free.risk_map["entries"], free.risk_map["reason"])}
    assert a.keys() == b.keys()
    cc_limit = np.radians(preset.max_craniocaudal_deg)
    tgt = np.asarray(target.point)
    for e, why in a.items():
        v = tgt - np.array(e)
        steep = abs(v[2]) / np.linalg.norm(v) > np.sin(cc_limit)
        if steep:
            assert why == "craniocaudal_angle"
        else:
            assert why == b[e], (e, why, b[e])
    assert limited.rejected["craniocaudal_angle"] > 0


def test_skin_normals_point_out_of_a_ball():
    """The local smoothed gradient is the gradient of the whole smoothed mask, and points inwards."""
    n = 41
    k, j, i = np.mgrid[:n, :n, :n]
    sp = np.array([1.0, 1.0, 2.0])  # i, j, k
    r = np.sqrt(((i - 20) * sp[0]) ** 2 + ((j - 20) * sp[1]) ** 2 + ((k - 20) * sp[2]) ** 2)
    ball = r <= 15.0
    surface = np.argwhere(ball & ~ndimage.binary_erosion(ball))
    g = F.smoothed_gradient(ball.view(np.uint8), surface, sp, 2.0, 5.0)
    radial = (surface[:, ::-1] - 20) * sp  # i, j, k in mm
    cos = -(g * radial).sum(axis=1) / np.linalg.norm(g, axis=1) / np.linalg.norm(radial, axis=1)
    assert np.all(cos > 0.95)  # the outward normal (minus the gradient) is radial
    # against the whole-volume filter (sigma per axis in voxels), gradient by central differences
    smooth = ndimage.gaussian_filter(ball.astype(float), sigma=2.0 / sp[::-1], truncate=2.5)
    gk, gj, gi = np.gradient(smooth, *sp[::-1])
    full = np.stack([gi, gj, gk], axis=-1)[tuple(surface.T)]
    cos2 = (g * full).sum(axis=1) / np.linalg.norm(g, axis=1) / np.linalg.norm(full, axis=1)
    assert np.all(cos2 > 0.99)


def test_no_skin_at_the_edge_of_the_scan(demo_thorax):
    """A body cut by the first or last slice has no entry there: nothing is known beyond it."""
    ct, sset, body = demo_thorax
    preset = dataclasses.replace(load_preset("lung-biopsy"), max_craniocaudal_deg=90.0)
    # a target near the top slice, so the cut face is within reach
    top = ct.ijk_to_lps(np.array([[ct.shape[2] / 2, ct.shape[1] / 2, ct.shape[0] - 3]]))[0]
    top_z = max(ct.ijk_to_lps(np.array([[0, 0, 0], [0, 0, ct.shape[0] - 1]]))[:, 2])
    bottom_z = min(ct.ijk_to_lps(np.array([[0, 0, 0], [0, 0, ct.shape[0] - 1]]))[:, 2])
    target = target_at_point(ct, top)
    result = plan(ct, sset, target, preset, body)
    entries = result.risk_map["entries"]
    assert len(entries) > 0
    kji = np.rint(ct.lps_to_ijk(entries)[:, ::-1]).astype(int)
    on_edge = (kji[:, 0] == 0) | (kji[:, 0] == ct.shape[0] - 1)
    assert on_edge.any()  # the body's side wall on the last slice is skin...
    for k, j, i in kji[on_edge]:  # ...but only where the body ends within that slice
        ring = body[k, j - 1:j + 2, i - 1:i + 2]
        assert not ring.all(), (k, j, i)
    assert top_z > bottom_z


def test_replanning_with_a_kept_context_matches_a_fresh_plan(demo_thorax):
    ct, sset, body = demo_thorax
    preset = load_preset("lung-biopsy")
    target = target_from_structure(ct, sset, "lung_nodule")
    ctx = prepare(ct, sset, preset, np.asarray(target.point), body)
    moved = target_at_point(ct, np.asarray(target.point) + np.array([0.0, 3.0, 2.0]), "moved")
    again = plan(ct, sset, moved, preset, body, context=ctx)
    fresh = plan(ct, sset, moved, preset, body)
    assert again.rejected == fresh.rejected
    assert [t.entry.tolist() for t in again.trajectories] == [t.entry.tolist() for t in fresh.trajectories]


def test_crop_holds_the_box_on_an_oblique_grid():
    """On any grid, the prepared box holds every point of the LPS box asked for."""
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 0.8, 2.5]) @ np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    shape = (200, 150, 180)
    centre = a[:3, :3] @ np.array([90.0, 70.0, 100.0]) + a[:3, 3]
    crop = F.crop_around(shape, a, centre, 40.0, 15.0)
    rng = np.random.default_rng(1)
    pts = centre + rng.uniform(-1, 1, (2000, 3)) * np.array([40.0, 40.0, 15.0])
    ijk = crop.lps_to_ijk(pts)
    assert np.all(ijk >= -1e-6) and np.all(ijk <= np.array(crop.shape[::-1]) - 1 + 1e-6)


def test_skin_voxels_are_the_eroded_boundary_with_the_scan_edge_as_body():
    rng = np.random.default_rng(3)
    body = ndimage.binary_closing(rng.random((30, 40, 35)) > 0.35, iterations=2)
    body[:, :, :5] = True  # cut by the edge of the scan
    expected = np.argwhere(body & ~ndimage.binary_erosion(body, border_value=1))
    got = F.skin_voxels(body, (0, 0, 0), body.shape)
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    # a box, minus a box inside it
    part = F.skin_voxels(body, (5, 5, 5), (25, 35, 30), (10, 10, 10), (20, 20, 20))
    inside = np.all((expected >= (5, 5, 5)) & (expected < (25, 35, 30)), axis=1) & \
        ~np.all((expected >= (10, 10, 10)) & (expected < (20, 20, 20)), axis=1)
    assert sorted(map(tuple, part)) == sorted(map(tuple, expected[inside]))


def test_pooled_blocks_are_set_when_any_voxel_is():
    """The pooled mask the distance fields are built on never loses a voxel, partial blocks included."""
    from planner.planning import fields as F

    rng = np.random.default_rng(3)
    for shape, f in (((7, 9, 10), (2, 2, 1)), ((5, 6, 7), (1, 3, 2)), ((4, 4, 4), (1, 1, 1))):
        m = rng.random(shape) > 0.9
        got = F.pool_any(m, np.array(f))
        fi, fj, fk = f
        ref = np.zeros(tuple(-(-n // q) for n, q in zip(shape, (fk, fj, fi))), bool)
        for k, j, i in np.argwhere(m):
            ref[k // fk, j // fj, i // fi] = True
        assert np.array_equal(got, ref)
