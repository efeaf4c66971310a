"""PET in SUV on the real FDG PET/CT of a thigh sarcoma, and fusion onto its CT.

The shared PET is stored in SUV body weight (Units GML). BQML series are built from it here:
its values are turned back into activity concentration (Bq/ml) for a chosen dose, weight,
injection and scan times and half-life, by giving each slice its own RescaleSlope, and written
as a valid PT series with pydicom. The SUV the loader computes is compared with the file's own
values and with an independent computation, written below from the tags of the written files.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA
from pydicom.uid import generate_uid

from planner.cli.main import main
from planner.errors import InputError
from planner.images import Image, load_image, load_pet, read_pet, resample_to
from planner.images.nifti import load_nifti

pytestmark = [pytest.mark.shared_data,
              pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")]  # the file's SH

CASE = SHARED_DATA / "pet-ct-sarcoma"
PET, CT, RTSTRUCT = CASE / "pet", CASE / "ct", CASE / "ct-rtstruct" / "RS.dcm"

# The made-up injection and patient of the BQML series (not the shared file's own).
DOSE_BQ = 352.4e6
HALF_LIFE_S = 6586.2  # 18F
WEIGHT_KG = 64.0
HEIGHT_M = 1.71
SEX = "F"
DAY = dt.date(2000, 9, 7)
INJECTION = dt.datetime(2000, 9, 7, 10, 2, 30)
SERIES_START = dt.datetime(2000, 9, 7, 11, 5, 0)  # 62.5 min uptake
FRAME_MS = 240000
BED_STARTS = (dt.datetime(2000, 9, 7, 11, 5, 0), dt.datetime(2000, 9, 7, 11, 9, 12))  # two bed positions, NONE


# ---------------------------------------------------------------------------------------------
# Independent computations (from the DICOM tags, not through planner.images.pet)
# ---------------------------------------------------------------------------------------------
def janmahasatian_lbm(weight: float, height: float, sex: str) -> float:
    """Janmahasatian et al. 2005, Clin Pharmacokinet 44:1051, eq. for men and women (kg, m)."""
    bmi = weight / height / height
    return 9270 * weight / ((6680 + 216 * bmi) if sex == "M" else (8780 + 244 * bmi))


def _dt_of(date: str, time: str) -> dt.datetime:
    return dt.datetime.strptime(date + time.split(".")[0].ljust(6, "0"), "%Y%m%d%H%M%S")


def independent_suv(folder: Path, kind: str = "bw") -> dict[float, np.ndarray]:
    """SUV of every image of a PT series, keyed by the slice's LPS z, straight from the tags."""
    out = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        value = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        weight = float(ds.PatientWeight)
        mass_g = 1000 * (weight if kind == "bw" else janmahasatian_lbm(weight, float(ds.PatientSize), ds.PatientSex))
        if ds.Units == "GML":
            suv = value * mass_g / (1000 * weight)
        else:
            rp = ds.RadiopharmaceuticalInformationSequence[0]
            dose, half = float(rp.RadionuclideTotalDose), float(rp.RadionuclideHalfLife)
            injected = _dt_of(ds.SeriesDate, rp.RadiopharmaceuticalStartTime)
            if ds.DecayCorrection == "ADMIN":
                suv = value * mass_g / dose
            elif ds.DecayCorrection == "START":
                t = (_dt_of(ds.SeriesDate, ds.SeriesTime) - injected).total_seconds()
                suv = value * mass_g / (dose * math.exp(-math.log(2) * t / half))
            else:  # NONE: the frame's mean of a decaying activity, back to its start, then as START
                t = (_dt_of(ds.AcquisitionDate, ds.AcquisitionTime) - injected).total_seconds()
                x = math.log(2) / half * float(ds.ActualFrameDuration) / 1000
                suv = value * x / (1 - math.exp(-x)) * mass_g / (dose * math.exp(-math.log(2) * t / half))
        out[round(float(ds.ImagePositionPatient[2]), 3)] = suv
    return out


def slice_of(image: Image, z: float) -> np.ndarray:
    k = image.lps_to_ijk([image.origin[0], image.origin[1], z])[2]
    assert abs(k - round(k)) < 1e-3
    return image.voxels[int(round(k))]


