"""MR input: a sagittal MR series of the demo knee loads and is planned from imported structures."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from checker import Checker
from conftest import ROOT
from planner.cli.main import main
from planner.images import Image, load_image
from planner.testing.dicom_write import write_image_as_dicom
from planner.testing.phantoms.knee import make_knee

# CT number -> an MR signal (T2-like: fluid and fat bright, tendon, cortex and flowing blood dark)
HU = [-1000, -500, -95, -30, 10, 48, 75, 90, 100, 190, 320, 1250]
MR = [0, 0, 900, 850, 1000, 300, 250, 60, 500, 80, 700, 30]


@pytest.fixture(scope="module")
def knee_mr(tmp_path_factory):
    """The demo knee as a sagittal MR stack (slices along x), written as DICOM MR images."""
    ct = make_knee().ct
    signal = np.interp(ct.voxels.astype(float), HU, MR).astype(np.int16)
    # [k, j, i] -> [i, j, k]: slices along the patient's left-right axis
    voxels = np.ascontiguousarray(np.transpose(signal, (2, 1, 0)))
    affine = ct.affine.copy()
    affine[:, [0, 2]] = ct.affine[:, [2, 0]]
    meta = dataclasses.replace(ct.meta, modality="MR", series_description="Knee T2 sagittal (synthetic)")
    mr = Image(voxels, affine, meta)
    folder = tmp_path_factory.mktemp("knee-mr") / "dicom"
    write_image_as_dicom(mr, folder, uid_seed="knee-mr")
    return folder, ct


def test_sagittal_mr_loads_at_the_positions_of_the_ct(knee_mr):
    folder, ct = knee_mr
    mr = load_image(folder, modality="MR")
    assert mr.meta.modality == "MR"
    normal = np.cross(mr.affine[:3, 0], mr.affine[:3, 1])
    assert abs(abs(normal[0]) / np.linalg.norm(normal) - 1.0) < 1e-6  # sagittal slices
    # the same physical box as the CT it was made from
    assert np.allclose(np.sort(mr.corners(), axis=0), np.sort(ct.corners(), axis=0), atol=1e-3)
    with pytest.raises(Exception, match="MR"):
        load_image(folder, modality="CT")  # a CT-only command refuses it, naming the modality


def test_mr_plan_needs_imported_structures_and_says_so(knee_mr, tmp_path, capsys):
    folder, _ = knee_mr
    structures = ROOT / "assets/demo/knee/structures.nii.gz"
    args = ["plan", "--ct", str(folder), "--modality", "MR", "--target-label", "knee_effusion_right",
            "--procedure", "knee-injection", "--out", str(tmp_path / "plan")]
    assert main(args) == 2  # no structures: segmented automatically, and this one-echo T2 shows no effusion apart
    assert "knee_effusion_right" in capsys.readouterr().err
    assert main(args + ["--structures", str(structures)]) == 0
    doc = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert doc["image"]["modality"] == "MR" and doc["status"] == "ok"
    assert any("CT-specific" in n for n in doc["structures_notes"])
    # the trajectories are safe against the structures on the MR grid
    from planner.anatomy import load_structures
    from planner.planning import load_preset

    mr = load_image(folder, modality="MR")
    sset = load_structures(structures, mr)
    chk = Checker(mr, sset, load_preset("knee-injection"))
    for t in doc["trajectories"]:
        assert not chk.check(np.array(t["entry"]), np.array(t["target"])), t["rank"]
        assert t["entry"][0] < t["target"][0]  # lateral approach of a right knee
