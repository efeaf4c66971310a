"""The report set on the real chest CT (DICOM, automatic segmentation): one plan, every export checked."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import ABDOMEN_CT, CHEST_CT
from planner.cli.main import main

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def chest_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("chest-report")
    code = main(["plan", "--ct", str(CHEST_CT), "--seed", "-82,82,-8", "--procedure", "lung-biopsy",
                 "--out", str(out), "--dicom"])
    assert code == 0
    return out, json.loads((out / "plan.json").read_text())


def test_real_chest_report_numbers_dicom_markups_and_review(chest_plan, capsys):
    import jsonschema
    import pydicom
    import pypdf
    import trimesh

    from planner.images import load_image
    from planner.report.dicom_export import validate_iod
    from planner.report.markups import markups_schema

    out, doc = chest_plan
    best = doc["trajectories"][0]
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in pypdf.PdfReader(str(out / "report.pdf")).pages))
    assert f"Depth skin to target {best['length_mm']:.1f} mm" in text
    assert f"Angle from vertical (AP axis) {best['angle_from_vertical_deg']:.1f}°" in text
    assert f"Craniocaudal angle (+ cranial) {best['craniocaudal_deg']:+.1f}°" in text
    assert f"{best['needle']['gauge']}, {best['needle']['length_mm']:.0f} mm" in text
    for name, d in best["clearance_mm"].items():
        assert f"{name} {d:.1f} mm" in text
    assert "Structures come from the automatic segmentation" in text

    ct = load_image(CHEST_CT)
    for f in sorted((out / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == ct.meta.study_instance_uid and validate_iod(ds) == []
    jsonschema.validate(json.loads((out / "plan.mrk.json").read_text()), markups_schema())

    # The lesion's mesh sits on the lesion the plan aimed at (within one voxel).
    lesion = trimesh.load(out / "meshes" / f"{doc['target']['label']}.stl")
    assert np.linalg.norm(lesion.center_mass - np.array(doc["target"]["point"])) < 0.5 * doc["target"]["diameter_mm"]

    capsys.readouterr()
    assert main(["review", str(out), "--ct", str(CHEST_CT), "--no-window"]) == 0
    assert "verdict: all trajectories verified" in capsys.readouterr().out
    assert main(["review", str(out), "--ct", str(ABDOMEN_CT), "--no-window"]) == 2
    assert "voxel hash" in capsys.readouterr().err
