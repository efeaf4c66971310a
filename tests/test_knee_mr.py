"""Knee MR segmented without imports: the real 3 T multi-echo knee and a synthetic multi-echo knee.

Landmarks on the real scan were placed by hand from intensity profiles across the cortex
(echo 1; the outer edge of the dark cortex where it meets fat or cartilage), given in LPS mm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA
from scipy import ndimage as ndi

from planner.cli.main import main

KNEE_MR = SHARED_DATA / "knee-mr" / "dicom"

#: Bone surfaces placed by hand on the shared knee MR (LPS mm): anterior cortex of the femoral
#: shaft (two heights, mid-sagittal slice), distal femoral and proximal tibial cortex at the
#: joint (a lateral and a medial slice).
LANDMARKS = {
    "femur_right": [(-81.37, -47.92, 39.73), (-83.15, -48.94, 27.34), (-67.78, -24.19, -29.40),
                    (-107.15, -22.10, -21.71)],
    "tibia_right": [(-68.33, -24.12, -33.11), (-108.06, -21.98, -27.89)],
}
#: Fluid seen on the shared knee, which has little: placed by looking at every slice of the last
#: echo (TE 50.5 ms) beside the T2 fitted over the eight echoes (fluid has the longest T2; on the
#: echo images it is barely brighter than fat), each point then centred on the longest T2 within
#: 2.5 mm; LPS mm by slice index. The recess: a pocket in front of the femur behind the patella's
#: upper pole (the lower end of the suprapatellar recess) on slices 7-15, and the suprapatellar
#: recess proper behind the quadriceps tendon, 30 mm higher, on slices 12-13.
RECESS_SEEN = [(7, (-66.2, -56.2, 3.9)), (8, (-69.2, -59.5, 9.9)), (9, (-73.8, -58.9, 6.8)),
               (10, (-77.5, -57.2, 9.3)), (11, (-81.5, -56.0, 9.9)), (12, (-85.3, -54.9, 11.7)),
               (13, (-89.3, -56.2, 11.7)), (14, (-93.1, -57.0, 12.9)), (15, (-97.0, -59.6, 14.0)),
               (12, (-80.5, -62.4, 43.1)), (13, (-84.9, -61.8, 40.6))]
#: Slivers of fluid one or two voxels thick between the cartilage of the femur and the tibia (or
#: a meniscus). Those under 5 mm3 are dropped as specks: the anterior one on slice 7 and the one on
#: slice 15 are not found.
JOINT_LINE_SEEN = [(7, (-71.7, -31.2, -29.6)), (7, (-72.3, -9.9, -30.4)), (8, (-75.9, -11.3, -27.3)),
                   (9, (-79.1, -27.0, -24.6)), (10, (-83.0, -27.8, -23.5)), (11, (-86.7, -26.0, -21.0)),
                   (14, (-99.1, -19.4, -21.6)), (15, (-103.4, -22.0, -23.5))]
#: Slices on which no fluid is seen (the medial and lateral ends of the joint and beyond).
NO_FLUID_SLICES = [*range(0, 7), *range(18, 24)]


def _distance_on_slice(image, mask, k, p):
    """In-plane distance (mm) from the LPS point ``p`` to the nearest voxel of ``mask`` on slice ``k``."""
    ji = np.argwhere(mask[k])
    if not len(ji):
        return np.inf
    pts = image.ijk_to_lps(np.c_[ji[:, 1], ji[:, 0], np.full(len(ji), k)].astype(float))
    return float(np.min(np.linalg.norm(pts - np.array(p), axis=1)))


@pytest.fixture(scope="module")
def real_knee(tmp_path_factory):
    """``planner segment`` on the shared knee MR: the image, the structures it wrote (read back
    from its NIfTI folder) and its notes."""
    import contextlib
    import io

    from planner.anatomy import load_structures
    from planner.images import load_image

    out = tmp_path_factory.mktemp("knee-mr-seg")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["segment", str(KNEE_MR), "--out", str(out)]) == 0
    notes = [line[6:] for line in buf.getvalue().splitlines() if line.startswith("note: ")]
    assert (out / "segmentation.seg.nrrd").is_file() and (out / "femur_right.nii.gz").is_file()
    image = load_image(KNEE_MR, modality="MR", echo=8)
    return image, load_structures(out, image), notes


@pytest.mark.shared_data
def test_real_bone_surfaces_within_two_voxels_of_the_landmarks(real_knee):
    image, s, _ = real_knee
    px = float(min(image.spacing[:2]))
    for name, points in LANDMARKS.items():
        mask = s.mask(name)
        for p in points:
            i, j, k = np.rint(image.lps_to_ijk(np.array([p]))[0]).astype(int)
            sl = mask[k]
            edge = np.argwhere(sl & ~ndi.binary_erosion(sl))
            d = float(np.min(np.hypot(edge[:, 0] - j, edge[:, 1] - i))) * px
            assert d <= 2 * px, (name, p, d)
    for name in ("patella_right", "fibula_right"):
        assert name in s and 5.0 < s[name].voxel_count * s.voxel_volume_ml() < 40.0, name
    assert s["femur_right"].voxel_count * s.voxel_volume_ml() > 100.0


@pytest.mark.shared_data
def test_real_fluid_found_on_the_slices_where_it_shows(real_knee):
    image, s, notes = real_knee
    eff = s.mask("knee_effusion_right")
    for k, p in RECESS_SEEN:  # the recess: found on every slice where it is seen, at the point seen
        assert _distance_on_slice(image, eff, k, p) <= 2.0, (k, p)
    found = [(k, p) for k, p in JOINT_LINE_SEEN if _distance_on_slice(image, eff, k, p) <= 2.0]
    assert len(found) >= len(JOINT_LINE_SEEN) - 2, found
    assert eff[NO_FLUID_SLICES].sum() == 0  # none where none is seen
    assert eff.sum() * s.voxel_volume_ml() < 1.0  # little fluid, as seen (0.5 ml)
    # the longest echo shows fluid best on a T2 series, and the notes say it and how things were found
    assert any("echo 8 (TE 50.5 ms) is shown and planned on" in n for n in notes)


@pytest.mark.shared_data
def test_real_popliteal_bundle_is_a_tube_behind_the_joint(real_knee):
    """The bundle, placed by position and said so, is a tube behind the middle of the joint that
    follows the back of the femur and the tibia (the vessels are not told apart on this series, so
    its place is checked against the bones, not against them)."""
    from planner.anatomy.autoseg.knee_mr import _lps

    image, s, notes = real_knee
    assert any(n.startswith("popliteal_neurovascular_bundle_right: PLACED BY ANATOMICAL POSITION, NOT SEEN") for n in notes)
    nvb = s["popliteal_neurovascular_bundle_right"]
    assert nvb.cls.value == "vessel"  # (read back from the NIfTI written: its source is that file)
    m = s.mask(nvb.name)
    assert not (m & s.union(["femur_right", "tibia_right", "patella_right", "fibula_right"])).any()
    p = _lps(image, np.argwhere(m))
    fem = _lps(image, np.argwhere(s.mask("femur_right"))[::5])
    tib = _lps(image, np.argwhere(s.mask("tibia_right"))[::5])
    joint = 0.5 * (fem[:, 2].min() + tib[:, 2].max())
    cond = fem[fem[:, 2] < fem[:, 2].min() + 25.0]
    # between the condyles, a tube 24 mm wide, reaching from well above to well below the joint line
    assert cond[:, 0].min() + 25.0 < p[:, 0].mean() < cond[:, 0].max() - 25.0 and np.ptp(p[:, 0]) <= 25.0
    assert p[:, 2].min() < joint - 35.0 and p[:, 2].max() > joint + 45.0
    # at every level, behind the back of the bone there, and at most 45 mm behind it
    bone = np.vstack([fem, tib])
    mid = bone[np.abs(bone[:, 0] - p[:, 0].mean()) <= 0.25 * np.ptp(cond[:, 0])]
    for z in (joint + 40.0, joint + 15.0, joint - 20.0, joint - 35.0):
        back = np.percentile(mid[np.abs(mid[:, 2] - z) <= 2.0, 1], 98.0)
        at = p[np.abs(p[:, 2] - z) <= 1.0, 1]
        assert back - 6.0 <= at.min() and at.max() <= back + 45.0, (z, back, at.min(), at.max())
    assert 40.0 < nvb.voxel_count * s.voxel_volume_ml() < 120.0


@pytest.mark.shared_data
def test_real_knee_as_nifti_segmented_as_mr_when_told(tmp_path):
    """A NIfTI records no modality: ``planner segment --modality MR`` segments it as a knee MR (one
    image: the last echo, T2-weighted without fat suppression, written out by ``planner convert``),
    with the bones on the landmarks."""
    import contextlib
    import io

    from planner.anatomy import load_structures
    from planner.images import load_image

    nii = tmp_path / "knee_echo8.nii.gz"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", str(KNEE_MR), str(nii), "--modality", "MR", "--echo", "8"]) == 0
    out = tmp_path / "seg"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["segment", str(nii), "--modality", "MR", "--out", str(out)]) == 0
    text = buf.getvalue()
    assert "modality=MR" in text and "one image per slice position" in text and "effusion: not sought" in text
    assert not (out / "lung_left.nii.gz").exists()
    image = load_image(nii, modality="MR")
    s = load_structures(out, image)
    px = float(min(image.spacing[:2]))
    for name, points in LANDMARKS.items():
        mask = s.mask(name)
        for p in points:
            i, j, k = np.rint(image.lps_to_ijk(np.array([p]))[0]).astype(int)
            edge = np.argwhere(mask[k] & ~ndi.binary_erosion(mask[k]))
            assert float(np.min(np.hypot(edge[:, 0] - j, edge[:, 1] - i))) * px <= 2 * px, (name, p)


def test_phantom_as_nifti_segmented_as_mr_when_told(tmp_path):
    """The synthetic knee's T1 written as NIfTI and ``planner segment --modality MR``: the knee bones
    (read back from the NIfTI files written) on the phantom's truth; without --modality it is a CT."""
    import contextlib
    import io

    from planner.anatomy import load_structures
    from planner.images import save_image
    from planner.testing.phantoms.knee_mr import make_knee_mr

    ph = make_knee_mr(contrast="t1")
    nii = tmp_path / "knee_t1.nii.gz"
    save_image(ph.echoes[0], nii)
    out = tmp_path / "seg"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["segment", str(nii), "--modality", "MR", "--out", str(out)]) == 0
    s = load_structures(out, ph.echoes[0])
    for name in ("femur_right", "tibia_right", "patella_right"):
        assert _dice(s.mask(name), ph.labels[name]) >= 0.85, name
    assert "popliteal_neurovascular_bundle_right" in s and "knee_effusion_right" not in s


