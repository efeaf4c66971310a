"""DICOM series assembly on generated series with known landmarks (LPS mm)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomgen import (
    LANDMARKS,
    ORIENTATIONS,
    Acquisition,
    find_landmarks,
    transcode_with_gdcm,
    write_acquisition,
    write_enhanced_ct,
)
from planner.errors import InputError
from planner.images import load_dicom, load_image, scan_folder

# A landmark found within this distance of its true LPS position is "in the right place".
TOL_MM = 0.5


def assert_landmarks(image, tol=TOL_MM):
    found = find_landmarks(image)
    err = np.linalg.norm(found - LANDMARKS, axis=1)
    assert err.max() < tol, f"landmarks off by {err} mm; found {found.tolist()}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plain axial series, uncompressed, and its loaded image."""
    folder = tmp_path_factory.mktemp("ref")
    write_acquisition(folder, Acquisition(), transfer_syntax="explicit")
    return folder, load_dicom(folder)


def test_reference_series_lands_at_true_positions(reference):
    folder, image = reference
    assert image.orientation == "LPS"
    assert image.meta.corrections == ()
    assert image.voxels.dtype == np.int16
    assert_landmarks(image)
    # File names are shuffled and InstanceNumber runs backwards: slices still ascend along z.
    z = image.ijk_to_lps([[0, 0, k] for k in range(image.shape[0])])[:, 2]
    assert np.all(np.diff(z) > 0)


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_orientations_round_trip_to_the_same_lps_landmarks(tmp_path, name):
    row, col = ORIENTATIONS[name]
    acq = Acquisition(row_cosine=row, column_cosine=col)
    write_acquisition(tmp_path, acq)
    image = load_dicom(tmp_path)
    assert np.allclose(image.direction[:, 0], row, atol=1e-6)
    assert np.allclose(image.direction[:, 1], col, atol=1e-6)
    assert_landmarks(image)


@pytest.mark.parametrize("syntax", ["implicit", "deflate", "rle", "jpeg-ls", "jpeg2000"])
def test_compressed_syntaxes_decode_to_identical_voxels(tmp_path, reference, syntax):
    _, ref = reference
    paths = write_acquisition(tmp_path, Acquisition(), transfer_syntax=syntax)
    ts = pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    from planner.testing.dicom_write import TRANSFER_SYNTAXES

    assert ts == TRANSFER_SYNTAXES[syntax]
    image = load_dicom(tmp_path)
    assert np.array_equal(image.voxels, ref.voxels)
    assert np.allclose(image.affine, ref.affine)


@pytest.mark.parametrize(
    "syntax, uid",
    [("jpeg-lossless-14", "1.2.840.10008.1.2.4.57"), ("jpeg-lossless-sv1", "1.2.840.10008.1.2.4.70")],
)
def test_jpeg_lossless_from_gdcm_decodes_to_identical_voxels(tmp_path, reference, syntax, uid):
    src_folder, ref = reference
    out = tmp_path / "jpeg"
    out.mkdir()
    for f in sorted(src_folder.glob("*.dcm")):
        transcode_with_gdcm(f, out / f.name, syntax)
    assert pydicom.dcmread(next(out.glob("*.dcm")), stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
    image = load_dicom(out)
    assert np.array_equal(image.voxels, ref.voxels)
    assert np.allclose(image.affine, ref.affine)


def test_enhanced_multiframe_ct_matches_single_frame_series(tmp_path, reference):
    _, ref = reference
    write_enhanced_ct(tmp_path, Acquisition())
    image = load_dicom(tmp_path)
    assert np.array_equal(image.voxels, ref.voxels)
    assert np.allclose(image.affine, ref.affine)


@pytest.mark.parametrize("tilt", [12.0, -20.0])
def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path, tilt):
    t = np.radians(tilt)
    # Tilted slice planes, table moving along z: slices stacked obliquely to their plane.
    acq = Acquisition(column_cosine=(0.0, np.cos(t), np.sin(t)), tilt_deg=tilt, step=2.0)
    paths = write_acquisition(tmp_path, acq, extra={"GantryDetectorTilt": tilt})
    ipp = np.array([pydicom.dcmread(p).ImagePositionPatient for p in paths], float)
    assert np.ptp(ipp[:, 1]) < 1e-3, "positions move along z only"
    image = load_dicom(tmp_path)
    assert any("gantry tilt" in c for c in image.meta.corrections)
    gram = image.direction.T @ image.direction
    assert np.allclose(gram, np.eye(3), atol=1e-9)
    assert_landmarks(image, tol=0.6)


def test_a_missing_slice_is_interpolated_and_reported(tmp_path):
    acq = Acquisition()
    s = np.delete(np.arange(acq.n_slices) * acq.step, 27)
    write_acquisition(tmp_path, acq, s_values=s)
    image = load_dicom(tmp_path)
    assert image.shape[0] == acq.n_slices
    assert np.isclose(image.spacing[2], acq.step)
    assert any("gap" in c for c in image.meta.corrections)
    assert_landmarks(image)


def test_uneven_spacing_is_resampled_to_the_nominal_step(tmp_path):
    acq = Acquisition(n_slices=40)
    s = np.concatenate([np.arange(0, 50, 2.5), 50 + np.arange(1, 21) * 2.0])  # steps 2.5 then 2.0 mm
    write_acquisition(tmp_path, acq, s_values=s)
    image = load_dicom(tmp_path)
    assert any("uneven slice spacing" in c for c in image.meta.corrections)
    assert np.allclose(image.direction.T @ image.direction, np.eye(3))
    z = image.ijk_to_lps([[0, 0, k] for k in range(image.shape[0])])[:, 2]
    assert np.allclose(np.diff(z), np.diff(z)[0])


