"""PET-guided biopsy planning on the real FDG PET/CT of a thigh sarcoma (``planner plan --pet --avid``).

The plan aims at the most avid part of the tumour the radiation oncologist contoured
(GTV_Mass_CT); what it says is checked against independent computations written here: the
SUVpeak by brute force (every voxel centre within 6.2 mm of every candidate centre), the core's
SUV by trilinear interpolation over the CT's own axes.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA

from planner.cli.main import main
from planner.errors import InputError

pytestmark = [pytest.mark.shared_data,
              pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")]  # the file's SH

CASE = SHARED_DATA / "pet-ct-sarcoma"
PET, CT, RTSTRUCT = CASE / "pet", CASE / "ct", CASE / "ct-rtstruct" / "RS.dcm"
GTV = "GTV_Mass_CT"
PLAN_ARGS = ["plan", "--ct", str(CT), "--structures", str(RTSTRUCT), "--target-label", GTV,
             "--procedure", "soft-tissue-biopsy"]


@pytest.fixture(scope="module")
def plan_folder(tmp_path_factory):
    """The plan of the thigh, run end to end through the command line (timed, printed)."""
    out = tmp_path_factory.mktemp("pet") / "plan"
    t0 = time.perf_counter()
    code = main(PLAN_ARGS + ["--pet", str(PET), "--avid", "--out", str(out)])
    print(f"\nplanner plan --pet --avid on the thigh PET/CT, end to end: {time.perf_counter() - t0:.1f} s")
    assert code == 0
    return out


@pytest.fixture(scope="module")
def planned(plan_folder):
    return json.loads((plan_folder / "plan.json").read_text())


def test_the_femur_is_avoided_though_the_contours_hold_only_the_tumour(plan_folder, planned):
    """The RTSTRUCT holds the tumour alone; the preset avoids bone: the bone comes from the
    automatic CT segmentation, the plan says so, and every trajectory keeps the bone margin by
    the independent brute-force check."""
    from checker import Checker
    from planner.anatomy.slicer_seg import load_slicer_seg
    from planner.images import load_image
    from planner.planning import load_preset

    assert "clearance:bone" in planned["hard_constraints"]["clearance_mm (margin + needle radius)"]
    assert any(n.startswith("bone: not among the imported structures") and "automatic CT segmentation" in n
               for n in planned["structures_notes"]), planned["structures_notes"]
    ct = load_image(CT)
    sset = load_slicer_seg(plan_folder / "structures.seg.nrrd", ct)
    bone = [s for s in sset if s.cls.value == "bone"]
    assert bone and sum(s.voxel_count for s in bone) * float(np.prod(ct.spacing)) / 1000 > 20  # the femur, ml
    # no vessel or nerve in the contours: the limb's bundles placed by position, medial and
    # posterior of the femur (a left thigh: medial is toward -x), said in the notes
    assert sum("PLACED BY ANATOMICAL POSITION" in n for n in planned["structures_notes"]) == 2
    from scipy import ndimage

    all_bone = np.zeros(ct.shape, bool)
    for s in bone:
        all_bone |= s.full(ct.shape)
    vessels, nerve = sset.mask("limb_vessels_by_position"), sset.mask("limb_nerve_by_position")
    placed = [k for k in range(ct.shape[0]) if vessels[k].any() and nerve[k].any()]
    assert len(placed) > 20  # the thigh's slices, not the pelvis
    for k in placed:  # per slice, against the femur's cross-section (its largest bone there)
        lab, n = ndimage.label(all_bone[k])
        femur = lab == 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(lab), lab, range(1, n + 1))))
        (fj, fi), (vj, vi), (nj, ni) = (np.argwhere(m).mean(axis=0) for m in (femur, vessels[k], nerve[k]))
        assert vi < fi - 10 and nj > fj + 10, k  # x grows with the column, y (posterior) with the row
    checker = Checker(ct, sset, load_preset("soft-tissue-biopsy"))
    for t in planned["trajectories"]:
        assert checker.check(t["entry"], t["target"]) == [], t["rank"]


@pytest.fixture(scope="module")
def scans():
    """The CT, the GTV on it and the PET in SUV on the CT grid."""
    from planner.anatomy import load_structures
    from planner.images import load_image, load_pet, resample_to

    ct = load_image(CT)
    gtv = load_structures(RTSTRUCT, ct).mask(GTV)
    suv = resample_to(load_pet(PET), ct).voxels.astype(np.float64)
    return ct, gtv, suv


def _kji(ct, point) -> tuple[int, int, int]:
    return tuple(np.rint(ct.lps_to_ijk(np.asarray(point, float))[::-1]).astype(int))


def brute_force_peak(ct, gtv, suv, radius=6.2):
    """Highest mean SUV over the voxel centres within ``radius`` mm of a lesion voxel's centre,
    among centres whose whole sphere has PET; the distances measured between LPS points."""
    reach = np.ceil(radius / ct.spacing).astype(int)  # (i, j, k)
    centre = np.array(ct.shape) // 2
    offsets = []
    c_lps = ct.ijk_to_lps(centre[::-1].astype(float))
    for dk in range(-reach[2], reach[2] + 1):
        for dj in range(-reach[1], reach[1] + 1):
            for di in range(-reach[0], reach[0] + 1):
                p = ct.ijk_to_lps((centre[::-1] + [di, dj, dk]).astype(float))
                if np.linalg.norm(p - c_lps) <= radius:
                    offsets.append((dk, dj, di))
    offsets = np.array(offsets)
    idx = np.argwhere(gtv)
    inside = np.all((idx - reach[::-1] >= 0) & (idx + reach[::-1] < np.array(ct.shape)), axis=1)
    idx = idx[inside]
    total = np.zeros(len(idx))
    complete = np.ones(len(idx), bool)
    for off in offsets:
        v = suv[tuple((idx + off).T)]
        complete &= np.isfinite(v)
        total += np.nan_to_num(v)
    mean = np.where(complete, total / len(offsets), -np.inf)
    best = int(np.argmax(mean))
    return float(mean[best]), ct.ijk_to_lps(idx[best][::-1].astype(float))


def test_lesion_suv_peak_equals_a_brute_force_computation(planned, scans):
    ct, gtv, suv = scans
    lesion = planned["pet"]["targets"][0]["lesion"]
    peak, centre = brute_force_peak(ct, gtv, suv)
    assert lesion["suv_peak"] == pytest.approx(peak, rel=0.02)
    assert np.linalg.norm(np.array(lesion["suv_peak_centre"]) - centre) < 10.0  # mm: the same hot spot
    assert lesion["suv_max"] == pytest.approx(np.nanmax(suv[gtv]), rel=1e-3)
    assert lesion["suv_mean"] == pytest.approx(np.nanmean(suv[gtv]), rel=1e-3)
    assert lesion["suv_mean"] < lesion["suv_peak"] <= lesion["suv_max"]
    assert lesion["peak_sphere_ml"] == pytest.approx(1.0, abs=0.05)  # PERCIST's 1 ml


def test_the_avid_target_lies_inside_the_gtv_on_hot_tissue(planned, scans):
    ct, gtv, _ = scans
    block = planned["pet"]["targets"][0]
    target = planned["target"]
    assert target["label"] == f"{GTV}_avid" and block["avid_target"]
    assert np.allclose(target["point"], block["target_point"], atol=0.01)
    assert gtv[_kji(ct, target["point"])]
    # hot, not the necrotic part: the 1 ml sphere there is well above the lesion's mean
    assert block["avid_choice"]["sphere_suv"] > 2 * block["lesion"]["suv_mean"]
    # deep enough that a 20 mm core centred on it stays in the tumour whatever the direction
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(np.pad(gtv, 1), sampling=ct.spacing[::-1])[1:-1, 1:-1, 1:-1]
    assert depth[_kji(ct, target["point"])] >= 10.0


def test_the_planned_core_lies_in_the_gtv_and_samples_the_avid_tumour(planned, scans):
    """The 20 mm throw, centred on the target along the needle: every sample in the GTV and a
    mean SUV of at least 70 % of the lesion's SUVmax (independent trilinear interpolation)."""
    from scipy.interpolate import RegularGridInterpolator

    ct, gtv, suv = scans
    assert planned["status"] == "ok" and planned["pet"]["core_length_mm"] == 20.0
    best = planned["trajectories"][0]
    entry, target = np.array(best["entry"]), np.array(best["target"])
    u = (target - entry) / np.linalg.norm(target - entry)
    pts = target + np.linspace(-10.0, 10.0, 81)[:, None] * u
    assert all(gtv[_kji(ct, p)] for p in pts)
    assert np.allclose(ct.direction, np.eye(3))  # axis-aligned CT: its LPS axes are its grid lines
    axes = [ct.origin[a] + ct.spacing[a] * np.arange(ct.size_ijk[a]) for a in range(3)]
    values = RegularGridInterpolator(axes, suv.transpose(2, 1, 0))(pts)
    suv_max = np.nanmax(suv[gtv])
    assert values.mean() >= 0.7 * suv_max
    core = planned["pet"]["targets"][0]["trajectories"][0]["core"]
    assert core["suv_mean"] == pytest.approx(values.mean(), rel=0.01)
    assert core["in_lesion"] == 1.0 and core["share_of_lesion_suv_max"] >= 0.7
    assert np.allclose(core["core_start"], pts[0], atol=0.01) and np.allclose(core["core_end"], pts[-1], atol=0.01)
    # ranked by the SUV their cores sample
    means = [t["core"]["suv_mean"] for t in planned["pet"]["targets"][0]["trajectories"]]
    assert means == sorted(means, reverse=True)


