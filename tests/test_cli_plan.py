"""`planner plan`: plan.json by the conventions, exit statuses 0 / 3 / 2, a readable summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.anatomy import load_structures
from planner.anatomy.target import target_from_structure
from planner.cli.main import main
from planner.demo import demo_cases
from planner.images import load_image


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    return case, str(case.ct), str(case.folder / case.info["structures"])


def test_plan_writes_the_conventions_plan_json(thorax, tmp_path, capsys):
    case, ct, structures = thorax
    code = main(["plan", "--ct", ct, "--structures", structures, "--target-label", "lung_nodule",
                 "--procedure", "lung-biopsy", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["schema"] == "planner.plan/1" and doc["coordinate_system"] == "LPS"
    assert doc["status"] == "ok" and doc["procedure"] == "lung-biopsy"
    assert doc["image"]["sha256"] == load_image(case.ct).sha256
    assert doc["image"]["series_instance_uid"]
    assert np.allclose(doc["target"]["point"], case.target_lps, atol=2.0)
    ranks = [t["rank"] for t in doc["trajectories"]]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) >= 2
    for t in doc["trajectories"]:
        assert set(t) >= {"rank", "entry", "target", "length_mm", "needle", "clearance_mm", "metrics"}
        assert t["length_mm"] == pytest.approx(np.linalg.norm(np.subtract(t["target"], t["entry"])), abs=0.2)
        assert t["needle"]["length_mm"] - 15 >= t["length_mm"]
        # No avoided rib or scapula within its margin (the exact clearances are reported).
        for name, d in t["clearance_mm"].items():
            if name.startswith(("rib_", "scapula_", "vertebrae_", "sternum")):
                assert d >= 3.0, (name, d)
    assert sum(doc["rejected"].values()) + 1 <= doc["n_candidates"]
    # The summary names the best entry point and what limits it.
    assert "#1 entry LPS" in printed and "closest:" in printed
    assert (tmp_path / "risk_map.npz").exists()


def test_target_inside_bone_exits_3_with_the_reason(thorax, tmp_path, capsys):
    case, ct, structures = thorax
    image = load_image(ct)
    sset = load_structures(structures, image)
    inside = target_from_structure(image, sset, "vertebrae_T6").point
    code = main(["plan", "--ct", ct, "--structures", structures, "--target", ",".join(f"{x:.2f}" for x in inside),
                 "--procedure", "lung-biopsy", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 3
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["status"] == "no_safe_path" and doc["trajectories"] == []
    # Every candidate that met the angle and side limits was stopped by bone.
    clearance = {k: v for k, v in doc["rejected"].items() if k.startswith("clearance:")}
    assert max(clearance, key=clearance.get) == "clearance:bone"
    assert sum(doc["rejected"].values()) == doc["n_candidates"]
    assert any("clearance:bone ruled out" in line and "within the angle and side limits" in line
               for line in doc["explanation"])
    assert "NO SAFE TRAJECTORY" in printed and "clearance:bone" in printed


def test_unknown_procedure_and_bad_target_exit_2(thorax, tmp_path, capsys):
    _, ct, structures = thorax
    assert main(["plan", "--ct", ct, "--target", "1,2", "--procedure", "lung-biopsy", "--out", str(tmp_path)]) == 2
    assert main(["plan", "--ct", ct, "--target", "0,0,0", "--procedure", "brain-surgery", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown procedure 'brain-surgery'" in err and "three numbers" in err
    assert not (tmp_path / "plan.json").exists()


def test_several_targets_in_one_plan(tmp_path, capsys):
    """Two sites of one knee: each gets its own trajectories, all in one plan.json."""
    import json

    import numpy as np

    from conftest import ROOT
    from planner.anatomy import load_structures
    from planner.images import load_image

    ct = load_image(ROOT / "assets/demo/knee/ct")
    sset = load_structures(ROOT / "assets/demo/knee/structures.nii.gz", ct)
    eff = np.argwhere(sset.mask("knee_effusion_right"))
    lps = ct.ijk_to_lps(eff[:, ::-1].astype(float))
    site = lps[np.argmax(lps[:, 0] - 0.5 * np.abs(lps[:, 2] - 50.0))]  # a medial part of the recess
    out = tmp_path / "two"
    code = main(["plan", "--ct", str(ROOT / "assets/demo/knee/ct"), "--structures",
                 str(ROOT / "assets/demo/knee/structures.nii.gz"), "--procedure", "knee-injection",
                 "--approach", "suprapatellar-medial", "--side", "right", "--target-label", "knee_effusion_right",
                 f"--target={site[0]:.1f},{site[1]:.1f},{site[2]:.1f}", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads((out / "plan.json").read_text())
    assert doc["status"] == "ok" and len(doc["targets"]) == 2
    assert doc["targets"][0]["target"]["label"] == "knee_effusion_right"
    assert doc["trajectories"] == doc["targets"][0]["trajectories"]  # the core fields are the first target's
    for block in doc["targets"]:
        assert block["status"] == "ok" and block["trajectories"]
        for t in block["trajectories"]:
            assert np.allclose(t["target"], block["target"]["point"], atol=0.01)
            assert t["entry"][0] > t["target"][0]  # medial of a right knee: towards the patient's left
    assert (out / "risk_map_2.npz").exists()
    assert printed.count("target ") >= 2
