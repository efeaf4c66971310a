"""NIfTI and NRRD: RAS/LPS at the file boundary, exact geometry through write and read."""

from __future__ import annotations

import gzip

import nibabel as nib
import nrrd
import numpy as np
import pytest

from dicomgen import LANDMARKS, ORIENTATIONS, Acquisition, find_landmarks, write_acquisition
from planner.errors import InputError
from planner.images import Image, load_dicom, load_image, save_image


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    row, col = ORIENTATIONS["oblique"]
    folder = tmp_path_factory.mktemp("obl")
    write_acquisition(folder, Acquisition(row_cosine=row, column_cosine=col, n_slices=40))
    return load_dicom(folder)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_write_and_read_back_keeps_voxels_and_lps_geometry(tmp_path, oblique, suffix):
    out = tmp_path / f"vol{suffix}"
    save_image(oblique, out)
    back = load_image(out)
    assert np.array_equal(back.voxels, oblique.voxels)
    assert np.allclose(back.affine, oblique.affine, atol=1e-5)
    assert np.linalg.norm(find_landmarks(back) - LANDMARKS, axis=1).max() < 0.5
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_nifti_on_disk_is_ras(tmp_path):
    affine = np.diag([0.7, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-100.0, 50.0, 10.0]
    vox = np.zeros((5, 6, 7), np.int16)
    vox[3, 2, 1] = 1000  # k=3, j=2, i=1
    out = tmp_path / "x.nii.gz"
    save_image(Image(vox, affine), out)
    raw = nib.load(str(out))
    assert raw.get_fdata()[1, 2, 3] == 1000  # NIfTI arrays are [i, j, k]
    lps = Image(vox, affine).ijk_to_lps([1, 2, 3])
    ras = raw.affine @ np.array([1, 2, 3, 1.0])
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_nrrd_in_ras_space_is_flipped_to_lps(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)  # file order i, j, k (Fortran)
    data[1, 2, 3] = 7
    header = {
        "space": "right-anterior-superior",
        "space directions": [[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]],
        "space origin": [10.0, 20.0, 30.0],
        "kinds": ["domain"] * 3,
    }
    path = tmp_path / "ras.nrrd"
    nrrd.write(str(path), data, header)
    im = load_image(path)
    assert im.voxels[3, 2, 1] == 7
    assert np.allclose(im.ijk_to_lps([1, 2, 3]), [-(10 + 1), -(20 + 4), 30 + 9])


def test_multi_volume_nifti_and_truncated_nifti_are_refused(tmp_path):
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), str(four_d))
    with pytest.raises(InputError, match="3D volume"):
        load_image(four_d)
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(np.ones((40, 40, 40), np.int16), np.eye(4)), str(good))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:20000])
    with pytest.raises(InputError, match="cut.nii"):
        load_image(cut)


def test_absurd_nifti_header_is_refused_before_allocating(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    img.header.set_data_shape((30000, 30000, 30000))
    path = tmp_path / "huge.nii.gz"
    raw = img.header.binaryblock + b"\0" * 4 + np.zeros(8, np.int16).tobytes()
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(InputError, match="header is probably corrupt"):
        load_image(path)


@pytest.fixture
def kept():
    from planner.images import keep_loaded

    keep_loaded(1)
    yield keep_loaded
    keep_loaded(0)


def test_a_kept_scan_is_reused_only_while_its_files_are_unchanged(tmp_path, oblique, kept):
    """A cohort worker keeps the last scan it loaded (planner.batch): the same image again while
    the files are the ones read, and the new content as soon as any file changes."""
    import os

    nii = tmp_path / "ct.nii.gz"
    save_image(oblique, nii)
    first = load_image(nii)
    assert load_image(nii) is first
    assert not first.voxels.flags.writeable  # shared between cases: nobody may write into it
    changed = Image(oblique.voxels + 1, oblique.affine, oblique.meta)
    save_image(changed, nii)
    again = load_image(nii)
    assert again is not first and np.array_equal(again.voxels, changed.voxels)

    folder = tmp_path / "dicom"
    files = write_acquisition(folder, Acquisition(n_slices=12))
    series = load_image(folder)
    assert load_image(folder) is series
    assert load_image(nii) is not again  # one scan kept: the folder took its place
    os.remove(files[0])  # one slice gone: the folder is read again and says so
    fewer = load_image(folder)
    assert fewer is not series
    assert (fewer.shape, fewer.meta.corrections) != (series.shape, series.meta.corrections)
    kept(0)
    assert load_image(folder) is not load_image(folder)  # the default: every load reads the files
