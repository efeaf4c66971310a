"""Readers never invent geometry, and every refusal is one line on stderr (exit status 2).

Headers that do not define where the voxels lie (NIfTI without qform/sform, NRRD without
space or space directions) or hold impossible values (DICOM RescaleSlope 0, PixelSpacing 0,
degenerate ImageOrientationPatient, ...) are refused with the file and the tag named; a series
whose UIDs were blanked by an anonymiser loads, grouped by its other attributes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomgen import Acquisition, write_acquisition

from planner.images import load_image

PLANNER = Path(sys.executable).with_name("planner")


def planner(*args: str) -> tuple[int, str, str]:
    """Run the installed command as a user would (library warnings not silenced)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([str(PLANNER), *args], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, f"exit status {code}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith("planner: error: ")
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------
AFFINE = np.array([[0.8, 0, 0, 10.0], [0, 0.9, 0, 20.0], [0, 0, 2.0, 30.0], [0, 0, 0, 1]])


def write_nifti(path: Path, edit, data: np.ndarray | None = None) -> Path:
    """A NIfTI file whose stored header is changed by ``edit(header)`` after nibabel wrote it
    (nibabel would otherwise rewrite qform/sform from the affine)."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) if data is None else data
    img = nib.Nifti1Image(data, AFFINE)
    img.set_sform(AFFINE, code=1)
    img.set_qform(AFFINE, code=1)
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header(binaryblock=bytes(raw[:348]), check=False)
    edit(header)
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    return path


def _set(**values):
    def edit(h):
        for k, v in values.items():
            h[k] = v
    return edit


def _pixdim(index: int, value: float, **codes):
    def edit(h):
        for k, v in codes.items():
            h[k] = v
        h["pixdim"][index] = value
    return edit


def test_nifti_without_qform_and_sform_is_refused_not_mirrored(tmp_path):
    """nibabel would place such a file on a default, left-right mirrored grid with no word."""
    path = write_nifti(tmp_path / "nocodes.nii", _set(sform_code=0, qform_code=0))
    code, _, err = planner("info", str(path))
    assert_one_line_error(code, err, str(path), "qform_code and sform_code are both 0", "nothing was loaded")
    code, _, err = planner("convert", str(path), str(tmp_path / "out.nrrd"))
    assert_one_line_error(code, err, "qform_code and sform_code are both 0")
    assert not (tmp_path / "out.nrrd").exists()


@pytest.mark.parametrize(
    "name, edit, fragment",
    [
        ("pixdim 0 (qform)", _pixdim(2, 0.0, sform_code=0), "pixdim[2] 0 is impossible"),
        ("pixdim 0 (sform)", _pixdim(1, 0.0), "pixdim[1] 0 is impossible"),
        ("pixdim NaN", _pixdim(2, np.nan), "pixdim[2] NaN is impossible"),
        ("pixdim inf (qform)", _pixdim(3, np.inf, sform_code=0), "pixdim[3] infinity is impossible"),
        ("negative pixdim (qform)", _pixdim(2, -0.9, sform_code=0), "pixdim[2] -0.9 is negative"),
        ("qfac NaN (qform)", _pixdim(0, np.nan, sform_code=0), "pixdim[0] (qfac) NaN"),
        ("sform NaN", _set(srow_z=[0, 0, np.nan, 30]), "srow_z [0, 0, NaN, 30] is not finite"),
        ("singular sform", _set(srow_y=[0.8, 0, 0, 20]), "the sform is singular"),
        ("zero sform axis", _set(srow_z=[0, 0, 0, 30]), "the sform is singular"),
        ("qform offset NaN", _set(sform_code=0, qoffset_x=np.nan), "qoffset_x [NaN] is not finite"),
    ],
)
def test_nifti_with_impossible_geometry_is_refused_in_one_line(tmp_path, name, edit, fragment):
    path = write_nifti(tmp_path / "bad.nii", edit)
    code, out, err = planner("info", str(path))
    assert_one_line_error(code, err, str(path), fragment)
    assert "spacing" not in out  # no geometry shown for it


def test_library_messages_do_not_precede_the_error(tmp_path):
    """nibabel logs its own header fixes to stderr; a load that then fails prints only our line."""
    four_d = np.zeros((4, 5, 6, 2), np.int16)  # refused: two volumes
    path = write_nifti(tmp_path / "two.nii", _pixdim(2, -0.9), data=four_d)  # sform used: pixdim sign harmless
    code, _, err = planner("info", str(path))
    assert_one_line_error(code, err, str(path), "a 3D volume is needed")


# ---------------------------------------------------------------------------------------------
# NRRD
# ---------------------------------------------------------------------------------------------
def write_nrrd(path: Path, fields: str) -> Path:
    head = f"NRRD0004\ntype: short\ndimension: 3\n{fields}sizes: 4 5 6\nencoding: raw\nendian: little\n\n"
    path.write_bytes(head.encode() + np.zeros(120, "<i2").tobytes())
    return path


LPS = "space: left-posterior-superior\n"
ORIGIN = "space origin: (0,0,0)\n"


@pytest.mark.parametrize(
    "name, fields, fragment",
    [
        ("no space", "space dimension: 3\nspace directions: (1,0,0) (0,1,0) (0,0,2)\n" + ORIGIN, "no 'space' field"),
        ("spacings only", "spacings: 1 1 2\n", "no 'space' field"),
        ("no space directions", LPS + ORIGIN, "no 'space directions'"),
        ("zero direction", LPS + "space directions: (1,0,0) (0,0,0) (0,0,2)\n" + ORIGIN,
         "'space directions' vector 2 is zero"),
        ("NaN direction", LPS + "space directions: (1,0,0) (0,nan,0) (0,0,2)\n" + ORIGIN, "'space directions'"),
        ("none direction", LPS + "space directions: (1,0,0) none (0,0,2)\n" + ORIGIN, "'space directions'"),
        ("parallel directions", LPS + "space directions: (1,0,0) (2,0,0) (0,0,2)\n" + ORIGIN, "are not independent"),
    ],
)
def test_nrrd_without_a_defined_grid_is_refused_in_one_line(tmp_path, name, fields, fragment):
    path = write_nrrd(tmp_path / "bad.nrrd", fields)
    code, _, err = planner("info", str(path))
    line = assert_one_line_error(code, err, str(path), fragment)
    assert "array(" not in line


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_series(tmp_path):
    folder = tmp_path / "series"
    paths = write_acquisition(folder, Acquisition(n_slices=6, rows=16, columns=16))
    return folder, paths


def edit_dicom(path: Path, **values) -> None:
    with pydicom.config.disable_value_validation():
        ds = pydicom.dcmread(path)
        for k, v in values.items():
            setattr(ds, k, v)
        ds.save_as(path)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"RescaleSlope": "0"}, "RescaleSlope 0 is impossible (tag (0028,1053))"),
        ({"RescaleSlope": "NaN"}, "RescaleSlope NaN is impossible (tag (0028,1053))"),
        ({"RescaleSlope": "inf"}, "RescaleSlope infinity is impossible (tag (0028,1053))"),
        ({"RescaleIntercept": "nan"}, "RescaleIntercept NaN is impossible (tag (0028,1052))"),
        ({"RescaleIntercept": "-inf"}, "RescaleIntercept -infinity is impossible (tag (0028,1052))"),
        ({"PixelSpacing": ["0", "0.5"]}, "PixelSpacing [0, 0.5] is impossible (tag (0028,0030))"),
        ({"PixelSpacing": ["-1", "0.5"]}, "PixelSpacing [-1, 0.5] is impossible (tag (0028,0030))"),
        ({"PixelSpacing": ["nan", "0.5"]}, "PixelSpacing [NaN, 0.5] is impossible (tag (0028,0030))"),
        ({"ImageOrientationPatient": ["0", "0", "0", "0", "1", "0"]}, "(tag (0020,0037)): the row direction is a zero vector"),
        ({"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]}, "(tag (0020,0037)): the row and column directions are parallel"),
        ({"ImageOrientationPatient": ["nan", "0", "0", "0", "1", "0"]}, "ImageOrientationPatient [NaN, 0, 0, 0, 1, 0] is impossible"),
        ({"ImagePositionPatient": ["0", "inf", "0"]}, "ImagePositionPatient [0, infinity, 0] is impossible (tag (0020,0032))"),
        ({"Rows": 0}, "Rows 0 is impossible (tag (0028,0010))"),
        ({"NumberOfFrames": "0"}, "NumberOfFrames 0 is impossible (tag (0028,0008))"),
        ({"SamplesPerPixel": 0}, "SamplesPerPixel 0 is impossible (tag (0028,0002))"),
        ({"BitsStored": 20}, "BitsStored 20 is impossible (tag (0028,0101))"),
        ({"PixelRepresentation": 2}, "PixelRepresentation 2 is impossible (tag (0028,0103))"),
    ],
)
def test_impossible_dicom_values_are_refused_naming_file_and_tag(small_series, tmp_path, values, fragment):
    folder, paths = small_series
    victim = paths[3]
    edit_dicom(victim, **values)
    out = tmp_path / "out.nii.gz"
    code, _, err = planner("convert", str(folder), str(out))
    assert_one_line_error(code, err, str(victim), fragment, "nothing was loaded")
    assert not out.exists()


def test_failures_of_every_pixel_decoder_are_merged_into_one_line(tmp_path):
    folder = tmp_path / "rle"
    paths = write_acquisition(folder, Acquisition(n_slices=6, rows=32, columns=32), transfer_syntax="rle")
    victim = paths[2]
    raw = bytearray(victim.read_bytes())
    raw[-180:-20] = b"\x5a" * 160  # inside the RLE segments: every decoder refuses them
    victim.write_bytes(bytes(raw))
    code, _, err = planner("info", str(folder))
    line = assert_one_line_error(code, err, str(victim), "cannot decode the pixel data (RLE Lossless)")
    # each decoder's own reason is kept, joined on the one line
    assert "pylibjpeg:" in line and "pydicom:" in line, line


# ---------------------------------------------------------------------------------------------
# Blank UIDs (anonymised series)
# ---------------------------------------------------------------------------------------------
def blank_uids(paths: list[Path], **also) -> None:
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = ""
        ds.StudyInstanceUID = ""
        ds.SOPInstanceUID = ""
        ds.file_meta.MediaStorageSOPInstanceUID = ""
        for k, v in also.items():
            setattr(ds, k, v)
        ds.save_as(p)


def test_series_with_blank_uids_loads_and_says_the_hash_binds_the_plan(tmp_path):
    acq = Acquisition(n_slices=10, rows=24, columns=20)
    ref = load_image(write_acquisition(tmp_path / "ref", acq, seed="blank")[0].parent)
    paths = write_acquisition(tmp_path / "anon", acq, seed="blank")
    blank_uids(paths)

    image = load_image(tmp_path / "anon")
    assert np.array_equal(image.voxels, ref.voxels)
    assert np.allclose(image.affine, ref.affine)
    assert image.meta.series_instance_uid == "" and image.meta.study_instance_uid == ""
    note = " ".join(image.meta.corrections)
    assert "SeriesInstanceUID, StudyInstanceUID and SOPInstanceUID are blank" in note
    assert "bound to it by the voxel hash alone" in note

    code, out, err = planner("info", str(tmp_path / "anon"))
    assert code == 0, err
    assert "(blank SeriesInstanceUID)" in out and "blank-uid-" in out
    assert "voxel hash alone" in out  # the correction is shown


def test_two_blank_uid_series_are_told_apart_by_a_stable_key(tmp_path):
    folder = tmp_path / "study"
    a = write_acquisition(folder / "a", Acquisition(n_slices=8, rows=24, columns=20), seed="a")
    b = write_acquisition(folder / "b", Acquisition(n_slices=12, rows=24, columns=20, step=2.0), seed="b")
    blank_uids(a, SeriesNumber=2, SeriesDescription="arterial")
    blank_uids(b, SeriesNumber=3, SeriesDescription="venous")

    code, _, err = planner("info", str(folder))
    line = assert_one_line_error(code, err, "2 CT series found", "choose one with --series")
    keys = [w.strip(";(,") for w in line.split() if w.startswith("blank-uid-")]
    assert len(set(keys)) == 2

    # the same files elsewhere give the same keys, so a key written down today still works
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    for key in keys:
        code, _, err = planner("info", str(moved), "--series", key, "--json")
        assert code == 0, err
    import json

    doc = json.loads(planner("info", str(moved), "--series", keys[0], "--json")[1])
    n = doc["image"]["size_ijk"][2]
    want = {"arterial": 8, "venous": 12}[next(s["description"] for s in doc["series"] if s["key"] == keys[0])]
    assert n == want
    assert doc["image"]["series_instance_uid"] == ""