# ---------------------------------------------------------------------------------------------
# Writing BQML series from the shared GML one
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gml_files() -> list[tuple[str, pydicom.Dataset]]:
    return [(f.name, pydicom.dcmread(f)) for f in sorted(PET.iterdir())]


def _dose_at(t: dt.datetime) -> float:
    return DOSE_BQ * 2.0 ** (-(t - INJECTION).total_seconds() / HALF_LIFE_S)


def write_bqml(folder: Path, gml_files, decay: str = "START", mutate=None) -> Path:
    """The shared series as activity concentration: each slice keeps its stored integers and gets
    the RescaleSlope that makes them Bq/ml for the injection above (slopes differ slice by slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for n, (name, src) in enumerate(gml_files):
        ds = copy.deepcopy(src)
        if decay == "NONE":
            start = BED_STARTS[0] if n < len(gml_files) // 2 else BED_STARTS[1]
            x = math.log(2) / HALF_LIFE_S * FRAME_MS / 1000
            bq_per_suv = _dose_at(start) / (1000 * WEIGHT_KG) * (1 - math.exp(-x)) / x
            ds.AcquisitionDate, ds.AcquisitionTime = start.strftime("%Y%m%d"), start.strftime("%H%M%S.00")
            ds.CorrectedImage = [c for c in ds.CorrectedImage if c != "DECY"]
        else:
            start = SERIES_START
            ref = SERIES_START if decay == "START" else INJECTION
            bq_per_suv = _dose_at(ref) / (1000 * WEIGHT_KG)
            ds.AcquisitionDate, ds.AcquisitionTime = DAY.strftime("%Y%m%d"), start.strftime("%H%M%S.00")
        ds.RescaleSlope = f"{float(src.RescaleSlope) * bq_per_suv:.12g}"
        ds.Units, ds.DecayCorrection = "BQML", decay
        del ds.SUVType
        ds.ActualFrameDuration = FRAME_MS
        ds.SeriesDate, ds.SeriesTime = DAY.strftime("%Y%m%d"), SERIES_START.strftime("%H%M%S.00")
        ds.PatientWeight, ds.PatientSize, ds.PatientSex = f"{WEIGHT_KG}", f"{HEIGHT_M}", SEX
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        rp.RadionuclideTotalDose = f"{DOSE_BQ:.6e}"
        rp.RadionuclideHalfLife = f"{HALF_LIFE_S}"
        rp.RadiopharmaceuticalStartTime = INJECTION.strftime("%H%M%S.00")
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if mutate is not None:
            mutate(ds, n)
        ds.save_as(folder / name, enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def gml_suv():
    return load_pet(PET)


@pytest.fixture(scope="module")
def ct():
    return load_image(CT)


def _close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(float(np.abs(b).max()), 1e-12)
    assert np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-3 * scale)), float(np.max(np.abs(a - b)))


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def test_gml_series_values_are_the_files_own_suv(gml_suv):
    """Units GML: SUV is the stored value times that slice's own slope plus intercept, unchanged."""
    assert gml_suv.meta.units == "SUVbw" and gml_suv.meta.modality == "PT"
    assert gml_suv.size_ijk == (41, 43, 59)
    own = independent_suv(PET)
    slopes = {float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope) for f in PET.iterdir()}
    assert len(slopes) > 50  # the vendor scaled each slice on its own
    for z, suv in own.items():
        _close(slice_of(gml_suv, z), suv, 1e-6)
    assert 20 < float(gml_suv.voxels.max()) < 30  # the file's SUVmax, 25.4


