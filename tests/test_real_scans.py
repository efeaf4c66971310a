"""The real scans in ../shared/data, with SimpleITK as the oracle (test-only dependency)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ABDOMEN_CT, CHEST_CT, CT3SLICE
from planner.cli.main import main
from planner.images import Image, load_image

sitk = pytest.importorskip("SimpleITK")

pytestmark = pytest.mark.shared_data


def sitk_series(folder) -> "sitk.Image":
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sitk_affine(img) -> np.ndarray:
    """SimpleITK's index -> physical (LPS) map as a 4x4 affine."""
    a = np.eye(4)
    a[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    a[:3, 3] = img.GetOrigin()
    return a


def assert_same_as_sitk(ours: Image, ref) -> None:
    """Same LPS corners and the same value at every LPS position."""
    ref_arr = sitk.GetArrayFromImage(ref)  # [k, j, i] like ours
    ref_aff = sitk_affine(ref)
    # Index map between the two grids: must be a signed permutation with integer offsets.
    m = np.linalg.inv(ref_aff) @ ours.affine
    assert np.allclose(m[:3, :3], np.round(m[:3, :3]), atol=1e-4), m
    assert np.allclose(m[:3, 3], np.round(m[:3, 3]), atol=1e-3), m
    ours_corners = ours.corners()
    ref_corners = np.array([ref.TransformContinuousIndexToPhysicalPoint(tuple(float(x) for x in ijk))
                            for ijk in np.array([[i, j, k] for k in (0, ref.GetSize()[2] - 1)
                                                 for j in (0, ref.GetSize()[1] - 1) for i in (0, ref.GetSize()[0] - 1)])])
    assert np.allclose(np.sort(ours_corners, axis=0), np.sort(ref_corners, axis=0), atol=1e-3)
    # Values: SimpleITK's array brought to our index order (axes permuted and flipped as the
    # index map says, the grids having the same corners) must equal ours voxel for voxel.
    perm = [int(np.argmax(np.abs(m[:3, a]))) for a in range(3)]  # our axis a -> its axis perm[a]
    signs = [float(np.sign(m[perm[a], a])) for a in range(3)]
    aligned = ref_arr.transpose([2 - perm[2 - p] for p in range(3)])
    for p in range(3):
        if signs[2 - p] < 0:
            aligned = np.flip(aligned, axis=p)
    assert aligned.shape == ours.shape
    assert np.array_equal(ours.voxels, aligned)

def test_chest_ct_dicom_matches_simpleitk():
    ours = load_image(CHEST_CT)
    assert ours.size_ijk == (512, 512, 141)
    assert np.allclose(ours.spacing, [0.9765625, 0.9765625, 2.0])
    assert ours.meta.corrections == ()
    assert_same_as_sitk(ours, sitk_series(CHEST_CT))
    # The right-lung mass described with the data set sits at about LPS (-82, 82, -8): soft tissue.
    ijk = np.rint(ours.lps_to_ijk([-82.0, 82.0, -8.0])).astype(int)
    assert ours.voxels[ijk[2], ijk[1], ijk[0]] > -300


def test_abdomen_nifti_matches_simpleitk():
    ours = load_image(ABDOMEN_CT)
    assert ours.size_ijk == (122, 101, 112)
    assert ours.orientation == "RAS"  # i points to the patient's right, j anterior
    assert_same_as_sitk(ours, sitk.ReadImage(str(ABDOMEN_CT)))


def test_three_slice_ct_loads_beside_its_seg_objects():
    ours = load_image(CT3SLICE)
    assert ours.size_ijk == (512, 512, 3)
    assert ours.meta.patient_id == "99000"
    assert_same_as_sitk(ours, sitk_series(CT3SLICE / "ct"))


def test_info_json_reports_geometry_and_hash(capsys):
    assert main(["info", str(CHEST_CT), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["error"] is None
    assert len(info["series"]) == 1 and info["series"][0]["images"] == 141
    im = info["image"]
    assert im["size_ijk"] == [512, 512, 141]
    assert im["orientation"] == "LPS"
    assert im["origin_lps_mm"] == [-250.0, -164.0, -164.5]
    assert len(im["sha256"]) == 64 and im["modality"] == "CT"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_convert_writes_files_other_readers_place_identically(tmp_path, capsys, suffix):
    out = tmp_path / f"chest{suffix}"
    assert main(["convert", str(CHEST_CT), str(out)]) == 0
    ours = load_image(CHEST_CT)
    back = load_image(out)
    assert back.sha256 == ours.sha256
    # An independent reader puts the converted voxels at the same LPS positions.
    assert_same_as_sitk(ours, sitk.ReadImage(str(out)))
