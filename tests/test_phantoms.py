"""The synthetic phantoms and the embedded demo cases built from them (assets/demo/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from planner.images import load_image
from planner.testing.phantoms import Phantom, make_knee, make_thorax
from planner.testing.phantoms.common import distance_inside

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"

RIGHT_LOBES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")
LEFT_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left")


@pytest.fixture(scope="module")
def thorax() -> Phantom:
    return make_thorax(0)


@pytest.fixture(scope="module")
def knee() -> Phantom:
    return make_knee(0)


def _phantom(request: pytest.FixtureRequest, case: str) -> Phantom:
    return request.getfixturevalue(case)


def _hu_at(p: Phantom, lps: list[float]) -> int:
    i, j, k = np.rint(p.ct.lps_to_ijk(lps)).astype(int)
    return int(p.ct.voxels[k, j, i])


def _mask_at(mask: np.ndarray, p: Phantom, lps: list[float]) -> bool:
    i, j, k = np.rint(p.ct.lps_to_ijk(lps)).astype(int)
    return bool(mask[k, j, i])


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_voxels(knee: Phantom) -> None:
    again = make_knee(0)
    assert again.ct.sha256 == knee.ct.sha256
    assert again.landmarks == knee.landmarks
    assert all(np.array_equal(again.labels[n], knee.labels[n]) for n in knee.labels)


def test_seed_changes_only_the_texture(knee: Phantom) -> None:
    other = make_knee(1)
    assert other.ct.sha256 != knee.ct.sha256
    diff = other.ct.voxels.astype(np.int32) - knee.ct.voxels
    assert np.abs(diff).mean() < 20  # noise only, the anatomy stays
    assert np.array_equal(other.labels["knee_effusion_right"], knee.labels["knee_effusion_right"])


@pytest.mark.parametrize("case", ["thorax", "knee"])
def test_phantom_matches_the_hash_recorded_by_the_asset_build(request: pytest.FixtureRequest, case: str) -> None:
    """The assets were built in another process: equal hashes mean run-to-run determinism."""
    info = json.loads((DEMO / case / "case.json").read_text())
    assert _phantom(request, case).ct.sha256 == info["ct_sha256"]


# --- the assets -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["thorax", "knee"])
def test_asset_ct_reads_back_as_the_phantom(request: pytest.FixtureRequest, case: str) -> None:
    p = _phantom(request, case)
    image = load_image(DEMO / case / "ct")
    assert image.shape == p.ct.shape
    assert image.voxels.dtype == np.int16
    assert np.array_equal(image.voxels, p.ct.voxels)
    np.testing.assert_allclose(image.affine, p.ct.affine, atol=1e-6, rtol=0)
    assert image.sha256 == p.ct.sha256
    assert image.meta.patient_id == f"DEMO-{case.upper()}"
    assert image.meta.study_date == "20260101"


@pytest.mark.parametrize("case", ["thorax", "knee"])
def test_asset_structures_read_back_as_the_labels(request: pytest.FixtureRequest, case: str) -> None:
    p = _phantom(request, case)
    table = json.loads((DEMO / case / "structures.json").read_text())["labels"]
    assert list(table.values()) == list(p.labels)
    assert list(table) == [str(v) for v in range(1, len(table) + 1)]
    lab = load_image(DEMO / case / "structures.nii.gz", modality=None)
    assert lab.shape == p.ct.shape
    np.testing.assert_allclose(lab.affine, p.ct.affine, atol=1e-5, rtol=0)
    expected, _ = p.labelmap()
    assert np.array_equal(lab.voxels, expected)


@pytest.mark.parametrize(
    "case, procedure, label, window",
    [("thorax", "lung-biopsy", "lung_nodule", "lung"), ("knee", "knee-injection", "knee_effusion_right", "soft-tissue")],
)
def test_case_json(request: pytest.FixtureRequest, case: str, procedure: str, label: str, window: str) -> None:
    p = _phantom(request, case)
    info = json.loads((DEMO / case / "case.json").read_text())
    assert info["id"] == case
    assert info["procedure"] == procedure
    assert info["window"] == window
    assert info["ct"] == "ct" and info["structures"] == "structures.nii.gz" and info["labels"] == "structures.json"
    assert info["generator"] == "demos/build_assets.py" and info["seed"] == 0
    assert info["target"]["label"] == label
    point = info["target"]["point"]
    assert len(point) == 3 and all(abs(v - round(v, 1)) < 1e-9 for v in point)
    assert _mask_at(p.labels[label], p, point), "the target point lies in its structure"
    for name, lps in info["landmarks"].items():
        assert p.ct.contains_lps(lps), name


def test_assets_are_small() -> None:
    total = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert total < 12e6, f"assets/demo holds {total / 1e6:.1f} MB"


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["thorax", "knee"])
def test_labels_nonempty_and_disjoint(request: pytest.FixtureRequest, case: str) -> None:
    p = _phantom(request, case)
    count = np.zeros(p.ct.shape, dtype=np.uint8)
    for name, mask in p.labels.items():
        assert mask.dtype == bool and mask.shape == p.ct.shape, name
        assert mask.any(), f"{name} is empty"
        count += mask
    assert count.max() == 1


def test_thorax_has_the_expected_structures(thorax: Phantom) -> None:
    names = set(thorax.labels)
    expected = {
        *RIGHT_LOBES, *LEFT_LOBES, "lung_fissures", "lung_vessels", "lung_nodule", "trachea", "bronchus_left",
        "bronchus_right", "heart", "aorta", "pulmonary_artery", "sternum", "scapula_left", "scapula_right",
        "spinal_cord", *(f"rib_{s}_{n}" for s in ("left", "right") for n in range(1, 13)),
        *(f"vertebrae_T{n}" for n in range(1, 13)),
    }
    assert expected <= names
    assert "body" not in names


def test_knee_has_the_expected_structures(knee: Phantom) -> None:
    assert set(knee.labels) >= {
        "femur_right", "tibia_right", "fibula_right", "patella_right", "cartilage_right", "quadriceps_tendon_right",
        "patellar_tendon_right", "knee_effusion_right", "popliteal_artery_right", "popliteal_vein_right",
        "tibial_nerve_right", "common_peroneal_nerve_right",
    }


@pytest.mark.parametrize("lobes", [RIGHT_LOBES, LEFT_LOBES])
def test_lobes_are_separated_by_fissures(thorax: Phantom, lobes: tuple[str, ...]) -> None:
    fissures = thorax.labels["lung_fissures"]
    six = ndimage.generate_binary_structure(3, 1)
    for a in lobes:
        grown = ndimage.binary_dilation(thorax.labels[a], six)
        for b in lobes:
            if a != b:
                assert not (grown & thorax.labels[b]).any(), f"{a} touches {b}"
        assert (grown & fissures).any(), f"{a} borders no fissure"
    # each fissure sheet is a thin layer: 1-2 voxels along its normal
    assert fissures.sum() < 0.05 * sum(thorax.labels[n].sum() for n in RIGHT_LOBES + LEFT_LOBES)


# --- values and geometry ----------------------------------------------------------------------


def test_thorax_hounsfield_units(thorax: Phantom) -> None:
    assert 0 <= _hu_at(thorax, thorax.landmarks["nodule_center"]) <= 80
    assert -950 <= _hu_at(thorax, thorax.landmarks["lung_reference"]) <= -700
    v = thorax.ct.voxels
    lungs = np.zeros(v.shape, dtype=bool)
    for n in RIGHT_LOBES + LEFT_LOBES:
        lungs |= thorax.labels[n]
    assert -900 < np.median(v[lungs]) < -800
    assert np.median(v[thorax.labels["lung_fissures"]]) > np.median(v[lungs]) + 100
    assert np.median(v[thorax.labels["aorta"]]) > 150  # contrast-enhanced
    assert np.percentile(v[thorax.labels["vertebrae_T6"]], 95) > 900  # cortex
    core = ndimage.binary_erosion(thorax.labels["vertebrae_T6"], iterations=2)
    assert 200 < np.median(v[core]) < 450  # cancellous core
    assert np.all(v[thorax.labels["trachea"]].min() < -900)
    assert v.min() >= -1024


def test_nodule_size_and_position(thorax: Phantom) -> None:
    p = thorax
    mask = p.labels["lung_nodule"]
    diameter = (6.0 * mask.sum() * np.prod(p.ct.spacing) / np.pi) ** (1 / 3)
    assert abs(diameter - 18.0) <= 2.0
    assert p.info["nodule_diameter_mm"] == 18.0
    centre = p.landmarks["nodule_center"]
    assert centre[0] < 0, "right lung (patient right is -x)"
    assert _mask_at(mask, p, centre)
    # deep in the lung: >= 25 mm of lung between the nodule's edge and the pleura
    lung = np.zeros(p.ct.shape, dtype=bool)
    for n in (*RIGHT_LOBES, "lung_fissures", "lung_vessels", "lung_nodule"):
        lung |= p.labels[n]
    i, j, k = np.rint(p.ct.lps_to_ijk(centre)).astype(int)
    sl = tuple(slice(max(c - 30, 0), c + 31) for c in (k, j, i))
    depth = distance_inside(lung[sl], p.ct.spacing[::-1])[k - sl[0].start, j - sl[1].start, i - sl[2].start]
    assert depth - 9.0 >= 25.0


def test_nodule_reachable_from_the_skin(thorax: Phantom) -> None:
    """Some straight line from the skin to the nodule crosses only the chest wall and its lobe."""
    p = thorax
    lab, table = p.labelmap()
    ids = {name: v for v, name in table.items()}
    ok_ids = np.array([0, ids["lung_nodule"], ids["lung_upper_lobe_right"]])
    centre = np.array(p.landmarks["nodule_center"])
    n = 600
    g = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * g / n)
    az = np.pi * (1 + 5**0.5) * g
    dirs = np.stack([np.cos(az) * np.sin(polar), np.sin(az) * np.sin(polar), np.cos(polar)], axis=1)
    t = np.arange(0.0, 250.0, 0.5)
    size = np.array(p.ct.size_ijk)
    clear = 0
    for d in dirs:
        ijk = np.rint(p.ct.lps_to_ijk(centre + t[:, None] * d)).astype(int)
        inside = np.all((ijk >= 0) & (ijk < size), axis=1)
        ijk = ijk[inside]
        hu = p.ct.voxels[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        labs = lab[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        outside = np.nonzero((hu < -900) & (labs == 0))[0]
        if len(outside) and np.isin(labs[: outside[0]], ok_ids).all():
            clear += 1
    assert clear >= 10


def test_knee_effusion(knee: Phantom) -> None:
    p = knee
    eff = p.labels["knee_effusion_right"]
    volume_ml = eff.sum() * np.prod(p.ct.spacing) / 1000.0
    assert abs(volume_ml - p.info["effusion_volume_ml"]) <= 0.1 * p.info["effusion_volume_ml"]
    assert 15.0 <= volume_ml <= 30.0
    centre = p.landmarks["effusion_center"]
    assert _mask_at(eff, p, centre)
    assert -20 <= np.median(p.ct.voxels[eff]) <= 40
    # suprapatellar: above the patella, in front of the femur, on the lateral (-x) side
    assert centre[2] > p.landmarks["patella_center"][2]
    assert centre[0] < p.landmarks["joint_center"][0]
    femur = p.labels["femur_right"]
    i, j, k = np.rint(p.ct.lps_to_ijk(centre)).astype(int)
    assert femur[k, j:, i].any(), "the femur lies behind (posterior to) the effusion centre"
    assert p.labels["quadriceps_tendon_right"][k].any()
    # reachable from lateral: a straight line to the skin crosses only the effusion and unlabeled tissue
    lab, table = p.labelmap()
    t = np.arange(0.0, 120.0, 0.4)
    ijk = np.rint(p.ct.lps_to_ijk(np.array(centre) + t[:, None] * np.array([-1.0, 0.0, 0.0]))).astype(int)
    labs = lab[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
    skin = np.nonzero(p.ct.voxels[ijk[:, 2], ijk[:, 1], ijk[:, 0]] < -900)[0][0]
    assert set(labs[:skin].tolist()) <= {0, list(p.labels).index("knee_effusion_right") + 1}


def test_knee_layout(knee: Phantom) -> None:
    p = knee

    def centroid(name: str) -> np.ndarray:
        k, j, i = np.nonzero(p.labels[name])
        return p.ct.ijk_to_lps(np.array([i.mean(), j.mean(), k.mean()]))

    femur, tibia, patella = centroid("femur_right"), centroid("tibia_right"), centroid("patella_right")
    fibula, artery = centroid("fibula_right"), centroid("popliteal_artery_right")
    assert -130 < femur[0] < -70, "a right knee lies at negative x"
    assert femur[2] > p.landmarks["joint_center"][2] > tibia[2]
    assert patella[1] < femur[1] - 20, "patella anterior (-y)"
    assert fibula[0] < tibia[0] - 20 and fibula[1] > tibia[1], "fibula posterolateral"
    assert artery[1] > femur[1] + 20, "popliteal artery posterior"
    v = p.ct.voxels
    assert np.percentile(v[p.labels["femur_right"]], 95) > 1000
    assert 60 < np.median(v[p.labels["cartilage_right"]]) < 140
    assert 60 < np.median(v[p.labels["patellar_tendon_right"]]) < 120