def test_without_avid_the_deepest_point_of_this_sarcoma_is_cold(planned, tmp_path):
    """The tumour's centre is necrotic: a core there samples a fraction of the uptake the avid
    target's core does (the reason for --avid)."""
    assert main(PLAN_ARGS + ["--pet", str(PET), "--n", "1", "--out", str(tmp_path / "p")]) == 0
    plain = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plain["target"]["label"] == GTV and not plain["pet"]["targets"][0]["avid_target"]
    cold = plain["pet"]["targets"][0]["trajectories"][0]["core"]
    avid = planned["pet"]["targets"][0]["trajectories"][0]["core"]
    assert cold["share_of_lesion_suv_max"] < 0.35 and avid["suv_mean"] > 3 * cold["suv_mean"]


def test_the_plan_names_the_pet_it_used(planned):
    pet = planned["pet"]
    assert pet["units"] == "SUVbw" and "Units GML" in pet["suv_factors"]
    assert "same frame of reference" in pet["resampling"]
    assert planned["procedure"] == "soft-tissue-biopsy" and planned["preset"]["version"] == 2
    # the sarcoma rules the planner cannot check reach the plan, for the reviewer
    notes = " ".join(planned["procedure_notes"])
    assert "resected" in notes or "excised" in notes
    assert "compartment" in notes and "neurovascular bundle" in notes


