"""Heart and descending aorta found by shape (planner.anatomy.autoseg.mediastinum).

Checked against ground truth where there is some: the demo thorax's own masks and the
TotalSegmentator aorta of the abdomen CT; on the chest CT (no reference masks) against anatomy
anyone can check: a heart-sized organ in front of the spine, a descending aorta left of it.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import ABDOMEN_CT, ABDOMEN_SEG, ROOT
from planner.anatomy import load_structures, segment_ct
from planner.anatomy.autoseg.mediastinum import between_lungs
from planner.images import load_image

DEMO_THORAX = ROOT / "assets" / "demo" / "thorax"
DEMO_KNEE = ROOT / "assets" / "demo" / "knee"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def precision_near(auto: np.ndarray, ref: np.ndarray, voxels: int = 2) -> float:
    """Share of the automatic mask within ``voxels`` of the reference."""
    return np.count_nonzero(auto & ndi.binary_dilation(ref, iterations=voxels)) / max(1, np.count_nonzero(auto))


def lps_of(ct, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask)
    return ct.ijk_to_lps(kji[:, ::-1].astype(float))


def test_between_lungs_keeps_the_heart_and_not_the_liver_dome():
    """One axial slice: the right lung wraps round the liver dome; the heart sits between lungs.
    Columns (l) grow to the patient's left, as on the working grid."""
    shape = (1, 60, 100)
    right = np.zeros(shape, bool)
    left = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:60, 0:100]
    ring = (np.hypot(yy - 30, xx - 22) <= 18) & (np.hypot(yy - 30, xx - 22) > 12)
    right[0] = ring
    left[0] = (np.hypot(yy - 30, xx - 80) <= 16)
    liver = np.hypot(yy - 30, xx - 22) <= 11
    heart = np.hypot(yy - 30, xx - 51) <= 9
    got = between_lungs(left, right)[0]
    assert got[heart].all(), "the heart, between the lungs, is mediastinum"
    assert not got[liver].any(), "the liver dome inside the right lung's ring is not"


@pytest.fixture(scope="module")
def demo_thorax():
    ct = load_image(DEMO_THORAX / "ct")
    return ct, segment_ct(ct, parts=["heart"]), load_structures(DEMO_THORAX / "structures.nii.gz", ct)


def test_demo_thorax_heart_and_aorta_match_the_truth(demo_thorax):
    ct, auto, truth = demo_thorax
    d = dice(auto.mask("heart"), truth.mask("heart"))
    recall = np.count_nonzero(auto.mask("heart") & truth.mask("heart")) / np.count_nonzero(truth.mask("heart"))
    print(f"demo thorax: heart Dice {d:.3f}, recall {recall:.3f}")
    assert d >= 0.78 and recall >= 0.95, "the heart must be found whole (an organ to keep the needle from)"
    aorta = auto.mask("aorta")
    assert precision_near(aorta, truth.mask("aorta")) >= 0.85, "what is called aorta must be aorta"
    z = lps_of(ct, aorta)[:, 2]
    assert np.ptp(z) >= 80.0, "the descending aorta is a long column"
    assert any("only the descending aorta" in n for n in auto.notes), "the report must say the arch is not found"
    assert auto["heart"].cls.value == "organ" and auto["aorta"].cls.value == "vessel"


GREAT_VESSELS = ("superior_vena_cava", "brachiocephalic_vein_left", "brachiocephalic_vein_right", "pulmonary_artery",
                 "brachiocephalic_trunk", "common_carotid_artery_left", "subclavian_artery_left", "aorta")


def test_demo_thorax_great_vessels_are_kept_off(demo_thorax):
    """What a needle must not reach in the mediastinum is covered by some automatic structure
    it is kept off (heart, aorta, mediastinal vessels), and what is called a vessel mostly is one."""
    ct, auto, truth = demo_thorax
    vessels = truth.union(list(GREAT_VESSELS))
    med = auto.mask("mediastinal_vessels")
    assert auto["mediastinal_vessels"].cls.value == "vessel"
    covered = auto.mask("heart") | auto.mask("aorta") | med
    recall = np.count_nonzero(vessels & covered) / np.count_nonzero(vessels)
    p = precision_near(med, truth.union(list(GREAT_VESSELS) + ["esophagus"]))
    print(f"demo thorax: great vessels covered {recall:.3f}; mediastinal vessels on a vessel or the oesophagus {p:.3f}")
    assert recall >= 0.75 and p >= 0.55


def test_knee_has_no_heart_and_says_nothing_about_it():
    ct = load_image(DEMO_KNEE / "ct")
    sset = segment_ct(ct, parts=["heart"])
    assert "heart" not in sset and "aorta" not in sset and "mediastinal_vessels" not in sset
    assert not [n for n in sset.notes if "heart" in n or "aorta" in n], "no chest in a knee scan: nothing to note"


@pytest.mark.shared_data
def test_abdomen_aorta_against_totalsegmentator():
    ct = load_image(ABDOMEN_CT)
    auto = segment_ct(ct, parts=["heart"])
    ref = load_structures(ABDOMEN_SEG, ct)
    d = dice(auto.mask("aorta"), ref.mask("aorta"))
    p = precision_near(auto.mask("aorta"), ref.mask("aorta"))
    print(f"abdomen aorta: Dice {d:.3f}, share within 2 voxels of the reference {p:.3f}")
    assert d >= 0.6 and p >= 0.7
    # The scan stops below the heart: nothing called heart, and a note says why.
    assert "heart" not in auto
    assert any("heart not found" in n for n in auto.notes)


@pytest.mark.shared_data
def test_chest_heart_and_descending_aorta(chest_segmented):
    ct, sset = chest_segmented
    ml = np.count_nonzero(sset.mask("heart")) * float(np.prod(ct.spacing)) / 1000.0
    assert 400.0 <= ml <= 1000.0, f"heart {ml:.0f} ml"
    heart = lps_of(ct, sset.mask("heart")).mean(axis=0)
    aorta_pts = lps_of(ct, sset.mask("aorta"))
    assert np.ptp(aorta_pts[:, 2]) >= 100.0, "the descending aorta runs the length of the chest"
    aorta = aorta_pts.mean(axis=0)
    # LPS: the aorta is on the patient's left (x > heart's... > midline) and behind the heart (larger y).
    assert aorta[0] > 0.0 and aorta[1] > heart[1] + 30.0
    lungs = sset.mask("lung_left") | sset.mask("lung_right")
    assert not (sset.mask("heart") & lungs).any() and not (sset.mask("aorta") & lungs).any()
    assert not (sset.mask("heart") & sset.mask("bone")).any()
    # the great vessels above the heart, outlined by mediastinal fat, are found too
    med = sset.mask("mediastinal_vessels")
    med_pts = lps_of(ct, med)
    assert np.count_nonzero(med) * float(np.prod(ct.spacing)) / 1000.0 >= 50.0
    assert med_pts[:, 2].max() > heart_top(ct, sset) + 30.0, "they reach well above the heart"
    assert not (med & lungs).any() and not (med & sset.mask("trachea")).any()


def heart_top(ct, sset) -> float:
    return float(lps_of(ct, sset.mask("heart"))[:, 2].max())
