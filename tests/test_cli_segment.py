"""`planner segment`: files a user can check in 3D Slicer and give back with --structures."""

from __future__ import annotations

import json

import numpy as np

from planner.anatomy import load_structures
from planner.anatomy.registry import StructureClass
from planner.cli.main import main
from planner.demo import demo_cases
from planner.images import load_image


def test_segment_writes_one_nifti_per_structure_and_a_slicer_file_that_read_back(tmp_path, capsys):
    case = next(c for c in demo_cases() if c.id == "thorax")
    out = tmp_path / "seg"
    assert main(["segment", str(case.ct), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lung_left" in printed and "wrote" in printed
    index = json.loads((out / "structures.json").read_text())
    names = {row["name"] for row in index["structures"]}
    assert {"body", "lung_left", "lung_right", "trachea", "bone"} <= names
    for name in names:
        assert (out / f"{name}.nii.gz").exists()
    ct = load_image(case.ct)
    # The folder reads back as a TotalSegmentator folder, the .seg.nrrd as a Slicer segmentation.
    folder = load_structures(out, ct)
    slicer = load_structures(out / "segmentation.seg.nrrd", ct)
    for name in ("lung_left", "bone"):
        assert np.array_equal(folder.mask(name), slicer.mask(name))
    assert folder["bone"].cls == StructureClass.BONE and folder["ribs_left"].cls == StructureClass.BONE
    # The mediastinal structures come back with the classes the planner keeps needles off by.
    assert {"heart", "aorta", "mediastinal_vessels"} <= names
    for got in (folder, slicer):
        assert got["heart"].cls == StructureClass.ORGAN
        assert got["aorta"].cls == got["mediastinal_vessels"].cls == StructureClass.VESSEL
    # Against the phantom's truth: the automatic left lung covers the true left lobes.
    truth = load_structures(case.folder / case.info["structures"], ct)
    lobes = truth.union(names=["lung_upper_lobe_left", "lung_lower_lobe_left"])
    auto = folder.mask("lung_left")
    dice = 2 * np.count_nonzero(lobes & auto) / (np.count_nonzero(lobes) + np.count_nonzero(auto))
    assert dice > 0.9, dice
