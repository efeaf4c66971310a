"""Fissures and lobes from the automatic segmentation: the demo thorax (ground truth), the
abdomen CT (TotalSegmentator lung bases) and the real chest CT (shared_data).

Each scan is segmented once per module. Sagittal overlays through each lung are written to
/tmp/autoseg2_*.png for a person to look at.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ABDOMEN_CT, ABDOMEN_SEG, CHEST_CT, ROOT

from planner.anatomy import load_structures
from planner.anatomy.autoseg import PARTS, fissure_mask, lobe_masks, segment_ct
from planner.images import load_image

DEMO_CT = ROOT / "assets" / "demo" / "thorax" / "ct"
DEMO_TRUTH = ROOT / "assets" / "demo" / "thorax" / "structures.nii.gz"
LOBES = PARTS["lobes"]
COLOURS = [(255, 60, 60), (60, 220, 60), (60, 120, 255)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def sheet_area_cm2(mask: np.ndarray, spacing) -> float:
    """Area of a one-voxel sheet: voxel volume over the smallest spacing, per voxel."""
    sp = np.asarray(spacing, float)
    return float(np.count_nonzero(mask) * np.prod(sp) / sp.min() / 100.0)


def write_sagittal(ct, sset, name: str) -> list[Path]:
    from PIL import Image as PILImage

    out_dir = Path(tempfile.gettempdir())
    if not os.access(out_dir, os.W_OK):
        return []
    paths = []
    hu = ct.voxels
    for side in ("lung_left", "lung_right"):
        if side not in sset:
            continue
        lung = sset.mask(side)
        if not lung.any():
            continue
        i = int(np.median(np.argwhere(lung)[:, 2]))
        g = np.clip((hu[:, :, i].astype(np.float32) + 1000.0) / 1200.0, 0, 1) * 255
        rgb = np.stack([g, g, g], axis=-1)
        lobes = [n for n in LOBES if n.endswith(side.split("_")[1]) and n in sset]
        for c, n in zip(COLOURS, lobes):
            m = sset.mask(n)[:, :, i]
            rgb[m] = 0.65 * rgb[m] + 0.35 * np.array(c, np.float32)
        if "lung_fissures" in sset:
            rgb[sset.mask("lung_fissures")[:, :, i]] = (255, 255, 0)
        img = np.repeat(rgb[::-1].astype(np.uint8), max(1, int(round(ct.spacing[2] / ct.spacing[1]))), axis=0)
        p = out_dir / f"autoseg2_{name}_sagittal_{side}.png"
        PILImage.fromarray(img).save(p)
        paths.append(p)
    return paths


# --- demo thorax (always) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    ct = load_image(DEMO_CT)
    sset = segment_ct(ct, parts=["lungs", "fissures", "lobes"])
    truth = load_structures(str(DEMO_TRUTH), ct)
    write_sagittal(ct, sset, "demo")
    return ct, sset, truth


def test_parts_list_lobes():
    assert LOBES == ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                     "lung_middle_lobe_right", "lung_lower_lobe_right")


def test_demo_lobes_match_truth(demo):
    ct, sset, truth = demo
    floors = {"lung_upper_lobe_left": 0.94, "lung_lower_lobe_left": 0.93, "lung_upper_lobe_right": 0.94,
              "lung_middle_lobe_right": 0.9, "lung_lower_lobe_right": 0.93}  # measured 0.98 0.97 0.98 0.94 0.97
    got = {n: dice(sset.mask(n), truth.mask(n)) for n in LOBES}
    print("demo lobe Dice", {n: round(v, 3) for n, v in got.items()})
    for n, floor in floors.items():
        assert got[n] >= floor, f"{n}: Dice {got[n]:.3f} < {floor}"


def test_demo_fissures_are_thin_sheets_near_truth(demo):
    ct, sset, truth = demo
    fis = sset.mask("lung_fissures")
    area = sheet_area_cm2(fis, ct.spacing)
    assert area > 150.0, f"fissure sheets cover only {area:.0f} cm2"
    near = np.count_nonzero(fis & truth.mask("lung_fissures")) / max(1, np.count_nonzero(fis))
    print("demo fissure area", round(area), "cm2; on the true fissures", round(near, 2))
    assert near > 0.35, f"only {near:.0%} of the fissure sheet lies on the true fissures"


def test_fissure_mask_and_lobe_masks_alone(demo):
    ct, sset, _ = demo
    left, right = sset.mask("lung_left"), sset.mask("lung_right")
    fis = fissure_mask(ct, lungs=left | right)
    assert dice(fis, sset.mask("lung_fissures")) > 0.9
    lobes = lobe_masks(ct, left, right)
    assert set(lobes) == set(LOBES)
    assert dice(lobes["lung_lower_lobe_left"], sset.mask("lung_lower_lobe_left")) > 0.99


# --- abdomen CT: lung bases only, 3 mm voxels -----------------------------------------------------------
@pytest.mark.shared_data
def test_abdomen_lobes_absent_or_right():
    ct = load_image(ABDOMEN_CT)
    sset = segment_ct(ct, parts=["lungs", "lobes"])
    truth = load_structures(str(ABDOMEN_SEG), ct)
    for n in ("lung_lower_lobe_left", "lung_lower_lobe_right"):
        if n in sset:  # lobes given only where the fissures were found credibly
            assert dice(sset.mask(n), truth.mask(n)) > 0.6, n


@pytest.mark.shared_data
def test_abdomen_lungs_without_fissures_say_thick_slices_may_be_why():
    """The abdomen CT's lung bases (3 mm slices) get no fissures: each lung's note says crossings are
    not counted there, that thinner slices may let them be found, and how to supply them."""
    ct = load_image(ABDOMEN_CT)
    sset = segment_ct(ct, parts=["lungs", "fissures"])
    for side in ("left", "right"):
        if "lung_fissures" in sset and (sset.mask("lung_fissures") & sset.mask(f"lung_{side}")).any():
            continue
        note = next(n for n in sset.notes if n.startswith(f"fissures not found credibly in the {side} lung"))
        assert "crossings there are not counted" in note
        assert "slices are 3.0 mm apart" in note and "1.25 mm or thinner" in note
        assert "--fissure-points" in note and "--structures" in note


# --- real chest CT ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest():
    ct = load_image(CHEST_CT)
    sset = segment_ct(ct, parts=["lungs", "fissures", "lobes"])
    write_sagittal(ct, sset, "chest")
    return ct, sset


@pytest.mark.shared_data
def test_chest_fissures_are_large_sheets(chest):
    ct, sset = chest
    from planner.anatomy.autoseg.grid import components

    fis = sset.mask("lung_fissures")
    # the left lung's fissure from the first look, the right lung's from the second
    for side in ("lung_left", "lung_right"):
        _, n, sizes = components(fis & sset.mask(side), connectivity=3)
        assert n > 0, side
        area = float(sizes.max()) * np.prod(ct.spacing) / ct.spacing.min() / 100.0
        print(side, "largest fissure sheet", round(area), "cm2")
        assert area > 40.0, f"{side}: largest fissure sheet {area:.0f} cm2"


@pytest.mark.shared_data
def test_chest_lobes_plausible(chest):
    ct, sset = chest
    left = [n for n in LOBES if n.endswith("left") and n in sset]
    right = [n for n in LOBES if n.endswith("right") and n in sset]
    assert len(left) in (0, 2) and len(right) in (0, 3)
    assert left, "the left major fissure is clear on this scan: the left lobes should be found"
    for names, lung in ((left, "lung_left"), (right, "lung_right")):
        total = np.count_nonzero(sset.mask(lung))
        for n in names:
            frac = np.count_nonzero(sset.mask(n)) / total
            print(n, f"{frac:.0%}")
            assert 0.05 <= frac <= 0.7, (n, frac)


#: Points on the sheet between the right upper lobe and the rest, read by eye off sagittal slabs of
#: the chest CT (x mm, row j, slice k) before the second look existed.
RIGHT_FLOOR_READ = [(-80, 150, 64), (-80, 200, 64.5), (-80, 240, 66), (-80, 270, 70), (-80, 300, 76),
                    (-110, 150, 63.5), (-110, 200, 63.5), (-110, 250, 63.5)]


@pytest.mark.shared_data
def test_chest_right_lung_fissures_from_the_second_look(chest):
    """The right lung's fissures (a near-horizontal upper sheet, missed by the first look on these
    2 mm slices) are found by the second look: the sheet runs within 4 mm of every point read by
    eye, and the note says where they come from, with the evidence."""
    ct, sset = chest
    fis = sset.mask("lung_fissures") & sset.mask("lung_right")
    errors = []
    for x, j, k in RIGHT_FLOOR_READ:
        i = int(round(ct.lps_to_ijk([x, 0.0, 0.0])[0]))
        ks = np.flatnonzero(fis[:, j - 1:j + 2, i - 1:i + 2].any(axis=(1, 2)))
        errors.append(float(np.min(np.abs(ks - k))) * ct.spacing[2] if len(ks) else np.inf)
    print("right floor: mm from the points read by eye", errors)
    assert max(errors) <= 4.0 and np.median(errors) <= 2.5
    note = next(n for n in sset.notes if n.startswith("right lung: its fissures were found by a second look"))
    assert "ridge in the CT" in note and "Crossings are counted" in note and "check on the CT" in note


def test_thick_slice_hint_only_on_thick_slices():
    from planner.anatomy.autoseg.fissures import thick_slice_hint

    assert thick_slice_hint((0.7, 0.7, 1.0)) == ""
    assert thick_slice_hint((0.7, 0.7, 1.25)) == ""
    assert "3.0 mm apart" in thick_slice_hint((0.9, 0.9, 3.0))


def test_a_fit_other_random_draws_move_is_refused():
    """Credibility by agreement: of three fitted surfaces, the one another fit agrees with is kept;
    three that disagree give nothing, whatever their support."""
    from planner.anatomy.autoseg import fissures as FI

    rng = np.random.default_rng(1)
    lung_pts = np.c_[rng.uniform(-100, -20, 4000), rng.uniform(-80, 80, 4000), rng.uniform(-80, 80, 4000)]

    def plane(c, slope=0.0, support=0.3):
        return FI.Surface(np.array([c, 0.0, slope, 0.0, 0.0, 0.0]), support, 500)

    close = [plane(0.0), plane(1.5, 0.01), plane(40.0, support=0.5)]
    best, gaps = FI._agreed(close, FI._oblique_uvw, lung_pts)
    assert best in (0, 1) and min(gaps) <= FI.AGREE_MM
    apart = [plane(0.0), plane(25.0), plane(-30.0)]
    assert FI._agreed(apart, FI._oblique_uvw, lung_pts)[0] is None
    assert FI._agreed([None, plane(0.0), None], FI._oblique_uvw, lung_pts)[0] is None


@pytest.mark.shared_data
def test_chest_right_oblique_fit_is_refused_because_draws_disagree(chest):
    """On this scan the right major fissure is visible but its plate evidence is swamped by vessel
    walls: fits of different random draws land tens of mm apart, so none is used (the left
    lung's agree and are used)."""
    from planner.anatomy.autoseg import fissures as FI
    from planner.anatomy.autoseg.pipeline import _Run

    ct, sset = chest
    run = _Run(ct)
    axes = run._axes()
    sp = ct.spacing[::-1]
    right = FI.fit_lung_agreed(ct.voxels, sset.mask("lung_right"), sp, ct.affine, axes, "right")
    assert right.oblique is None and any("disagree" in n for n in right.notes), right.notes
    left = FI.fit_lung_agreed(ct.voxels, sset.mask("lung_left"), sp, ct.affine, axes, "left")
    assert left.oblique is not None