def _plan(tmp_path, *args):
    out = tmp_path / "plan"
    rc = main(["plan", "--ct", str(KNEE_MR), "--modality", "MR", *args, "--out", str(out)])
    return rc, json.loads((out / "plan.json").read_text()), out


def _check_paths(doc, out):
    """Every trajectory clear of bone by the preset's 1 mm margin and crossing no tendon (their
    clearance is in the plan, at least the 2 mm margin); returns the MR and its structures."""
    from planner.anatomy import load_structures
    from planner.images import load_image

    mr = load_image(KNEE_MR, modality="MR", echo=doc["image"]["echo"])
    sset = load_structures(out / "structures.seg.nrrd", mr)
    bone = sset.union([s.name for s in sset if s.cls.value == "bone"])
    dist = ndi.distance_transform_edt(~bone, sampling=mr.spacing[::-1])
    for t in doc["trajectories"]:
        e, tg = np.array(t["entry"]), np.array(t["target"])
        pts = e + np.linspace(0, 1, 200)[:, None] * (tg - e)
        ijk = np.rint(mr.lps_to_ijk(pts)).astype(int)
        assert dist[ijk[:, 2], ijk[:, 1], ijk[:, 0]].min() >= 1.0, t["rank"]
        tendons = {n: c for n, c in t["clearance_mm"].items() if "tendon" in n}
        assert all(c >= 2.0 for c in tendons.values()), tendons
        assert any(r.startswith("tendons crossed: none") for r in t["risk_factors"]), t["risk_factors"]
    return mr, sset


