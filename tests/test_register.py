"""Registration of a check scan to the planning CT (planner.checks.register).

What a doctor relies on: the planned target, seen in a check scan of a moved patient, is mapped
back to within 1.5 mm of where it is in the planning CT, also from a 10 mm slab with the needle
in; and a check scan that cannot be registered credibly is refused with the reason instead of
giving a wrong deviation.

The check scans are simulated from real CTs (tests/regsim.py): the anatomy moved by a random
rigid transform (up to 5 mm and 4 degrees), cropped to a slab of 10-40 mm around a path from a
skin point to a point 50-100 mm deep, a 3000 HU needle line drawn along the moved path, 20 HU
noise. The default suite runs a small seeded campaign per region; the full one (20 per region)
is marked long (make test-long) and is also ``benchmarks/register.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ABDOMEN_CT, CHEST_CT, ROOT

import regsim
from planner.checks.register import from_sitk, register_check, to_sitk
from planner.errors import InputError
from planner.images import Image, load_image

KNEE_CT = ROOT / "assets/demo/knee/ct"
THORAX_CT = ROOT / "assets/demo/thorax/ct"
MAX_TARGET_ERROR_MM = 1.5

_cache: dict[str, tuple[Image, np.ndarray]] = {}


def scan(path) -> tuple[Image, np.ndarray]:
    """A CT and a crude body mask, loaded once per test process."""
    key = str(path)
    if key not in _cache:
        ct = load_image(path)
        _cache[key] = (ct, regsim.body_slices(ct))
    return _cache[key]


def campaign(path, n: int, seed: int, region: str) -> list[float]:
    """Registers ``n`` simulated check scans (the first a 10 mm slab) and returns the target errors."""
    ct, body = scan(path)
    rng = np.random.default_rng(seed)
    errors = []
    for c in range(n):
        case = regsim.simulate(ct, body, rng, slab_mm=(10.0, 10.0) if c == 0 else (10.0, 40.0))
        reg = register_check(ct, case.check, entry_lps=case.entry, target_lps=case.target)
        err = regsim.target_error(reg.check_to_planning, case)
        errors.append(err)
        q = reg.quality
        print(
            f"{region} #{c}: slab {case.slab_mm:.0f} mm ({case.check.shape[0]} slices), target moved {case.motion_mm:.1f} mm /"
            f" {case.motion_deg:.1f} deg -> error {err:.2f} mm (correlation {q['correlation']:.3f}, spread {q['target_spread_mm']:.2f} mm,"
            f" overlap {q['overlap']:.2f}, {q['iterations']} iterations)"
        )
        assert err <= MAX_TARGET_ERROR_MM, f"{region} case {c}: target error {err:.2f} mm"
        assert q["overlap"] >= 0.9 and q["target_spread_mm"] <= 1.0 and q["correlation"] <= -0.5
    e = np.array(errors)
    print(f"{region}: {n} cases, target error median {np.median(e):.2f} mm, 95th percentile {np.percentile(e, 95):.2f} mm, max {e.max():.2f} mm")
    return errors


# --- geometry -------------------------------------------------------------------------------


def test_sitk_conversion_keeps_the_geometry_exactly():
    """An oblique, flipped grid: every voxel index maps to the same LPS point in ITK and here."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.7, -0.9, 2.5])  # a left-handed, oblique grid
    affine[:3, 3] = [-120.5, 33.25, 81.0]
    img = Image(rng.normal(size=(5, 7, 9)).astype(np.float32), affine)
    s = to_sitk(img)
    for ijk in [(0, 0, 0), (8, 6, 4), (3.5, 2.25, 1.75)]:
        itk = np.array(s.TransformContinuousIndexToPhysicalPoint(tuple(float(x) for x in ijk)))
        np.testing.assert_allclose(itk, img.ijk_to_lps(np.array(ijk, float)), atol=1e-9)
    # the voxel at index (i, j, k) is the array's [k, j, i]
    assert s.GetPixel(8, 6, 4) == pytest.approx(float(img.voxels[4, 6, 8]))
    back = from_sitk(s)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-12)
    np.testing.assert_array_equal(back.voxels, img.voxels)
    assert sitk.GetArrayViewFromImage(s).shape == img.shape


def test_sitk_conversion_of_the_knee_ct():
    ct, _ = scan(KNEE_CT)
    s = to_sitk(ct)
    for ijk in [(0, 0, 0), (183, 183, 109), (10, 100, 50)]:
        itk = np.array(s.TransformContinuousIndexToPhysicalPoint(tuple(float(x) for x in ijk)))
        np.testing.assert_allclose(itk, ct.ijk_to_lps(np.array(ijk, float)), atol=1e-9)


# --- accuracy -------------------------------------------------------------------------------


def test_unmoved_check_scan_registers_to_identity():
    """A check slab cut out of the planning CT itself, with a needle: the mapping is identity."""
    ct, body = scan(KNEE_CT)
    rng = np.random.default_rng(7)
    case = regsim.simulate(ct, body, rng, max_shift_mm=0.0, max_deg=0.0, slab_mm=(10.0, 10.0), noise_hu=0.0)
    reg = register_check(ct, case.check, entry_lps=case.entry, target_lps=case.target)
    assert regsim.target_error(reg.check_to_planning, case) <= 0.2
    assert reg.quality["metal_voxels"] > 0  # the needle was there and masked out
    assert reg.quality["correlation"] <= -0.95
    assert set(reg.quality) >= {"correlation", "overlap", "target_spread_mm", "iterations", "stop_condition"}
    # the mapping and its inverse agree
    p = np.array([-100.0, 0.0, 10.0])
    np.testing.assert_allclose(reg.map_to_check(reg.map_to_planning(p)), p, atol=1e-9)