def test_a_pet_of_another_frame_of_reference_is_refused(tmp_path, capsys):
    folder = tmp_path / "pet"
    folder.mkdir()
    for f in sorted(PET.iterdir()):
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.1.99"
        ds.save_as(folder / f.name)
    code = main(PLAN_ARGS + ["--pet", str(folder), "--avid", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "FrameOfReferenceUID" in err and "1.2.826.0.1.3680043.2.1125.1.99" in err
    assert not (tmp_path / "p" / "plan.json").exists()


@pytest.mark.parametrize("extra, words", [
    (["--avid"], "give the PET with --pet"),
    (["--avid", "--pet", str(PET), "--target", "40,20,-770"], "needs a lesion target"),
])
def test_avid_without_a_pet_or_a_lesion_is_refused_before_any_work(tmp_path, capsys, extra, words):
    code = main(PLAN_ARGS + extra + ["--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The avid target on a made-up lesion with a necrotic core (1 mm grid)
# ---------------------------------------------------------------------------------------------
def _necrotic_lesion():
    from planner.anatomy.structures import StructureSet
    from planner.anatomy.target import Target

    n = 70
    k, j, i = np.mgrid[:n, :n, :n].astype(float)
    r = np.sqrt((i - 35) ** 2 + (j - 35) ** 2 + (k - 35) ** 2)
    lesion = r <= 25
    suv = np.where(lesion, 6.0, 0.8)
    suv[r <= 10] = 1.0  # the cold, necrotic centre
    hot = np.sqrt((i - 35) ** 2 + (j - 23) ** 2 + (k - 35) ** 2) <= 3  # a hotter focus in the viable rim
    suv[hot] = 9.0
    affine = np.eye(4)
    sset = StructureSet(lesion.shape, affine)
    s = sset.add("mass", lesion, cls="target")
    target = Target((0.0, 0.0, 0.0), "mass", "structure", s)  # its deepest point would be the necrosis
    return target, suv.astype(np.float32), affine, lesion


def test_the_avid_target_avoids_a_necrotic_core():
    from planner.planning.pet_target import avid_target, core_suv

    target, suv, affine, lesion = _necrotic_lesion()
    avid, stats, _ = avid_target(target, suv, affine)
    p = np.array(avid.point)
    assert np.linalg.norm(p - 35) > 10  # not in the cold centre
    assert suv[tuple(np.rint(p[::-1]).astype(int))] >= 6.0
    assert stats.suv_max == 9.0 and stats.suv_peak > 6.0
    assert avid.label == "mass_avid" and avid.structure is target.structure
    # a core along any needle direction stays in the lesion; one along the viable rim samples
    # viable tumour only, one aimed through the centre reaches the necrosis and samples less:
    # the reason trajectories are ranked by the SUV their core samples
    cores = {tuple(d): core_suv(suv, affine, p - 50 * np.array(d, float), p, 20.0, lesion, stats.suv_max)
             for d in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1])}
    assert all(c["in_lesion"] == 1.0 for c in cores.values())
    along_rim, through_centre = cores[(1, 0, 0)], cores[(0, 1, 0)]
    assert along_rim["suv_min"] >= 6.0 and cores[(0, 0, 1)]["suv_min"] >= 6.0
    assert through_centre["suv_min"] == pytest.approx(1.0) and through_centre["suv_mean"] < along_rim["suv_mean"]


def test_a_lesion_without_pet_or_without_uptake_is_refused():
    from planner.planning.pet_target import avid_target

    target, suv, affine, _ = _necrotic_lesion()
    with pytest.raises(InputError, match="outside the PET's field of view"):
        avid_target(target, np.full_like(suv, np.nan), affine)
    with pytest.raises(InputError, match="not avid"):
        avid_target(target, np.full_like(suv, 1.2), affine)
    point = target.__class__((35.0, 35.0, 35.0), "p", "point")
    with pytest.raises(InputError, match="not a lesion"):
        avid_target(point, suv, affine)


# ---------------------------------------------------------------------------------------------
# The biopsy presets of soft tissue, bone and lymph nodes
# ---------------------------------------------------------------------------------------------
def test_biopsy_presets_keep_the_sarcoma_rules_and_name_their_throw():
    from planner.planning import load_preset
    from planner.planning.pet_plan import core_length_mm

    soft, bone, node = (load_preset(p) for p in ("soft-tissue-biopsy", "bone-biopsy", "lymph-node-biopsy"))
    classes = {p.id: {r.cls.value for r in p.avoid if r.cls is not None} for p in (soft, bone, node)}
    # a soft-tissue mass: bone is a structure at risk; a bone lesion: bone is the target
    assert {"bone", "vessel", "nerve"} <= classes["soft-tissue-biopsy"]
    assert "bone" not in classes["bone-biopsy"] and {"vessel", "nerve"} <= classes["bone-biopsy"]
    # the neurovascular bundle is kept wider from than the 5 mm of a routine biopsy
    assert all(r.margin_mm >= 10 for r in soft.avoid if r.cls is not None and r.cls.value in ("vessel", "nerve"))
    for p in (soft, bone, node):
        assert p.version == (1 if p.id == "lymph-node-biopsy" else 2) and all(r.why and r.source for r in p.avoid)
        assert core_length_mm(p)[1] == f"preset {p.id}" and p.raw["biopsy"]["source"]
    assert core_length_mm(soft)[0] == 20.0 and core_length_mm(node)[0] == 10.0
    assert core_length_mm(load_preset("lung-biopsy"))[0] == 20.0  # a preset naming none: the default, said so
    for p in (soft, bone):  # what the rules cannot check is stated
        notes = " ".join(p.raw["notes"])
        assert "neurovascular bundles" in notes and "placed by anatomical position" in notes and "compartment" in notes
        assert "not seen on the scan" in notes and "limb_bundles_by_position" in p.raw


def test_a_lesion_partly_outside_the_pet_is_measured_on_its_covered_part():
    from planner.planning.pet_target import lesion_suv, suv_peak

    _, suv, affine, lesion = _necrotic_lesion()
    cut = suv.copy()
    cut[:, :28, :] = np.nan  # the PET's field of view ends across the hot focus (j = 23)
    stats = lesion_suv(cut, lesion, affine)
    assert 0.2 < 1 - stats.pet_coverage < 0.5
    assert stats.suv_max == 6.0  # the hot focus lies outside: not seen, and the share says so
    # no sphere reaching past the PET's edge is a candidate
    assert stats.suv_peak_centre[1] >= 28 + 6
    assert suv_peak(cut, lesion, affine)[0] == pytest.approx(6.0)


def test_the_report_shows_the_pet_images_and_the_suv_figures(plan_folder, planned):
    """PET fused over the CT and the PET MIP are in the report, and its SUV figures are the plan's."""
    import re

    html = (plan_folder / "report.html").read_text()
    from html import escape

    from planner.report.images import SCENE_TITLES

    for name in ("pet_fusion", "pet_mip"):
        assert (plan_folder / "images" / f"{name}.png").stat().st_size > 10_000
        assert escape(SCENE_TITLES[name].split(":")[0]) in html  # embedded with its caption
    lesion = planned["pet"]["targets"][0]["lesion"]
    core = planned["pet"]["targets"][0]["trajectories"][0]["core"]
    text = re.sub(r"<[^>]+>", " ", html)
    assert "PET: FDG uptake (SUV)" in text
    assert f"{lesion['suv_max']:.2f}" in text and f"{lesion['suv_peak']:.2f}" in text
    assert f"mean {core['suv_mean']:.2f}" in text


def test_a_pet_of_another_frame_of_reference_fuses_through_a_given_registration(tmp_path, planned, capsys):
    """The shared PET moved 12 mm left and 7 mm up, in another frame of reference: with the
    registration (PET LPS -> CT LPS, the inverse shift) the lesion's SUV figures are the same
    as with the original PET; the plan records the matrix; a scaling matrix is refused."""
    shift = np.array([12.0, 0.0, 7.0])
    folder = tmp_path / "pet"
    folder.mkdir()
    for f in sorted(PET.iterdir()):
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.1.77"
        ds.ImagePositionPatient = [float(x) + d for x, d in zip(ds.ImagePositionPatient, shift)]
        ds.save_as(folder / f.name)
    reg = tmp_path / "pet_to_ct.txt"
    reg.write_text("# PET LPS -> CT LPS\n" + "\n".join(" ".join(str(v) for v in row) for row in
                                                     [[1, 0, 0, -shift[0]], [0, 1, 0, -shift[1]], [0, 0, 1, -shift[2]],
                                                      [0, 0, 0, 1]]) + "\n")
    out = tmp_path / "p"
    assert main(PLAN_ARGS + ["--pet", str(folder), "--pet-registration", str(reg), "--n", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "plan.json").read_text())
    got, want = doc["pet"]["targets"][0]["lesion"], planned["pet"]["targets"][0]["lesion"]
    assert got["suv_max"] == pytest.approx(want["suv_max"], rel=0.02)
    assert got["suv_mean"] == pytest.approx(want["suv_mean"], rel=0.02)
    assert np.allclose(doc["pet"]["registration"]["pet_to_ct"][0], [1, 0, 0, -12.0])
    assert "through the given registration" in doc["pet"]["resampling"]
    capsys.readouterr()
    reg.write_text("2 0 0 0\n0 2 0 0\n0 0 2 0\n0 0 0 1\n")
    assert main(PLAN_ARGS + ["--pet", str(folder), "--pet-registration", str(reg), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "is not a rotation" in err and not (tmp_path / "q").exists()


def test_the_viewer_shows_the_pet_over_the_slices_with_its_opacity_key(plan_folder, planned):
    """``planner view`` of a PET plan: the PET (hot map) lies over the lesion's SUVpeak sphere in
    the axial slice through it; key o steps the opacity, and at 0 the same pixel is the CT's grey."""
    from planner.scene import Scene, load_case
    from planner.scene import views as V
    from planner.viewer import Viewer

    case = load_case(plan_folder)
    lesion = planned["pet"]["targets"][0]["lesion"]
    assert case.pet is not None and case.pet_top_suv == pytest.approx(lesion["suv_max"])
    hot = np.asarray(lesion["suv_peak_centre"], float)

    def colour_at(opacity):
        scene = Scene(case)
        scene.pet_opacity = opacity
        view = V.orthogonal_view(scene, "axial", (600, 600), point=hot, show_paths=False)
        rgb = np.asarray(view.render(), int)
        c, r = np.rint(view.pixel_of(hot[None])[0]).astype(int)
        view.close()
        return rgb[r, c]

    fused, plain = colour_at(0.6), colour_at(0.0)
    assert abs(plain[0] - plain[2]) < 8, plain  # the CT alone: grey
    assert fused[0] >= fused[1] >= fused[2] and fused[0] - fused[2] > 20, fused  # warm: the hot map over it
    assert np.abs(fused - plain).max() > 40, (fused, plain)
    viewer = Viewer(case, size=(900, 600), offscreen=True)
    assert viewer.on_key("o") and viewer.scene.pet_opacity == 0.3
    slices = [v.info["pet_slice"] for v in viewer.views.values() if v.info.get("pet_slice") is not None]
    assert slices and all(s.GetProperty().GetOpacity() == pytest.approx(0.3) for s in slices)