@pytest.mark.shared_data
def test_real_knee_injection_planned_without_structures(tmp_path):
    rc, doc, out = _plan(tmp_path, "--target-joint", "knee_recess_right", "--procedure", "knee-injection")
    assert rc == 0 and doc["status"] == "ok"
    assert doc["image"]["echo"] == 8
    notes = " ".join(doc["structures_notes"])
    assert "all 8 echoes" in notes and "echo 8" in notes
    # the recess holds fluid here: the target is in it (the recess by the bones alone, 3 mm in front
    # of the femur, lies in the prefemoral fat pad on this knee)
    assert "the fluid found there" in doc["target"]["how"]
    mr, sset = _check_paths(doc, out)
    i, j, k = np.rint(mr.lps_to_ijk(np.array([doc["target"]["point"]]))[0]).astype(int)
    assert sset.mask("knee_effusion_right")[k, j, i]
    assert (out / "images" / "planning_slice.png").is_file()


@pytest.mark.shared_data
@pytest.mark.long
def test_real_synovial_biopsy_targets_the_effusion(tmp_path):
    rc, doc, out = _plan(tmp_path, "--target-label", "effusion", "--procedure", "knee-synovial-biopsy")
    assert rc == 0 and doc["target"]["label"] == "knee_effusion_right"
    assert "suprapatellar" in doc["target"]["how"] and "farthest from tendon and bone" in doc["target"]["how"]
    mr, sset = _check_paths(doc, out)
    i, j, k = np.rint(mr.lps_to_ijk(np.array([doc["target"]["point"]]))[0]).astype(int)
    assert sset.mask("knee_effusion_right")[k, j, i]  # the target lies in the fluid
    assert (out / "images" / "probe_plane.png").is_file()


