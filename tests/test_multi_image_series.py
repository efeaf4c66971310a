"""Series holding several images per slice position: echoes, phases, acquisitions, image types.

Each is split into its sub-volumes; the first is loaded by default and the corrections say so;
``echo=`` / ``phase=`` (``--echo`` / ``--phase``) choose another; a wrong choice is refused with
the list of those available.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA
from dicomgen import LANDMARKS, Acquisition, find_landmarks

from planner.errors import InputError
from planner.images import ImageMeta, load_image
from planner.testing.dicom_write import write_ct_slices

PLANNER = Path(sys.executable).with_name("planner")
KNEE_MR = SHARED_DATA / "knee-mr" / "dicom"
ACQ = Acquisition(n_slices=14, rows=40, columns=36, pixel_spacing=(3.0, 3.2), step=7.0)


def planner(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([str(PLANNER), *args], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def write_sub_volumes(folder: Path, extras: list[dict], modality: str = "CT") -> np.ndarray:
    """One series (one SeriesInstanceUID) whose sub-volume n holds the phantom + 100 n at the same
    positions, with ``extras[n]`` as its distinguishing attributes; files interleaved as scanners
    number them (all sub-volumes of a slice, then the next slice). Returns the phantom."""
    pos = ACQ.slice_positions()
    base = ACQ.sample(pos)
    meta = ImageMeta(modality=modality, study_instance_uid="1.2.3.4", series_instance_uid="1.2.3.4.5",
                     frame_of_reference_uid="1.2.3.4.6", series_description="multi")
    n_sub, n = len(extras), len(pos)
    for e, extra in enumerate(extras):
        write_ct_slices(
            folder, base + 100 * e, pos, ACQ.row_cosine, ACQ.column_cosine, ACQ.pixel_spacing, meta=meta,
            uid_seed=f"sub{e}", unsigned=False, extra=extra,
            file_names=[f"IM{k * n_sub + e + 1:04d}.dcm" for k in range(n)],
            instance_numbers=[k * n_sub + e + 1 for k in range(n)],
        )
    return base


ECHOES = [{"EchoNumbers": e, "EchoTime": f"{10 * e:g}"} for e in (1, 2, 3)]


def test_multi_echo_series_is_split_and_the_first_echo_loaded_by_default(tmp_path):
    base = write_sub_volumes(tmp_path, ECHOES, modality="MR")
    image = load_image(tmp_path, modality="MR")
    assert image.shape == base.shape
    assert np.array_equal(image.voxels, base)  # echo 1 only, nothing mixed in
    assert np.allclose(find_landmarks(image), LANDMARKS, atol=0.6)
    assert ("3 echoes in this series (EchoNumbers): 1 (TE 10 ms), 2 (TE 20 ms), 3 (TE 30 ms); "
            "echo 1 (TE 10 ms) loaded; choose another with --echo N") in image.meta.corrections

    third = load_image(tmp_path, modality="MR", echo=3)
    assert np.array_equal(third.voxels, base + 200)
    assert np.array_equal(third.affine, image.affine)
    assert any("echo 3 (TE 30 ms) loaded, as asked" in c for c in third.meta.corrections)

    with pytest.raises(InputError, match=r"no echo 4 .* 3 echoes: 1 \(TE 10 ms\), 2 \(TE 20 ms\), 3 \(TE 30 ms\)"):
        load_image(tmp_path, modality="MR", echo=4)


def test_echo_and_phase_options_on_info_convert_and_segment(tmp_path):
    series = tmp_path / "mr"
    base = write_sub_volumes(series, ECHOES, modality="MR")

    code, out, err = planner("info", str(series), "--modality", "MR")
    assert code == 0, err
    assert "3 echoes: 1 (TE 10 ms), 2 (TE 20 ms), 3 (TE 30 ms)" in out
    assert "echo 1 (TE 10 ms) loaded; choose another with --echo N" in out

    out_file = tmp_path / "echo2.nii.gz"
    code, out, err = planner("convert", str(series), str(out_file), "--modality", "MR", "--echo", "2")
    assert code == 0, err
    assert np.array_equal(load_image(out_file, modality=None).voxels, base + 100)

    code, _, err = planner("convert", str(series), str(tmp_path / "x.nrrd"), "--modality", "MR", "--echo", "7")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no echo 7" in err and "1 (TE 10 ms), 2 (TE 20 ms), 3 (TE 30 ms)" in err
    assert not (tmp_path / "x.nrrd").exists()

    code, _, err = planner("info", str(series), "--modality", "MR", "--phase", "2")
    assert code == 2 and len(err.splitlines()) == 1 and "no phase 2 to choose" in err, err

    code, _, err = planner("info", str(out_file), "--echo", "2")
    assert code == 2 and "--echo applies to DICOM input only" in err, err

    ct = tmp_path / "ct"
    write_sub_volumes(ct, [{"TemporalPositionIdentifier": t} for t in (1, 2)])
    code, _, err = planner("segment", str(ct), "--out", str(tmp_path / "seg"), "--phase", "5")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "no phase 5" in err and "2 phases (TemporalPositionIdentifier): 1, 2" in err


def test_contrast_phases_by_temporal_position(tmp_path):
    base = write_sub_volumes(tmp_path, [{"TemporalPositionIdentifier": t} for t in (1, 2, 3)])
    image = load_image(tmp_path)
    assert np.array_equal(image.voxels, base)
    assert any(c.startswith("3 phases at the same slice positions in this series (TemporalPositionIdentifier): "
                            "1, 2, 3; phase 1 loaded") for c in image.meta.corrections)
    assert np.array_equal(load_image(tmp_path, phase=3).voxels, base + 200)
    with pytest.raises(InputError, match=r"no phase 4 .*: 1, 2, 3; choose one of these with --phase N"):
        load_image(tmp_path, phase=4)


def test_repeated_acquisitions_split_but_per_slice_acquisition_numbers_do_not(tmp_path):
    base = write_sub_volumes(tmp_path / "two", [{"AcquisitionNumber": a} for a in (4, 7)])
    image = load_image(tmp_path / "two", phase=7)
    assert np.array_equal(image.voxels, base + 100)
    assert any("2 acquisitions at the same slice positions in this series (AcquisitionNumber): 4, 7; "
               "acquisition 7 loaded, as asked" in c for c in image.meta.corrections)

    # A sequential CT numbers each rotation's slices as their own acquisition: one volume, no split.
    folder = tmp_path / "sequential"
    base = write_sub_volumes(folder, [{}])
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        ds.AcquisitionNumber = int(ds.InstanceNumber + 1) // 2
        ds.save_as(p)
    image = load_image(folder)
    assert np.array_equal(image.voxels, base) and image.meta.corrections == ()


def test_dual_energy_image_types_are_numbered_and_listed(tmp_path):
    types = [["ORIGINAL", "PRIMARY", "AXIAL", "DE_80KV"], ["ORIGINAL", "PRIMARY", "AXIAL", "DE_140KV"]]
    base = write_sub_volumes(tmp_path, [{"ImageType": t} for t in types])
    code, out, err = planner("info", str(tmp_path))
    assert code == 0, err
    assert "2 image types (ImageType): 1 (ORIGINAL\\PRIMARY\\AXIAL\\DE_140KV), 2 (ORIGINAL\\PRIMARY\\AXIAL\\DE_80KV)" in out
    # numbered in sorted order: 1 is the 140 kV image (written second, so + 100)
    assert np.array_equal(load_image(tmp_path, phase=1).voxels, base + 100)
    assert np.array_equal(load_image(tmp_path, phase=2).voxels, base)


@pytest.mark.shared_data
def test_knee_multi_echo_mr_loads_each_echo_on_its_exact_oblique_feet_first_grid():
    """Checked against SimpleITK reading only the files of that echo, sorted by position."""
    import SimpleITK as sitk

    headers = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(KNEE_MR.glob("*.dcm"))]
    assert {str(h.PatientPosition) for _, h in headers} == {"FFS"}
    default = load_image(KNEE_MR, modality="MR")
    assert ("8 echoes in this series (EchoNumbers): 1 (TE 6.3 ms), 2 (TE 12.6 ms), 3 (TE 18.9 ms), 4 (TE 25.2 ms), "
            "5 (TE 31.6 ms), 6 (TE 37.9 ms), 7 (TE 44.2 ms), 8 (TE 50.5 ms); echo 1 (TE 6.3 ms) loaded; "
            "choose another with --echo N") in default.meta.corrections
    for echo in (1, 8):
        files = [(p, h) for p, h in headers if int(h.EchoNumbers) == echo]
        iop = np.array(files[0][1].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        files.sort(key=lambda ph: float(np.array(ph[1].ImagePositionPatient, float) @ normal))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p, _ in files])
        ref = reader.Execute()
        affine = np.eye(4)
        affine[:3, :3] = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
        affine[:3, 3] = ref.GetOrigin()

        image = default if echo == 1 else load_image(KNEE_MR, modality="MR", echo=echo)
        assert image.size_ijk == (256, 256, 24)
        assert np.abs(image.affine - affine).max() < 1e-4
        assert np.array_equal(image.voxels.astype(np.int32), sitk.GetArrayFromImage(ref).astype(np.int32))
    assert np.allclose(default.spacing, [0.625, 0.625, 4.0], atol=1e-3)


@pytest.mark.shared_data
def test_knee_info_lists_the_echoes(tmp_path):
    code, out, err = planner("info", str(KNEE_MR), "--modality", "MR", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [e["echo"] for e in doc["sub_volumes"]["echoes"]] == list(range(1, 9))
    assert doc["sub_volumes"]["echoes"][0]["echo_time_ms"] == pytest.approx(6.312)
    code, out, err = planner("info", str(KNEE_MR), "--modality", "MR")
    assert "8 echoes: 1 (TE 6.3 ms), 2 (TE 12.6 ms)," in out
