"""`planner check`: a simulated check scan of the demo thorax with the needle in, against the plan.

The check scan is made by the needle simulator (planner.testing.needle_sim): the patient moved by
a known rigid transform, the scan cut to a slab around the needle, a steel needle with partial
volume, streaks and noise. The truth is known, so every figure of check.json is compared with
what the truth gives through the same definitions (planner.checks.compare is tested on its own).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import planner
from planner.checks.compare import deviation
from planner.cli.main import main
from planner.demo import demo_cases
from planner.testing.dicom_write import write_image_as_dicom
from planner.testing.needle_sim import simulate_check


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    case = next(c for c in demo_cases() if c.id == "thorax")
    plan = planner.plan(case.ct, procedure="lung-biopsy", target_label="lung_nodule", n=1,
                        structures=case.folder / case.info["structures"])
    out = tmp_path_factory.mktemp("check") / "plan"
    plan.write(out)
    return out, plan, plan.session.image


def _check_scan(folder: Path, ct, entry, target, deviate_deg: float, depth_share: float, seed: int, meta=None):
    rng = np.random.default_rng(seed)
    w = (target - entry) / np.linalg.norm(target - entry)
    axis = np.cross(w, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    a = np.radians(deviate_deg)
    u = w * np.cos(a) + np.cross(axis, w) * np.sin(a)  # w turned toward the head, in its vertical plane
    depth = np.linalg.norm(target - entry)
    tip = entry + depth_share * depth * u
    hub = entry - 40.0 * u
    check, truth = simulate_check(ct, hub, tip, rng, move_mm=3.0, move_deg=2.0, slab_mm=30.0)
    m = ct.meta
    meta = meta or check.meta.replace(patient_name=m.patient_name, patient_id=m.patient_id,
                                      study_instance_uid=m.study_instance_uid)
    write_image_as_dicom(check, folder, meta=meta, uid_seed=f"check-{seed}")
    return truth


def test_a_deviated_needle_is_measured_and_corrected(planned, tmp_path, capsys):
    out, plan, ct = planned
    t = plan.trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    truth = _check_scan(tmp_path / "scan", ct, entry, target, deviate_deg=6.0, depth_share=0.6, seed=3)
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "checks" / "01" / "check.json").read_text())
    u_true = (truth.tip_planning - truth.hub_planning) / np.linalg.norm(truth.tip_planning - truth.hub_planning)
    want = deviation(entry, target, truth.tip_planning, u_true, plan.target.diameter_mm)
    got = doc["deviation"]
    assert np.linalg.norm(np.subtract(doc["needle"]["tip_lps"], truth.tip_planning)) <= 2.0
    assert got["angle_deg"] == pytest.approx(want.angle_deg, abs=1.5)
    assert got["lateral_offset_mm"] == pytest.approx(want.lateral_offset_mm, abs=2.0)
    assert got["predicted_miss_mm"] == pytest.approx(want.predicted_miss_mm, abs=3.0)
    # hit or not, on the lesion's own voxels: decided again here by brute force on the truth's
    # prediction (the depth of its voxel inside the lesion: the distance to the nearest voxel
    # centre outside), wherever the truth is clearly on one side of the 2 mm needed
    lesion = planner.load_structures(out / "structures.seg.nrrd", ct)["lung_nodule"]
    full = lesion.full(ct.shape)
    q = np.rint(ct.lps_to_ijk(want.predicted_tip_lps)[::-1]).astype(int)
    inside_depth = 0.0
    if full[tuple(q)]:
        lo, hi = np.maximum(q - 6, 0), np.minimum(q + 7, ct.shape)
        box = np.argwhere(~full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]) + lo
        inside_depth = float(np.min(np.linalg.norm((box - q)[:, ::-1] * np.asarray(ct.spacing), axis=1)))
    if abs(inside_depth - 2.0) > 2.5:
        assert got["target_hit"] is (inside_depth >= 2.0) and got["hit_by"] == "lung_nodule"
    assert doc["correction"]["action"] == "redirect"
    # the needle went 6 degrees cranial of the plan: withdrawn to the pivot (a depth on the true
    # needle from its skin puncture), the line to the target heads caudal by the angle computed
    # here from the truth
    cor = doc["correction"]
    puncture = np.asarray(doc["needle"]["entry_lps"])
    assert np.linalg.norm(np.cross(puncture - truth.tip_planning, u_true)) <= 2.0  # on the true needle's line
    pivot = puncture + cor["withdraw_to_mm"] * u_true
    w = (target - pivot) / np.linalg.norm(target - pivot)
    cc_change = np.degrees(np.arcsin(w[2]) - np.arcsin(u_true[2]))
    assert cor["redirect"]["craniocaudal_change_deg"] == pytest.approx(cc_change, abs=1.5) and cc_change < -4
    import re

    said = re.search(r"(\d+) degrees? more caudal", cor["text"])  # the text rounds the unrounded angle
    assert said and abs(int(said.group(1)) - abs(cor["redirect"]["craniocaudal_change_deg"])) <= 0.55
    assert "short of the pleura" in cor["text"] and "correction: withdraw the tip to" in printed
    log = json.loads((out / "checks" / "log.json").read_text())
    assert [c["number"] for c in log["checks"]] == [1]
    # the plan itself is never changed
    assert planner.read_plan(out).to_json() == plan.to_json()


def test_a_needle_far_off_gets_a_new_trajectory_from_its_puncture_checked_like_any_plan(planned, tmp_path):
    # 18 degrees off: more than a redirect in the tissue can turn; the planner plans again from
    # skin entries within 5 mm of the needle's puncture, and the independent checker verifies it
    out, plan, ct = planned
    t = plan.trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    _check_scan(tmp_path / "scan", ct, entry, target, deviate_deg=-18.0, depth_share=0.5, seed=5)
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 0
    doc = json.loads(sorted((out / "checks").glob("*/check.json"))[-1].read_text())
    cor = doc["correction"]
    assert any("a turn of" in c for c in cor["considered"])
    if cor["action"] == "new_trajectory":
        nt = cor["new_trajectory"]
        assert np.linalg.norm(np.subtract(nt["entry"], doc["needle"]["entry_lps"])) <= 5.0 + 1e-6
        assert np.allclose(nt["target"], target, atol=0.01)
        structures = planner.load_structures(out / "structures.seg.nrrd", ct)
        from checker import check_trajectory

        from planner.planning.presets import load_preset

        preset = load_preset(plan.procedure)
        assert check_trajectory(ct, structures, preset, nt["entry"], nt["target"]) == []
        assert f"{nt['length_mm']:.0f} mm deep to the target" in cor["text"]
    else:  # no safe path from the puncture: said, with the share each constraint ruled out
        assert cor["action"] == "no_safe_correction" and "ruled out" in cor["considered"][-1]


def test_another_patients_scan_is_refused(planned, tmp_path, capsys):
    out, plan, ct = planned
    t = plan.trajectories[0]
    other = ct.meta.replace(patient_name="Other^Person", patient_id="OTHER-1")
    _check_scan(tmp_path / "scan", ct, np.asarray(t.entry), np.asarray(t.target), 0.0, 0.5, seed=4, meta=other)
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the plan's patient" in err[0]


def test_a_scan_without_a_needle_exits_3(planned, tmp_path, capsys):
    out, plan, ct = planned
    k = int(round(ct.lps_to_ijk(plan.trajectories[0].target)[2]))
    slab = ct.with_voxels(np.asarray(ct.voxels)[...])  # the planning CT itself: no metal
    write_image_as_dicom(slab, tmp_path / "scan", meta=ct.meta, uid_seed="no-needle")
    assert k >= 0
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 3
    err = capsys.readouterr().err
    assert "no needle found" in err


def _slab_scan(folder: Path, ct, plan, seed: int, *, shift_mm=(0.0, 0.0, 0.0), scramble: bool = False, meta=None):
    """A check scan of the planned needle (on the plan's line, half way), moved by ``shift_mm``
    in its own coordinates (another place of the body, as the scanner's table says), or with its
    anatomy scrambled (the voxels shuffled within each slice: the histogram of a CT, no anatomy)."""
    t = plan.trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    u = (target - entry) / np.linalg.norm(target - entry)
    rng = np.random.default_rng(seed)
    check, _ = simulate_check(ct, entry - 40 * u, entry + 0.5 * (target - entry), rng, move_mm=1.0, move_deg=1.0,
                              slab_mm=25.0)
    v = np.asarray(check.voxels).copy()
    if scramble:
        for k in range(v.shape[0]):
            flat = v[k].ravel()
            rng.shuffle(flat)
            v[k] = flat.reshape(v[k].shape)
    aff = np.array(check.affine, float)
    aff[:3, 3] += np.asarray(shift_mm, float)
    from planner.images import Image

    m = ct.meta
    moved = Image(v, aff, meta or check.meta.replace(patient_name=m.patient_name, patient_id=m.patient_id,
                                                     study_instance_uid=m.study_instance_uid))
    write_image_as_dicom(moved, folder, meta=moved.meta, uid_seed=f"slab-{seed}")


def _checks(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checks").iterdir() if p.is_dir()) if (out / "checks").is_dir() else []


def test_a_scan_that_does_not_overlap_the_plan_is_refused(planned, tmp_path, capsys):
    out, plan, ct = planned
    before = _checks(out)
    _slab_scan(tmp_path / "scan", ct, plan, seed=6, shift_mm=(0.0, 0.0, 400.0))  # 40 cm toward the head
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not cover the planned path" in err[0]
    assert _checks(out) == before  # nothing written


def test_a_registration_that_is_not_credible_is_refused(planned, tmp_path, capsys):
    out, plan, ct = planned
    before = _checks(out)
    _slab_scan(tmp_path / "scan", ct, plan, seed=7, scramble=True)
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not credible" in err[0], err
    assert _checks(out) == before


def test_a_scan_naming_no_patient_needs_force(planned, tmp_path, capsys):
    out, plan, ct = planned
    blank = ct.meta.replace(patient_name="", patient_id="", study_instance_uid="")
    _slab_scan(tmp_path / "scan", ct, plan, seed=8, meta=blank)
    import pydicom

    for f in (tmp_path / "scan").iterdir():  # an anonymised series: the identifiers present but empty
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = "", ""
        ds.save_as(f)
    before = _checks(out)
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no patient" in err[0] and "--force" in err[0]
    assert _checks(out) == before
    assert main(["check", str(out), "--ct", str(tmp_path / "scan"), "--force"]) == 0
    printed = capsys.readouterr().out
    assert "taken as the plan's patient on the user's word (--force)" in printed
    doc = json.loads((out / "checks" / _checks(out)[-1] / "check.json").read_text())
    assert any("--force" in n for n in doc["identity"]) and "another study than the plan's" in doc["identity"]


def test_a_scan_that_stops_short_of_the_tip_asks_for_another_scan(planned, tmp_path, capsys):
    """The check slab ends before the needle's tip: the deepest metal seen is not the tip, so no
    advance or withdraw may be measured from it. The check says so and asks for a scan over the
    tip; the needle's notes are kept in check.json."""
    from planner.images import Image

    out, plan, ct = planned
    t = plan.trajectories[0]
    entry, target = np.asarray(t.entry), np.asarray(t.target)
    w = (target - entry) / np.linalg.norm(target - entry)
    axis = np.cross(w, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    a = np.radians(25.0)  # steep across the slices, so a slab can stop short of the tip
    u = w * np.cos(a) + np.cross(axis, w) * np.sin(a)
    tip = entry + 0.6 * np.linalg.norm(target - entry) * u
    check, truth = simulate_check(ct, entry - 40.0 * u, tip, np.random.default_rng(5), move_mm=2.0, move_deg=1.0,
                                  slab_mm=80.0)
    k_tip, k_hub = (float(check.lps_to_ijk(p)[2]) for p in (truth.tip_check, truth.hub_check))
    assert abs(k_tip - k_hub) * check.spacing[2] > 12.0, "the needle must cross enough slices for this test"
    gap = int(np.ceil(3.0 / check.spacing[2]))  # the slab ends 3 mm or more short of the tip
    k0, k1 = (0, int(np.floor(k_tip)) - gap) if k_tip > k_hub else (int(np.ceil(k_tip)) + gap + 1, check.shape[0])
    aff = np.array(check.affine, float)
    aff[:3, 3] = aff[:3, :3] @ np.array([0, 0, k0]) + aff[:3, 3]
    m = ct.meta
    meta = check.meta.replace(patient_name=m.patient_name, patient_id=m.patient_id,
                              study_instance_uid=m.study_instance_uid)
    write_image_as_dicom(Image(np.asarray(check.voxels)[k0:k1], aff, meta), tmp_path / "scan", meta=meta,
                         uid_seed="check-short")
    assert main(["check", str(out), "--ct", str(tmp_path / "scan")]) == 0
    printed = capsys.readouterr().out
    folder = sorted(p for p in (out / "checks").iterdir() if p.name.isdigit())[-1]
    doc = json.loads((folder / "check.json").read_text())
    assert doc["correction"]["action"] == "rescan", doc["correction"]
    assert "tip is not in the check scan" in doc["correction"]["text"]
    assert any("not in the scan" in n or "beyond the scan" in n for n in doc["needle"]["notes"]), doc["needle"]
    assert "scan again over the tip" in printed
    # the tip given is short of the true one, along the needle: a lower bound of the depth
    u_true = (truth.tip_planning - truth.hub_planning) / np.linalg.norm(truth.tip_planning - truth.hub_planning)
    assert float((truth.tip_planning - np.asarray(doc["needle"]["tip_lps"])) @ u_true) > 1.0
    assert doc["deviation"]["angle_deg"] == pytest.approx(deviation(entry, target, truth.tip_planning, u_true,
                                                                    plan.target.diameter_mm).angle_deg, abs=1.5)


def test_writing_the_plan_keeps_its_structures_ready_for_the_checks(planned):
    """The plan's structures are read back once when it is written and kept in the mask cache
    (same file bytes, same CT), so the first check of the procedure does not wait for them."""
    from planner.anatomy import mask_cache
    from planner.planning.output import file_sha256

    out, plan, ct = planned
    sset = mask_cache.cached_structures(file_sha256(out / "structures.seg.nrrd"), ct, "x")
    assert sset is not None and sorted(sset.names()) == sorted(plan.session.structures.names())