def _dice(a, b):
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def phantom_seg():
    from planner.anatomy.autoseg.knee_mr import Echoes, segment_knee_mr
    from planner.testing.phantoms.knee_mr import make_knee_mr

    ph = make_knee_mr()
    echoes = Echoes(ph.echoes, list(range(1, len(ph.echoes) + 1)), list(ph.echo_times_ms))
    return ph, segment_knee_mr(ph.echoes[0], echoes)


@pytest.mark.parametrize("name,goal", [("femur_right", 0.85), ("tibia_right", 0.85), ("patella_right", 0.85),
                                       ("knee_effusion_right", 0.7), ("patellar_tendon_right", 0.5),
                                       ("quadriceps_tendon_right", 0.5)])
def test_phantom_dice(phantom_seg, name, goal):
    ph, seg = phantom_seg
    assert seg.side == "right" and seg.echo == len(ph.echoes)  # the longest echo shows the fluid best
    assert _dice(seg.structures.mask(name), ph.labels[name]) >= goal


def test_phantom_fibula_dice(phantom_seg):
    """The fibular shaft is mostly cortex (its marrow thinner than the opening that finds the head's):
    it is followed down from the head, so the whole fibula in view is found (its head alone: 0.54)."""
    ph, seg = phantom_seg
    got = seg.structures.mask("fibula_right") if "fibula_right" in seg.structures else np.zeros(ph.labels["fibula_right"].shape, bool)
    assert _dice(got, ph.labels["fibula_right"]) >= 0.85


def test_phantom_popliteal_bundle_covers_the_vessels_and_the_nerve(phantom_seg):
    """The bundle placed by position covers the phantom's popliteal artery and vein and its tibial
    nerve where it runs (from 50 mm below to 60 mm above the joint line)."""
    from planner.anatomy.autoseg.knee_mr import _lps

    ph, seg = phantom_seg
    image = ph.echoes[0]
    nvb = seg.structures.mask("popliteal_neurovascular_bundle_right")
    z = _lps(image, np.argwhere(nvb))[:, 2]
    for name, goal in (("popliteal_artery_right", 0.95), ("popliteal_vein_right", 0.95), ("tibial_nerve_right", 0.9)):
        idx = np.argwhere(ph.labels[name])
        zi = _lps(image, idx)[:, 2]
        idx = idx[(zi >= z.min()) & (zi <= z.max())]
        assert len(idx) and nvb[tuple(idx.T)].mean() >= goal, name
    # none in the bones found; a thin rim of the true cortex where the bones found fall short of it
    assert not (nvb & (seg.structures.mask("femur_right") | seg.structures.mask("tibia_right"))).any()
    assert (nvb & (ph.labels["femur_right"] | ph.labels["tibia_right"])).sum() <= 0.05 * nvb.sum()


@pytest.mark.parametrize("contrast,goals", [
    # T1: marrow and fat bright; fluid cannot be told from fat, so none is sought
    ("t1", {"femur_right": 0.85, "tibia_right": 0.85, "patella_right": 0.85}),
    # PD fat-suppressed: marrow darker than muscle, fluid brightest
    pytest.param("pd_fs", {"femur_right": 0.7, "tibia_right": 0.7, "patella_right": 0.7, "knee_effusion_right": 0.7},
                 marks=pytest.mark.long),
])
def test_phantom_single_image_sequences(contrast, goals):
    """Other sequences than a multi-echo T2: one image, whose contrast the method works out."""
    from planner.anatomy.autoseg.knee_mr import segment_knee_mr
    from planner.testing.phantoms.knee_mr import make_knee_mr

    ph = make_knee_mr(contrast=contrast)
    seg = segment_knee_mr(ph.echoes[0])
    s = seg.structures
    for name, goal in goals.items():
        assert name in s and _dice(s.mask(name), ph.labels[name]) >= goal, name
    if contrast == "t1":
        assert "knee_effusion_right" not in s
        assert any(n.startswith("effusion: not sought") for n in seg.notes)
    else:
        assert any("fat suppressed" in n for n in seg.notes)