@pytest.mark.parametrize("decay", ["START", "ADMIN", "NONE"])
def test_suv_from_activity_concentration(tmp_path, gml_files, gml_suv, decay):
    """A BQML series made from the shared one gives back its SUV, and matches the SUV computed
    independently from the tags (dose decayed per DecayCorrection, per-slice slopes)."""
    folder = write_bqml(tmp_path / decay, gml_files, decay)
    slopes = [float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope) for f in folder.iterdir()]
    assert len(set(slopes)) > 50
    image, factors = read_pet(folder)
    assert factors.units == "BQML" and factors.decay_correction == decay
    assert factors.dose_bq == pytest.approx(DOSE_BQ) and factors.half_life_s == pytest.approx(HALF_LIFE_S)
    assert factors.weight_kg == pytest.approx(WEIGHT_KG)
    _close(image.voxels, gml_suv.voxels)
    for z, suv in independent_suv(folder).items():
        _close(slice_of(image, z), suv)
    if decay == "START":
        assert factors.reference_source == "SeriesDate/SeriesTime"
        assert factors.decay_s == pytest.approx(62.5 * 60)
        assert factors.factor == pytest.approx(WEIGHT_KG * 1000 / _dose_at(SERIES_START), rel=1e-9)
    elif decay == "ADMIN":
        assert factors.factor == pytest.approx(WEIGHT_KG * 1000 / DOSE_BQ, rel=1e-9)
    else:
        assert len({f for _, f in factors.slice_factors}) == 2  # two bed positions, two decay factors


def test_start_reference_falls_back_to_the_earliest_acquisition(tmp_path, gml_files, gml_suv):
    """A series written after the scan (SeriesTime later than every AcquisitionTime): START values
    refer to the earliest acquisition start, and the factors say so."""
    def later_series(ds, n):
        ds.SeriesTime = "131500.00"

    image, factors = read_pet(write_bqml(tmp_path / "late", gml_files, "START", later_series))
    assert factors.reference_source == "earliest AcquisitionDate/AcquisitionTime of the series"
    assert any("after the earliest acquisition start" in n for n in factors.notes)
    _close(image.voxels, gml_suv.voxels)  # the acquisition started at SERIES_START


def test_injection_date_time_is_used_when_present(tmp_path, gml_files, gml_suv):
    def with_datetime(ds, n):
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        rp.RadiopharmaceuticalStartDateTime = INJECTION.strftime("%Y%m%d%H%M%S.00")
        del rp.RadiopharmaceuticalStartTime

    image, factors = read_pet(write_bqml(tmp_path / "dt", gml_files, "START", with_datetime))
    assert factors.injection_source == "RadiopharmaceuticalStartDateTime"
    _close(image.voxels, gml_suv.voxels)


def test_sul_lean_body_mass(tmp_path, gml_files, gml_suv):
    """SUL = SUVbw x LBM / weight with the Janmahasatian lean body mass, for the shared GML series
    (a man, 71 kg, 1.63 m) and for a BQML one (a woman, 64 kg, 1.71 m)."""
    lbm_m = janmahasatian_lbm(71.0, 1.63, "M")
    sul, factors = read_pet(PET, "lbm")
    assert sul.meta.units == "SUVlbm"
    assert factors.lbm_kg == pytest.approx(lbm_m, rel=1e-9)
    assert 45 < lbm_m < 60
    _close(sul.voxels, gml_suv.voxels * lbm_m / 71.0)
    folder = write_bqml(tmp_path / "lbm", gml_files, "START")
    sul_f = load_pet(folder, "lbm")
    for z, suv in independent_suv(folder, "lbm").items():
        _close(slice_of(sul_f, z), suv)
    _close(sul_f.voxels, gml_suv.voxels * janmahasatian_lbm(WEIGHT_KG, HEIGHT_M, SEX) / WEIGHT_KG)


# ---------------------------------------------------------------------------------------------
# Refusals: one clear InputError naming the tag
# ---------------------------------------------------------------------------------------------
def _rp(ds):
    return ds.RadiopharmaceuticalInformationSequence[0]


