"""`planner plan` on input a careful user would not give: each refused in one line or warned about.

Before: a target in the air was planned (from the skin of whatever lay nearest); structures of
another patient were planned against without a word; a target label naming an organ or a seed
that grew into a huge "lesion" went unremarked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planner.anatomy.target import LARGE_LESION_ML, Target, check_target  # noqa: F401
from planner.cli.main import main
from planner.demo import demo_cases
from planner.images import Image, load_image, save_image


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    return case, str(case.ct), str(case.folder / case.info["structures"])


def test_a_target_in_the_air_is_refused(thorax, demo_thorax, tmp_path, capsys):
    case, ct, structures = thorax
    image, _, body = demo_thorax
    corner = image.ijk_to_lps(np.array([[2.0, 2.0, image.shape[0] / 2]]))[0]  # a corner of the field: air
    assert not body[tuple(np.rint(image.lps_to_ijk(corner)[::-1]).astype(int))]
    code = main(["plan", "--ct", ct, "--structures", structures, "--target", ",".join(f"{x:.1f}" for x in corner),
                 "--procedure", "lung-biopsy", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "is outside the body on this scan" in err[0]
    assert not (tmp_path / "p").exists()  # nothing written, not even an empty folder


def test_structures_outside_this_body_are_refused(thorax, demo_thorax, tmp_path, capsys):
    case, ct, _ = thorax
    image, _, body = demo_thorax
    labels = np.zeros(image.shape, np.uint8)
    labels[2:12, 2:12, 2:12] = 1  # an "aorta" in the corner of the field, in the air
    save_image(Image(labels, image.affine), tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "aorta"}))
    code = main(["plan", "--ct", ct, "--structures", str(tmp_path / "labels.nii.gz"), "--target",
                 ",".join(f"{x:.1f}" for x in case.target_lps), "--procedure", "lung-biopsy", "--out",
                 str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "lie outside the body on this CT: they belong to another scan or patient" in err[0]


def test_a_target_label_that_is_not_a_lesion_is_flagged(thorax, tmp_path, capsys):
    case, ct, structures = thorax
    code = main(["plan", "--ct", ct, "--structures", structures, "--target-label", "heart",
                 "--procedure", "lung-biopsy", "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert code in (0, 3)
    assert "CHECK: target heart is a structure of class organ, not a lesion" in out
    doc = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert any("not a lesion or a collection" in w for w in doc["warnings"])
    html = (tmp_path / "p" / "report.html").read_text()
    assert "Check: target heart is a structure of class organ" in html


def test_a_large_seeded_lesion_is_flagged(demo_thorax):
    image, _, body = demo_thorax
    centre = next(c for c in demo_cases() if c.id == "thorax").target_lps
    big = Target(tuple(centre), "lesion", "seed", None, 120.0, 61.0, 70.0)
    small = Target(tuple(centre), "lesion", "seed", None, 3.0, 18.0, 21.0)
    assert any("120 ml (70 mm across), larger than most biopsy targets" in w for w in check_target(image, body, big))
    assert check_target(image, body, small) == []


def test_a_segmentation_that_finds_nothing_writes_nothing(tmp_path, capsys):
    """A scan of air: segment used to write empty masks and a .seg.nrrd without segments that
    plan could not read back; now it says nothing was found and writes nothing, and plan
    refuses to plan against nothing (every path would look safe)."""
    a = np.diag([1.0, 1.0, 2.0, 1.0])
    save_image(Image(np.full((20, 64, 64), -1000, np.int16), a), tmp_path / "air.nii.gz")
    assert main(["segment", str(tmp_path / "air.nii.gz"), "--out", str(tmp_path / "seg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "found nothing" in err[0] and "Nothing was written" in err[0]
    assert not (tmp_path / "seg").exists()
    assert main(["plan", "--ct", str(tmp_path / "air.nii.gz"), "--target", "30,30,10", "--procedure", "lung-biopsy",
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "found nothing" in err[0]
    assert not (tmp_path / "p").exists()


def test_empty_imported_structures_are_refused(thorax, tmp_path, capsys):
    case, ct, _ = thorax
    image = load_image(ct)
    save_image(Image(np.zeros(image.shape, np.uint8), image.affine), tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "aorta"}))
    code = main(["plan", "--ct", ct, "--structures", str(tmp_path / "labels.nii.gz"), "--target",
                 ",".join(f"{x:.1f}" for x in case.target_lps), "--procedure", "lung-biopsy", "--out",
                 str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing to plan against" in err[0], err


def test_a_series_with_blank_uids_is_planned_and_reviewed_by_its_voxel_hash(thorax, tmp_path, capsys):
    """Anonymisers blank the UIDs: such a series is planned, the plan says so, review binds it by
    the voxel hash alone; --dicom, which files the report in the CT's study, is refused."""
    import pydicom

    case, ct, structures = thorax
    src = tmp_path / "anon"
    src.mkdir()
    for f in sorted(Path(ct).iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ds.StudyInstanceUID = ds.SOPInstanceUID = ""
        ds.file_meta.MediaStorageSOPInstanceUID = ""
        ds.save_as(src / f.name)
    out = tmp_path / "p"
    args = ["plan", "--ct", str(src), "--structures", structures, "--target-label", "lung_nodule",
            "--procedure", "lung-biopsy", "--n", "1", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    doc = json.loads((out / "plan.json").read_text())
    assert doc["image"]["series_instance_uid"] == ""
    assert any("blank" in c for c in doc["image"]["corrections"])
    assert main(["review", str(out), "--ct", str(src), "--no-window"]) == 0
    printed = capsys.readouterr().out
    assert "identified by its voxel hash alone" in printed and "verdict: all trajectories verified" in printed
    before = sorted(p.name for p in out.iterdir())
    assert main(args + ["--dicom"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "StudyInstanceUID is blank" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before  # the plan before is left as it was