def test_a_large_gap_is_refused_with_the_file_named(tmp_path):
    acq = Acquisition()
    s = np.delete(np.arange(acq.n_slices) * acq.step, [20, 21, 22])
    paths = write_acquisition(tmp_path, acq, s_values=s)
    with pytest.raises(InputError, match=r"gap of 10\.00 mm") as err:
        load_dicom(tmp_path)
    assert any(p.name in str(err.value) for p in paths)


def test_identical_duplicate_is_dropped_and_different_duplicate_refused(tmp_path):
    folder = tmp_path / "dup"
    paths = write_acquisition(folder, Acquisition(n_slices=20))
    shutil.copy(paths[5], folder / "copy_of_slice.dcm")
    image = load_dicom(folder)
    assert image.shape[0] == 20
    assert any("identical duplicate" in c for c in image.meta.corrections)

    ds = pydicom.dcmread(paths[5])
    arr = ds.pixel_array.copy()
    arr[0, 0] += 100
    ds.PixelData = arr.tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "copy_of_slice.dcm")
    with pytest.raises(InputError, match="different image at the same position"):
        load_dicom(folder)


def test_a_stray_image_of_another_size_is_skipped_but_half_and_half_refused(tmp_path):
    folder = tmp_path / "mixed"
    write_acquisition(folder, Acquisition(n_slices=30), seed="a")
    stray = tmp_path / "stray"
    odd = write_acquisition(stray, Acquisition(n_slices=1, rows=40, columns=40), seed="b")
    ds = pydicom.dcmread(odd[0])
    ds.SeriesInstanceUID = pydicom.dcmread(next(folder.glob("*.dcm"))).SeriesInstanceUID
    ds.save_as(folder / "odd.dcm")
    image = load_dicom(folder)
    assert image.shape == (30, 72, 80)
    assert any("size or orientation differs" in c for c in image.meta.corrections)

    half = tmp_path / "half"
    write_acquisition(half, Acquisition(n_slices=10), seed="c")
    uid = pydicom.dcmread(next(half.glob("*.dcm"))).SeriesInstanceUID
    for p in write_acquisition(tmp_path / "h2", Acquisition(n_slices=10, rows=40, columns=40), seed="d"):
        d = pydicom.dcmread(p)
        d.SeriesInstanceUID = uid
        d.save_as(half / ("b_" + p.name))
    with pytest.raises(InputError, match="mixes image sizes"):
        load_dicom(half)


def test_non_image_objects_are_skipped(tmp_path, reference):
    src, ref = reference
    folder = tmp_path / "study"
    shutil.copytree(src, folder / "series")
    # A basic structured report and a DICOMDIR-like directory record beside the images.
    from pydicom.dataset import Dataset, FileMetaDataset

    for name, sop_class in [("sr.dcm", "1.2.840.10008.5.1.4.1.1.88.11"), ("DICOMDIR", "1.2.840.10008.1.3.10")]:
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = sop_class
        fm.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        fm.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
        ds.Modality = "SR"
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / name, enforce_file_format=True)
    (folder / "notes.txt").write_text("not dicom")
    scan = scan_folder(folder)
    reasons = {Path(f).name: r for f, r in scan.skipped}
    assert reasons["sr.dcm"].startswith("structured report")
    assert reasons["DICOMDIR"] == "DICOMDIR"
    assert reasons["notes.txt"] == "not a DICOM file"
    image = load_dicom(folder)
    assert np.array_equal(image.voxels, ref.voxels)


def test_several_ct_series_are_listed_and_one_can_be_chosen(tmp_path):
    write_acquisition(tmp_path / "a", Acquisition(n_slices=10), seed="s1")
    write_acquisition(tmp_path / "b", Acquisition(n_slices=12), seed="s2")
    with pytest.raises(InputError, match="2 CT series found, choose one with --series") as err:
        load_dicom(tmp_path)
    uid = pydicom.dcmread(next((tmp_path / "b").glob("*.dcm"))).SeriesInstanceUID
    assert uid in str(err.value)
    assert load_dicom(tmp_path, series_uid=uid).shape[0] == 12


def test_rescale_slope_gives_float_hu(tmp_path):
    paths = write_acquisition(tmp_path, Acquisition(n_slices=6))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = "0.5"
        ds.save_as(p)
    image = load_dicom(tmp_path)
    assert image.voxels.dtype == np.float32
    stored = pydicom.dcmread(paths[0]).pixel_array.astype(float)
    k = int(round(image.lps_to_ijk(pydicom.dcmread(paths[0]).ImagePositionPatient)[2]))
    assert np.allclose(image.voxels[k], stored * 0.5 - 1024)


def test_load_image_dispatches_on_the_path(reference):
    folder, ref = reference
    assert load_image(folder).sha256 == ref.sha256


def test_bits_above_bits_stored_are_ignored(tmp_path, reference):
    """Some scanners leave overlay bits above BitsStored; they are not part of the HU value."""
    _, ref = reference
    paths = write_acquisition(tmp_path, Acquisition())
    for p in paths:
        ds = pydicom.dcmread(p)
        arr = ds.pixel_array.astype(np.uint16)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = (arr | np.uint16(0xF000)).tobytes()  # garbage in the 4 unused bits
        ds.save_as(p)
    image = load_dicom(tmp_path)
    assert np.array_equal(image.voxels, ref.voxels)


def test_values_beyond_int16_are_kept_as_float(tmp_path):
    paths = write_acquisition(tmp_path, Acquisition(n_slices=5))
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.RescaleIntercept = "32000"  # stored values up to ~2000 -> above 32767
        ds.save_as(p)
    image = load_dicom(tmp_path)
    assert image.voxels.dtype == np.float32
    assert image.voxels.max() > 32767