def test_knee_campaign():
    campaign(KNEE_CT, 4, seed=101, region="knee")


@pytest.mark.shared_data
def test_chest_campaign():
    campaign(CHEST_CT, 4, seed=201, region="chest")


@pytest.mark.shared_data
def test_abdomen_campaign():
    """3 mm voxels: a 10 mm slab is 3-4 slices."""
    campaign(ABDOMEN_CT, 4, seed=301, region="abdomen")


@pytest.mark.long
def test_knee_campaign_full():
    campaign(KNEE_CT, 20, seed=1, region="knee")


@pytest.mark.long
@pytest.mark.shared_data
def test_chest_campaign_full():
    campaign(CHEST_CT, 20, seed=2, region="chest")


@pytest.mark.long
@pytest.mark.shared_data
def test_abdomen_campaign_full():
    campaign(ABDOMEN_CT, 20, seed=3, region="abdomen")


# --- refusals -------------------------------------------------------------------------------


def knee_case(seed: int = 11, **kw) -> tuple[Image, regsim.SimCase]:
    ct, body = scan(KNEE_CT)
    return ct, regsim.simulate(ct, body, np.random.default_rng(seed), **kw)


def test_check_scan_far_from_the_path_is_refused():
    """The same check slab placed 400 mm away (another table position): nothing near the path."""
    ct, case = knee_case()
    a = np.array(case.check.affine)
    a[2, 3] += 400.0
    far = Image(case.check.voxels, a)
    with pytest.raises(InputError, match="does not cover the planned path"):
        register_check(ct, far, entry_lps=case.entry, target_lps=case.target)


def test_check_scan_beyond_the_planning_ct_is_refused():
    """A check scan near the path that lies mostly outside the planning CT's slices."""
    ct, case = knee_case(slab_mm=(30.0, 30.0))
    top = ct.ijk_to_lps(np.array([0.0, 0.0, ct.shape[0] - 1]))[2]
    # a path ending at the planning CT's top slice, a check slab above it
    shift = top + 20.0 - case.check.ijk_to_lps(np.array([0.0, 0.0, 0.0]))[2]
    a = np.array(case.check.affine)
    a[2, 3] += shift
    above = Image(case.check.voxels, a)
    entry = case.entry + [0, 0, top - case.target[2]]
    target = case.target + [0, 0, top - case.target[2]]
    with pytest.raises(InputError, match="does not overlap the planning CT"):
        register_check(ct, above, entry_lps=entry, target_lps=target)


def test_check_scan_of_noise_is_refused():
    ct, case = knee_case()
    rng = np.random.default_rng(5)
    noise = Image(rng.normal(0, 300, case.check.shape).astype(np.int16), case.check.affine)
    with pytest.raises(InputError, match="not credible"):
        register_check(ct, noise, entry_lps=case.entry, target_lps=case.target)


def test_check_scan_of_another_body_region_is_refused():
    """The knee CT given as a check scan of the demo thorax: its grid lies inside the thorax's
    coordinates and covers the path, but its anatomy is not the thorax's."""
    thorax, body = scan(THORAX_CT)
    knee, _ = scan(KNEE_CT)
    # a path in the right side of the thorax, inside the knee scan's box
    entry, target = np.array([-185.0, 0.0, 10.0]), np.array([-110.0, 0.0, 10.0])
    k0 = int(round(knee.lps_to_ijk(target)[2]))
    slab = Image(knee.voxels[k0 - 8 : k0 + 8], knee.affine @ _shift_k(k0 - 8))
    with pytest.raises(InputError, match="not credible"):
        register_check(thorax, slab, entry_lps=entry, target_lps=target)


def test_wildly_wrong_start_is_refused_or_right():
    """The patient turned by up to 45 degrees and moved up to 40 mm between the scans, far beyond
    what a local registration started from the plan's frame is made for: each result is either
    refused as not credible or right (the capture range is wide), never a wrong mapping; the
    cases chosen include refusals."""
    ct, body = scan(KNEE_CT)
    refused = 0
    for seed in (13, 14, 16):
        case = regsim.simulate(ct, body, np.random.default_rng(seed), max_shift_mm=40.0, max_deg=45.0, slab_mm=(20.0, 20.0))
        try:
            reg = register_check(ct, case.check, entry_lps=case.entry, target_lps=case.target)
        except InputError as exc:
            assert "not credible" in str(exc)
            print(f"turned {case.motion_deg:.0f} deg, target moved {case.motion_mm:.0f} mm: refused ({exc})")
            refused += 1
            continue
        err = regsim.target_error(reg.check_to_planning, case)
        print(f"turned {case.motion_deg:.0f} deg, target moved {case.motion_mm:.0f} mm: registered, error {err:.2f} mm")
        assert err <= MAX_TARGET_ERROR_MM
    assert refused >= 1


def test_bad_points_are_refused():
    ct, case = knee_case()
    with pytest.raises(InputError, match="target_lps"):
        register_check(ct, case.check, entry_lps=case.entry, target_lps=[np.nan, 0, 0])


def _shift_k(k0: int) -> np.ndarray:
    m = np.eye(4)
    m[2, 3] = k0
    return m
