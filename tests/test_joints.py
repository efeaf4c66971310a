"""Joint targets found from the bones: where a radiologist would put the needle tip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from planner.anatomy import StructureSet, load_structures
from planner.anatomy.joints import joint_target, knee_recess_target
from planner.cli.main import main
from planner.errors import InputError
from planner.images import load_image


@pytest.fixture(scope="module")
def knee():
    ct = load_image(ROOT / "assets/demo/knee/ct")
    return ct, load_structures(ROOT / "assets/demo/knee/structures.nii.gz", ct)


def test_knee_recess_from_the_bones_falls_in_the_effusion(knee):
    """The phantom's suprapatellar recess is distended by fluid: the bone-derived target is in it."""
    ct, sset = knee
    t = knee_recess_target(ct, sset, "right")
    kji = np.rint(ct.lps_to_ijk(np.array([t.point]))[0][::-1]).astype(int)
    assert sset.mask("knee_effusion_right")[tuple(kji)]
    patella_top = ct.ijk_to_lps(np.argwhere(sset.mask("patella_right"))[:, ::-1].astype(float))[:, 2].max()
    assert t.point[2] > patella_top  # above the patella
    assert t.label == "knee_recess_right" and "suprapatellar" in t.how


def test_joint_target_names_and_missing_bones(knee):
    ct, sset = knee
    with pytest.raises(InputError, match="knee_recess_right"):
        joint_target(ct, sset, "elbow_right")
    with pytest.raises(InputError, match="femur_left"):
        joint_target(ct, sset, "knee_recess_left")  # a right knee only
    with pytest.raises(InputError, match="femur_right"):
        joint_target(ct, StructureSet.for_image(ct), "hip_right")


def test_plan_to_a_joint_target_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "p"
    code = main(["plan", "--ct", str(ROOT / "assets/demo/knee/ct"), "--structures",
                 str(ROOT / "assets/demo/knee/structures.nii.gz"), "--target-joint", "knee_recess_right",
                 "--procedure", "knee-injection", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    doc = json.loads((out / "plan.json").read_text())
    assert doc["target"]["label"] == "knee_recess_right" and doc["trajectories"]
