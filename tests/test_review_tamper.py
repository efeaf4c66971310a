"""`planner review` re-derives what it checks: an edited plan.json is never verified.

Before, review read the margins from plan.json and verified a plan edited to set them to 0
with the path through a vessel, an entry moved inside the lung, a needle at 90 degrees
craniocaudal, a swapped structures file, a schema planner.plan/99 or a changed procedure; a NaN
or a string in a value was a traceback. Each case below is one of those edits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from planner.cli.main import main
from planner.demo import demo_cases
from planner.planning.presets import load_preset


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    return str(case.ct), str(case.folder / case.info["structures"])


@pytest.fixture(scope="module")
def planned(thorax, tmp_path_factory):
    ct, structures = thorax
    out = tmp_path_factory.mktemp("review") / "plan"
    assert main(["plan", "--ct", ct, "--structures", structures, "--target-label", "lung_nodule",
                 "--procedure", "lung-biopsy", "--out", str(out), "--n", "2"]) == 0
    return out


def _copy(planned: Path, tmp_path: Path) -> tuple[Path, dict]:
    d = tmp_path / "plan"
    shutil.copytree(planned, d)
    return d, json.loads((d / "plan.json").read_text())


def _save(d: Path, doc: dict) -> None:
    (d / "plan.json").write_text(json.dumps(doc, indent=2))


def _review(d: Path, ct: str, capsys) -> tuple[int, str, list[str]]:
    code = main(["review", str(d), "--ct", ct, "--no-window"])
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip().splitlines()


def _rejected_entry(d: Path, reason: str, target: list[float]) -> np.ndarray:
    """A skin point the planner ruled out for ``reason`` (from the plan's own risk map)."""
    with np.load(d / "risk_map.npz") as z:
        entries, reasons = z["entries_lps"].astype(float), z["reason"]
    pick = entries[reasons == reason]
    assert len(pick), reason
    # the one nearest the target: the most plausible edit
    return pick[np.argmin(np.linalg.norm(pick - np.asarray(target), axis=1))]


def _move_entry(traj: dict, entry: np.ndarray) -> None:
    """Put the trajectory's entry at ``entry`` and make every printed number agree with it, as a
    careful forger would: only the hard constraints can then tell."""
    tip = np.asarray(traj["target"], float)
    v = tip - entry
    depth = float(np.linalg.norm(v))
    d = v / depth
    traj["entry"] = [round(float(x), 2) for x in entry]
    traj["length_mm"] = round(depth, 1)
    traj["craniocaudal_deg"] = round(float(np.degrees(np.arcsin(d[2]))), 1)
    traj["angle_from_vertical_deg"] = round(float(np.degrees(np.arctan2(abs(d[0]), abs(d[1])))), 1)
    traj["clearance_mm"] = {}
    traj.pop("patient_position", None)


def test_the_untouched_plan_is_verified(planned, thorax, capsys):
    code, out, err = _review(planned, thorax[0], capsys)
    assert code == 0, (out, err)
    assert "every hard constraint re-derived and kept" in out


def test_margins_set_to_zero_with_the_path_through_a_vessel(planned, thorax, tmp_path, capsys):
    d, doc = _copy(planned, tmp_path)
    entry = _rejected_entry(d, "clearance:lung_vessels", doc["target"]["point"])
    _move_entry(doc["trajectories"][0], entry)
    doc["hard_constraints"]["clearance_mm (margin + needle radius)"] = {
        k: 0 for k in doc["hard_constraints"]["clearance_mm (margin + needle radius)"]}
    _save(d, doc)
    code, out, _ = _review(d, thorax[0], capsys)
    assert code == 3
    assert "#1 NOT SAFE on this scan: lung_vessels at" in out and "needs 2.73 mm" in out
    assert "verdict: SOME TRAJECTORIES FAIL" in out


def test_an_entry_moved_inside_the_lung(planned, thorax, tmp_path, capsys):
    d, doc = _copy(planned, tmp_path)
    t = doc["trajectories"][0]
    _move_entry(t, (np.asarray(t["entry"]) + np.asarray(t["target"])) / 2)
    _save(d, doc)
    code, out, _ = _review(d, thorax[0], capsys)
    assert code == 3
    assert "is not on the skin of this CT" in out


def test_a_needle_beyond_the_craniocaudal_limit(planned, thorax, tmp_path, capsys):
    d, doc = _copy(planned, tmp_path)
    entry = _rejected_entry(d, "craniocaudal_angle", doc["target"]["point"])
    _move_entry(doc["trajectories"][0], entry)
    doc["hard_constraints"]["max_craniocaudal_deg"] = 90
    _save(d, doc)
    code, out, _ = _review(d, thorax[0], capsys)
    assert code == 3
    assert "beyond the 20 deg limit" in out


def test_a_steep_insertion_angle(planned, thorax, tmp_path, capsys):
    """The path turned 75 degrees about the vertical axis at its entry, the target moved with it
    (in the target block too): it now runs almost along the skin."""
    d, doc = _copy(planned, tmp_path)
    t = doc["trajectories"][0]
    entry = np.asarray(t["entry"], float)
    v = np.asarray(t["target"], float) - entry
    a = np.radians(75.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    tip = entry + rot @ (v / np.linalg.norm(v)) * 40.0
    t["target"] = doc["target"]["point"] = [round(float(x), 2) for x in tip]
    _move_entry(t, entry)
    _save(d, doc)
    code, out, _ = _review(d, thorax[0], capsys)
    assert code == 3
    assert "from the skin normal, beyond 60 deg" in out


def _plan_knee(d: Path, procedure: str, capsys) -> str:
    """Plan the demo knee for ``procedure`` into ``d``; returns its CT's path."""
    knee = next(c for c in demo_cases() if c.id == "knee")
    assert main(["plan", "--ct", str(knee.ct), "--structures", str(knee.folder / knee.info["structures"]),
                 "--target-label", knee.info["target"]["label"], "--procedure", procedure,
                 "--out", str(d), "--n", "1"]) == 0
    capsys.readouterr()
    return str(knee.ct)


def test_an_entry_outside_the_approach_cone(thorax, tmp_path, capsys):
    d = tmp_path / "knee"
    knee_ct = _plan_knee(d, "knee-injection", capsys)
    doc = json.loads((d / "plan.json").read_text())
    _move_entry(doc["trajectories"][0], _rejected_entry(d, "approach_direction", doc["target"]["point"]))
    _save(d, doc)
    code, out, _ = _review(d, knee_ct, capsys)
    assert code == 3
    assert "approach, beyond" in out


def test_printed_numbers_that_disagree_with_the_path(planned, thorax, tmp_path, capsys):
    d, doc = _copy(planned, tmp_path)
    t = doc["trajectories"][0]
    t["length_mm"] = round(t["length_mm"] - 20, 1)  # the doctor would stop 2 cm short
    t["needle"] = {"gauge": "22G", "length_mm": 50, "outer_diameter_mm": 0.72}
    name = next(iter(t["clearance_mm"]))
    t["clearance_mm"][name] = 25.0
    _save(d, doc)
    code, out, _ = _review(d, thorax[0], capsys)
    assert code == 3
    assert "depth printed" in out and "is not in the catalogue of lung-biopsy" in out
    assert f"clearance of {name} printed 25.0 mm" in out


def test_swapped_structures_of_another_patient(planned, thorax, tmp_path, capsys):
    d, _ = _copy(planned, tmp_path)
    other = tmp_path / "other"
    knee = next(c for c in demo_cases() if c.id == "knee")
    assert main(["plan", "--ct", str(knee.ct), "--structures", str(knee.folder / knee.info["structures"]),
                 "--target-label", knee.info["target"]["label"], "--procedure", knee.info["procedure"],
                 "--out", str(other), "--n", "1"]) in (0, 3)
    capsys.readouterr()
    shutil.copy(other / "structures.seg.nrrd", d / "structures.seg.nrrd")
    code, _, err = _review(d, thorax[0], capsys)
    assert code == 2 and len(err) == 1
    assert "is not the structures file the plan was made against" in err[0]


@pytest.mark.parametrize("edit, message", [
    (lambda doc: doc.update(schema="planner.plan/99"), "was written by another version of planner"),
    (lambda doc: doc.update(procedure="liver-biopsy"), "is not the preset it was planned under"),
    (lambda doc: doc["preset"].update(sha256="0" * 64), "the rules differ: plan again"),
    (lambda doc: doc.pop("preset"), "records no preset hash"),
    (lambda doc: doc.pop("structures_file"), "records no hash of structures.seg.nrrd"),
    (lambda doc: doc["trajectories"][0].update(length_mm="far"), "trajectories/0/length_mm"),
    (lambda doc: doc["trajectories"][0].update(entry=[1, 2]), "trajectories/0/entry"),
    (lambda doc: doc["image"].update(sha256=None), "image/sha256"),
    (lambda doc: doc.update(trajectories={}), "trajectories"),
], ids=["schema-99", "procedure", "preset-hash", "no-preset", "no-structures-hash", "string", "short-point",
        "null-hash", "object-for-list"])
def test_an_edited_plan_is_refused_in_one_line(planned, thorax, tmp_path, capsys, edit, message):
    d, doc = _copy(planned, tmp_path)
    edit(doc)
    _save(d, doc)
    code, out, err = _review(d, thorax[0], capsys)
    assert code == 2, (out, err)
    assert len(err) == 1 and message in err[0], err
    assert "Traceback" not in out + "".join(err)


def test_a_nan_in_plan_json_is_refused(planned, thorax, tmp_path, capsys):
    d, _ = _copy(planned, tmp_path)
    text = (d / "plan.json").read_text()
    t = json.loads(text)["trajectories"][0]
    text = text.replace(f'"length_mm": {t["length_mm"]}', '"length_mm": NaN', 1)
    (d / "plan.json").write_text(text)
    code, _, err = _review(d, thorax[0], capsys)
    assert code == 2 and len(err) == 1 and "NaN is not a number a plan may hold" in err[0]


def test_the_plan_records_the_preset_it_was_planned_under(planned):
    doc = json.loads((planned / "plan.json").read_text())
    preset = load_preset("lung-biopsy")
    assert doc["preset"] == {"id": "lung-biopsy", "version": preset.version, "sha256": preset.sha256,
                             "approach": None, "side": None}


def test_the_schema_shipped_accepts_the_plans_written(planned):
    import jsonschema

    from planner.planning.output import plan_schema

    jsonschema.Draft202012Validator.check_schema(plan_schema())
    jsonschema.validate(json.loads((planned / "plan.json").read_text()), plan_schema())


def test_ultrasound_guided_paths_are_rechecked_for_a_probe_window(tmp_path, capsys):
    """knee-synovial-biopsy is under ultrasound: review re-places the probe. The plan's own path
    passes; an entry the planner ruled out for its ultrasound window (printed numbers made to
    agree) fails."""
    d = tmp_path / "us"
    knee_ct = _plan_knee(d, "knee-synovial-biopsy", capsys)
    code, out, _ = _review(d, knee_ct, capsys)
    assert code == 0, out
    doc = json.loads((d / "plan.json").read_text())
    _move_entry(doc["trajectories"][0], _rejected_entry(d, "ultrasound_window", doc["target"]["point"]))
    _save(d, doc)
    code, out, _ = _review(d, knee_ct, capsys)
    assert code == 3
    assert "no position of the ultrasound probe on the skin holds this needle" in out