REFUSALS = {
    "dose missing": ("START", lambda ds, n: delattr(_rp(ds), "RadionuclideTotalDose"),
                     "RadionuclideTotalDose (0018,1074)"),
    "dose in MBq": ("START", lambda ds, n: setattr(_rp(ds), "RadionuclideTotalDose", "352.4"),
                    "RadionuclideTotalDose (0018,1074)"),
    "injection time missing": ("START", lambda ds, n: delattr(_rp(ds), "RadiopharmaceuticalStartTime"),
                               "RadiopharmaceuticalStartTime (0018,1072)"),
    "no decay information": ("START", lambda ds, n: delattr(ds, "DecayCorrection"), "DecayCorrection (0054,1102)"),
    "injection after the scan": ("START", lambda ds, n: setattr(_rp(ds), "RadiopharmaceuticalStartTime", "120000"),
                                 "is after the acquisition"),
    "half-life missing": ("START", lambda ds, n: delattr(_rp(ds), "RadionuclideHalfLife"),
                          "RadionuclideHalfLife (0018,1075)"),
    "half-life of another nuclide": ("START", lambda ds, n: setattr(_rp(ds), "RadionuclideHalfLife", "1221.8"),
                                     "contradicts the radionuclide F18"),
    "zero weight": ("START", lambda ds, n: setattr(ds, "PatientWeight", "0"), "PatientWeight (0010,1030)"),
    "weight missing": ("ADMIN", lambda ds, n: delattr(ds, "PatientWeight"), "PatientWeight (0010,1030)"),
    "counts without a Philips factor": ("START", lambda ds, n: setattr(ds, "Units", "CNTS"), "Units CNTS"),
    "decay correction contradicts corrected image": (
        "START", lambda ds, n: setattr(ds, "CorrectedImage", [c for c in ds.CorrectedImage if c != "DECY"]),
        "CorrectedImage (0028,0051)"),
    "not attenuation-corrected": (
        "START", lambda ds, n: setattr(ds, "CorrectedImage", [c for c in ds.CorrectedImage if c != "ATTN"]),
        "lacks ATTN"),
    "no per-image time without decay correction": ("NONE", lambda ds, n: delattr(ds, "AcquisitionTime"),
                                                   "AcquisitionTime (0008,0032)"),
    "no frame duration without decay correction": ("NONE", lambda ds, n: delattr(ds, "ActualFrameDuration"),
                                                   "ActualFrameDuration (0018,1242)"),
    "slices disagree on the dose": (
        "START", lambda ds, n: setattr(_rp(ds), "RadionuclideTotalDose", "4.0e8") if n == 3 else None,
        "contradict each other"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_tag(tmp_path, gml_files, case):
    decay, mutate, expected = REFUSALS[case]
    folder = write_bqml(tmp_path / "bad", gml_files[20:26], decay, mutate)  # six slices, two beds for NONE
    with pytest.raises(InputError) as exc:
        load_pet(folder)
    message = str(exc.value)
    assert expected in message and "no SUV computed" in message and "\n" not in message
    assert str(folder) in message  # the file is named


GARBAGE = ("abc", "", "NaN", "-1", "1e400", "0")


@pytest.mark.parametrize("where, keyword", [
    ("ds", "PatientWeight"), ("ds", "PatientSize"), ("ds", "SeriesTime"), ("ds", "SeriesDate"),
    ("ds", "AcquisitionTime"), ("rp", "RadionuclideTotalDose"), ("rp", "RadionuclideHalfLife"),
    ("rp", "RadiopharmaceuticalStartTime"), ("ds", "Units"), ("ds", "DecayCorrection"),
])
def test_odd_header_values_give_a_clear_refusal_or_a_checked_suv(tmp_path, gml_files, where, keyword):
    """Whatever a header holds in a tag the SUV depends on: a one-line InputError, or an SUV
    from values that pass every check; never a crash."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    for n, value in enumerate(GARBAGE):
        def mutate(ds, i, value=value):
            target = ds if where == "ds" else _rp(ds)
            tag = Tag(tag_for_keyword(keyword))
            raw = value.encode() + (b" " if len(value) % 2 else b"")
            target._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, True, True)

        for decay in ("START", "NONE"):
            folder = write_bqml(tmp_path / f"{n}{decay}", gml_files[20:23], decay, mutate)
            for kind in ("bw", "lbm"):
                try:
                    image = load_pet(folder, kind)
                except InputError as exc:
                    assert "\n" not in str(exc)
                    continue
                assert np.all(np.isfinite(image.voxels)) and image.voxels.max() > 0


def test_sul_needs_the_height(tmp_path, gml_files):
    folder = write_bqml(tmp_path / "noheight", gml_files, "START", lambda ds, n: delattr(ds, "PatientSize"))
    assert load_pet(folder, "bw").meta.units == "SUVbw"
    with pytest.raises(InputError, match=r"PatientSize \(0010,1020\)"):
        load_pet(folder, "lbm")


def test_suv_of_a_ct_is_refused():
    with pytest.raises(InputError, match="no PT series found"):
        load_pet(CT)


# ---------------------------------------------------------------------------------------------
# Fusion on the CT
# ---------------------------------------------------------------------------------------------
def test_pet_on_the_ct_grid_is_trilinear_through_both_affines(gml_suv, ct):
    """Every CT voxel gets the PET value at its own LPS point (checked against an independent
    trilinear interpolation over the PET's LPS axes); the grids differ in size and voxel size."""
    from scipy.interpolate import RegularGridInterpolator

    fused = resample_to(gml_suv, ct)
    assert fused.shape == ct.shape and np.array_equal(fused.affine, ct.affine)
    assert fused.meta.units == "SUVbw" and fused.meta.frame_of_reference_uid == ct.meta.frame_of_reference_uid
    assert not np.allclose(gml_suv.spacing, ct.spacing)
    assert np.allclose(gml_suv.direction, np.eye(3))  # axis-aligned PET: LPS axes are its grid lines
    axes = [gml_suv.origin[a] + gml_suv.spacing[a] * np.arange(gml_suv.size_ijk[a]) for a in range(3)]
    truth = RegularGridInterpolator(axes, gml_suv.voxels.transpose(2, 1, 0).astype(float))
    rng = np.random.default_rng(7)
    kji = np.stack([rng.integers(0, n, 4000) for n in ct.shape], axis=1)
    lps = ct.ijk_to_lps(kji[:, ::-1].astype(float))
    inside = np.all((lps >= [a[0] for a in axes]) & (lps <= [a[-1] for a in axes]), axis=1)
    assert inside.sum() > 1000
    got = fused.voxels[tuple(kji[inside].T)]
    _close(got, truth(lps[inside]), 1e-4)
    # CT voxels beyond the PET's field of view hold no value, not zero uptake
    beyond = ~np.all((lps >= [a[0] - s / 2 for a, s in zip(axes, gml_suv.spacing)])
                     & (lps <= [a[-1] + s / 2 for a, s in zip(axes, gml_suv.spacing)]), axis=1)
    assert beyond.any() and np.all(np.isnan(fused.voxels[tuple(kji[beyond].T)]))


def _hot_voxel(pet: Image, ijk=(20, 21, 30), value=10.0) -> Image:
    v = np.zeros(pet.shape, np.float32)
    v[ijk[2], ijk[1], ijk[0]] = value
    return pet.with_voxels(v)


def _centroid(image: Image) -> np.ndarray:
    v = np.nan_to_num(image.voxels.astype(float))
    kji = np.argwhere(v > 0)
    w = v[v > 0]
    return (image.ijk_to_lps(kji[:, ::-1].astype(float)) * w[:, None]).sum(axis=0) / w.sum()


def test_a_hot_voxel_lands_on_the_same_lps_point(gml_suv, ct):
    hot = _hot_voxel(gml_suv)
    centre = hot.ijk_to_lps([20, 21, 30])
    fused = resample_to(hot, ct)
    assert np.linalg.norm(_centroid(fused) - centre) < 0.3  # mm
    peak = np.unravel_index(np.nanargmax(fused.voxels), fused.shape)
    assert np.all(np.abs(ct.ijk_to_lps(np.array(peak[::-1], float)) - centre) <= ct.spacing / 2 + 1e-6)


def test_the_avid_sarcoma_lies_in_its_contour(gml_suv, ct):
    """On the CT grid, the FDG uptake falls on the tumour the radiation oncologist contoured."""
    from planner.anatomy import load_structures

    gtv = load_structures(RTSTRUCT, ct).mask("GTV_Mass_CT")
    fused = resample_to(gml_suv, ct).voxels
    inside, outside = np.nanmean(fused[gtv]), np.nanmean(fused[~gtv])
    assert inside > 3 * outside
    hot = fused > 0.4 * np.nanmax(fused[gtv])
    assert (hot & gtv).sum() > 0.7 * hot.sum()


def test_another_frame_of_reference_is_refused_unless_registered(gml_suv, ct):
    other = gml_suv.with_meta(frame_of_reference_uid="1.2.3.4.5")
    with pytest.raises(InputError, match=r"FrameOfReferenceUID \(0020,0052\) 1\.2\.3\.4\.5 differs from the CT's"):
        resample_to(other, ct)
    with pytest.raises(InputError, match="FrameOfReferenceUID .* blank in the PET's header"):
        resample_to(gml_suv.with_meta(frame_of_reference_uid=""), ct)
    # with a registration the user trusts (PET LPS -> CT LPS: 12 mm to the patient's left)
    shift = np.eye(4)
    shift[:3, 3] = [12.0, 0.0, 0.0]
    hot = _hot_voxel(other)
    fused = resample_to(hot, ct, registration=shift)
    assert np.linalg.norm(_centroid(fused) - (hot.ijk_to_lps([20, 21, 30]) + [12.0, 0.0, 0.0])) < 0.3
    with pytest.raises(InputError, match="4x4"):
        resample_to(other, ct, registration=np.eye(3))


def test_a_pet_away_from_the_ct_is_refused(gml_suv, ct):
    far = np.eye(4)
    far[2, 3] = 500.0
    with pytest.raises(InputError, match="does not overlap the CT"):
        resample_to(gml_suv, ct, registration=far)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def test_convert_suv_round_trip_through_nifti(tmp_path, gml_files, gml_suv, capsys):
    """planner convert --suv: the NIfTI holds the SUV (RAS on file), read back in LPS unchanged."""
    import nibabel as nib

    folder = write_bqml(tmp_path / "start", gml_files, "START")
    out = tmp_path / "suv.nii.gz"
    assert main(["convert", str(folder), str(out), "--suv"]) == 0
    assert "SUVbw" in capsys.readouterr().out
    back = load_nifti(out)
    assert np.array_equal(back.voxels, load_pet(folder).voxels)
    assert np.allclose(back.affine, gml_suv.affine, atol=1e-4)
    _close(back.voxels, gml_suv.voxels)
    ras = nib.load(str(out)).affine
    assert np.allclose(ras, np.diag([-1, -1, 1, 1]) @ gml_suv.affine, atol=1e-4)
    out_lbm = tmp_path / "sul.nrrd"
    assert main(["convert", str(folder), str(out_lbm), "--suv", "lbm"]) == 0
    _close(load_image(out_lbm, modality=None).voxels,
           gml_suv.voxels * janmahasatian_lbm(WEIGHT_KG, HEIGHT_M, SEX) / WEIGHT_KG)


def test_convert_suv_refusal_is_one_line(tmp_path, gml_files, capsys):
    folder = write_bqml(tmp_path / "nodose", gml_files, "START",
                        lambda ds, n: delattr(_rp(ds), "RadionuclideTotalDose"))
    out = tmp_path / "x.nii.gz"
    assert main(["convert", str(folder), str(out), "--suv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("planner: error:") and "RadionuclideTotalDose (0018,1074)" in err[-1]
    assert not out.exists()


def test_info_shows_the_suv_factors(tmp_path, gml_files, capsys):
    folder = write_bqml(tmp_path / "start", gml_files, "START")
    assert main(["info", str(folder), "--modality", "PT"]) == 0
    text = capsys.readouterr().out
    assert "decay correction START" in text and "SeriesDate/SeriesTime" in text
    assert "352.4 MBq" in text and "half-life 6586.2 s (F18)" in text and "uptake time 62.5 min" in text
    assert "lean body mass" in text
    assert main(["info", str(folder), "--modality", "PT", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    bw = info["suv"]["bw"]["factors"]
    assert bw["factor"] == pytest.approx(WEIGHT_KG * 1000 / _dose_at(SERIES_START), rel=1e-9)
    assert bw["injection_time"] == "2000-09-07 10:02:30" and bw["reference_time"] == "2000-09-07 11:05:00"
    assert info["suv"]["lbm"]["factors"]["lbm_kg"] == pytest.approx(janmahasatian_lbm(WEIGHT_KG, HEIGHT_M, SEX))


def test_info_says_why_no_suv(tmp_path, gml_files, capsys):
    folder = write_bqml(tmp_path / "nodecay", gml_files, "START", lambda ds, n: delattr(ds, "DecayCorrection"))
    assert main(["info", str(folder), "--modality", "PT"]) == 0  # the image itself loads
    text = capsys.readouterr().out
    assert "SUV body weight: not computed:" in text and "DecayCorrection (0054,1102)" in text
