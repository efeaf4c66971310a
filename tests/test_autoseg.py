"""Classical automatic segmentation: synthetic phantoms (always) and the real scans (shared_data).

The real-scan tests segment each scan once per module. Overlays of the chest result are
written to /tmp/autoseg_*.png for a person to look at.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ABDOMEN_CT, ABDOMEN_SEG

from planner.anatomy.autoseg import (
    PARTS,
    airway_mask,
    body_mask,
    bone_mask,
    emphysema_mask,
    fissure_mask,
    lesion_measurements,
    lung_masks,
    lung_vessel_mask,
    segment_ct,
    segment_lesion,
    split_bones,
)
from planner.anatomy.autoseg.grid import WorkGrid, fill_holes_2d, hessian_eigenvalues, symmetric_eigenvalues
from planner.errors import InputError
from planner.images import Image, ImageMeta

CHEST_MASS_LPS = (-82.0, 82.0, -8.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


# --- synthetic phantom ------------------------------------------------------------------------------
def phantom(flip_x: bool = False, flip_y: bool = False) -> Image:
    """A small chest on a table: body ellipse, two lungs, a trachea, a spine, a table slab below
    the back with an air gap, and a 16 mm nodule in the right lung (at LPS x = -40 mm).

    With flips, the same anatomy is stored with i running right (RAS-like) and/or j anterior:
    every LPS position keeps its content.
    """
    sp = np.array([2.0, 2.0, 3.0])  # i, j, k
    ni, nj, nk = 160, 140, 40
    i = np.arange(ni)
    j = np.arange(nj)
    k = np.arange(nk)
    # LPS of voxel centres for the plain (LPS) layout, origin chosen so x, y centre on 0.
    x = (i - (ni - 1) / 2.0) * sp[0]
    y = (j - (nj - 1) / 2.0) * sp[1]
    z = (k - (nk - 1) / 2.0) * sp[2]
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    v = np.full(Z.shape, -1000.0, np.float32)
    body = (X / 140.0) ** 2 + (Y / 95.0) ** 2 <= 1.0
    v[body] = 30.0
    lung_r = ((X + 55.0) / 42.0) ** 2 + ((Y + 5.0) / 55.0) ** 2 + (Z / 75.0) ** 2 <= 1.0
    lung_l = ((X - 55.0) / 40.0) ** 2 + ((Y + 5.0) / 55.0) ** 2 + (Z / 75.0) ** 2 <= 1.0
    v[lung_r | lung_l] = -850.0
    trachea = (X**2 + (Y + 30.0) ** 2 <= 8.0**2) & (Z > 5.0)
    v[trachea] = -990.0
    spine = (X**2 + (Y - 60.0) ** 2 <= 16.0**2)
    v[spine] = 150.0
    v[spine & ~(X**2 + (Y - 60.0) ** 2 <= 12.0**2)] = 700.0
    nodule = (X + 40.0) ** 2 + (Y + 5.0) ** 2 + (Z - 6.0) ** 2 <= 8.0**2
    v[nodule] = 40.0
    table = (Y >= 103.0) & (Y <= 109.0) & (np.abs(X) < 150.0)
    v[table] = 100.0
    rng = np.random.default_rng(1)
    v += rng.normal(0.0, 15.0, v.shape).astype(np.float32)
    affine = np.diag([sp[0], sp[1], sp[2], 1.0])
    affine[:3, 3] = [x[0], y[0], z[0]]
    vox = np.round(v).astype(np.int16)
    if flip_x:
        vox = vox[:, :, ::-1]
        affine[0, 0] = -sp[0]
        affine[0, 3] = x[-1]
    if flip_y:
        vox = vox[:, ::-1, :]
        affine[1, 1] = -sp[1]
        affine[1, 3] = y[-1]
    return Image(np.ascontiguousarray(vox), affine, ImageMeta(modality="CT"))


def lps_of_mask(img: Image, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask)
    return img.ijk_to_lps(kji[:, ::-1].astype(float))


@pytest.mark.parametrize("flip_x,flip_y", [(False, False), (True, False), (True, True)])
def test_phantom_body_lungs_and_orientation(flip_x: bool, flip_y: bool) -> None:
    img = phantom(flip_x, flip_y)
    body = body_mask(img)
    pts = lps_of_mask(img, body)
    assert pts[:, 1].max() < 100.0, "the table (y 103-109 mm) must not be part of the body"
    assert pts[:, 1].max() > 90.0, "the back (y ~ 95 mm) must be in the body"
    assert body.sum() * 12.0 / 1000.0 == pytest.approx(np.pi * 140 * 95 * 120 / 1000.0, rel=0.08)
    left, right = lung_masks(img, body=body)
    lx = lps_of_mask(img, left)[:, 0].mean()
    rx = lps_of_mask(img, right)[:, 0].mean()
    assert lx > 30.0 and rx < -30.0, "lung_left must be on the patient's left (larger LPS x)"
    # The nodule is inside the right lung's volume; the trachea is not lung.
    nod = img.lps_to_ijk([-40.0, -5.0, 6.0]).round().astype(int)
    assert right[nod[2], nod[1], nod[0]]
    tr = img.lps_to_ijk([0.0, -30.0, 40.0]).round().astype(int)
    assert not (left | right)[tr[2], tr[1], tr[0]]


def test_phantom_segment_ct_structure_set() -> None:
    img = phantom()
    calls = []
    sset = segment_ct(img, progress=lambda d, t, w: calls.append((d, t, w)))
    assert calls[0][0] == 0 and calls[-1] == (len(PARTS), len(PARTS), "done")
    names = set(sset.names())
    assert {"body", "lung_left", "lung_right", "trachea", "bone", "vertebrae"} <= names
    assert all(s.source == "automatic" for s in sset)
    assert sset["bone"].cls.value == "bone"
    bone_pts = lps_of_mask(img, sset.mask("bone"))
    assert np.abs(bone_pts[:, 0]).max() < 25.0 and np.abs(bone_pts[:, 1] - 60.0).max() < 25.0
    # The spine's marrow (150 HU, inside a 700 HU cortex) is filled.
    c = img.lps_to_ijk([0.0, 60.0, 0.0]).round().astype(int)
    assert sset.mask("bone")[c[2], c[1], c[0]]
    only = segment_ct(img, parts=["body"])
    assert only.names() == ["body"]
    with pytest.raises(InputError, match="unknown segmentation part"):
        segment_ct(img, parts=["liver"])


def test_phantom_single_steps() -> None:
    img = phantom(flip_x=True)
    body = body_mask(img)
    trachea, bronchi = airway_mask(img, body=body)
    assert trachea.shape == img.shape and trachea.dtype == bool
    tr = img.lps_to_ijk([0.0, -30.0, 40.0]).round().astype(int)
    assert trachea[tr[2], tr[1], tr[0]]
    left, right = lung_masks(img, body=body, airways=trachea | bronchi)
    lungs = left | right
    bone = bone_mask(img, body=body)
    parts = split_bones(img, body=body, lungs=lungs)
    assert np.array_equal(parts["bone"], bone)
    assert not np.any(parts["vertebrae"] & ~bone) and parts["vertebrae"].sum() > 0.8 * bone.sum()
    for mask in (lung_vessel_mask(img, lungs), emphysema_mask(img, lungs), fissure_mask(img, lungs)):
        assert mask.shape == img.shape and not np.any(mask & ~lungs)
    with pytest.raises(InputError, match="does not match the CT grid"):
        lung_vessel_mask(img, lungs[:-1])


def test_phantom_lesion() -> None:
    img = phantom()
    m = segment_lesion(img, [-40.0, -5.0, 6.0], max_radius_mm=30.0)
    meas = lesion_measurements(m, img)
    assert meas["diameter_mm"] == pytest.approx(16.0, abs=2.5)
    assert np.linalg.norm(np.array(meas["centroid_lps"]) - [-40.0, -5.0, 6.0]) < 2.0
    assert meas["max_diameter_mm"] >= meas["diameter_mm"]
    # A seed in aerated lung or outside the scan is refused.
    with pytest.raises(InputError, match="air or aerated lung"):
        segment_lesion(img, [55.0, -5.0, 0.0])
    with pytest.raises(InputError, match="outside the scan"):
        segment_lesion(img, [0.0, 0.0, 500.0])
    with pytest.raises(InputError):
        lesion_measurements(np.zeros(img.shape, bool), img)


def test_lesion_cut_off_a_vessel() -> None:
    """A 20 mm ball with a 3 mm wide vessel of the same density running through it."""
    sp = 1.0
    n = 80
    z, y, x = np.mgrid[0:n, 0:n, 0:n].astype(float)
    v = np.full((n, n, n), -850.0, np.float32)
    ball = (x - 40) ** 2 + (y - 40) ** 2 + (z - 40) ** 2 <= 10.0**2
    vessel = (y - 40) ** 2 + (z - 40) ** 2 <= 1.5**2
    v[ball | vessel] = 40.0
    img = Image(v.astype(np.int16), np.diag([sp, sp, sp, 1.0]), ImageMeta(modality="CT"))
    m = segment_lesion(img, [40.0, 40.0, 40.0])
    meas = lesion_measurements(m, img)
    assert meas["diameter_mm"] == pytest.approx(20.0, abs=2.0)
    assert meas["max_diameter_mm"] < 26.0, "the vessel must be cut off"


def test_lesion_measurements_known_box() -> None:
    img = Image(np.zeros((20, 20, 20), np.int16), np.diag([0.5, 1.0, 2.0, 1.0]))
    m = np.zeros(img.shape, bool)
    m[2:7, 3:13, 4:14] = True  # 10 x 10 x 5 voxels: 5 x 10 x 10 mm
    meas = lesion_measurements(m, img)
    assert meas["volume_ml"] == pytest.approx(0.5)
    assert meas["max_diameter_mm"] == pytest.approx(np.sqrt(5**2 + 10**2 + 10**2), rel=0.02)
    assert meas["centroid_lps"] == pytest.approx([4.25, 7.5, 8.0])


def test_working_grid_round_trip_and_axes() -> None:
    img = phantom(flip_x=True, flip_y=True)
    g = WorkGrid(img, 4.0)
    assert g.fac == (1, 2, 2)
    w = g.down(img.voxels)
    # Working axes run S, P, L whatever the storage order.
    a = g.spl_to_lps([0, 0, 0])
    assert g.spl_to_lps([1, 0, 0])[2] > a[2] and g.spl_to_lps([0, 1, 0])[1] > a[1] and g.spl_to_lps([0, 0, 1])[0] > a[0]
    # A block average sits at its block's centre.
    c = np.array([10, 20, 30])
    lps = g.spl_to_lps(c)
    ijk = img.lps_to_ijk(lps)
    i0, j0, k0 = np.floor(ijk).astype(int)
    assert w[tuple(c)] == pytest.approx(img.voxels[k0, j0:j0 + 2, i0:i0 + 2].mean())
    m = np.zeros(g.shape, bool)
    m[5:9, 10:20, 3:30] = True
    back = g.up(m)
    assert back.shape == img.shape and back.sum() == m.sum() * 4
    assert np.array_equal(g.down(back, "majority"), m)


def test_fill_holes_2d_and_eigenvalues() -> None:
    m = np.zeros((3, 9, 9), bool)
    m[1, 2:7, 2:7] = True
    m[1, 4, 4] = False
    m[0, 2:7, 2:7] = True
    m[0, 4, 2] = False  # a notch open to the outside is no hole... (it's on the ring's edge)
    out = fill_holes_2d(m)
    assert out[1, 4, 4] and not out[0, 4, 2]
    a = np.random.default_rng(0).normal(size=(50, 3, 3))
    a = a + a.transpose(0, 2, 1)
    e = symmetric_eigenvalues(a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2])
    assert np.allclose(e, np.linalg.eigvalsh(a), atol=1e-4)
    # A bright plate normal to array axis 1 on an anisotropic grid: one strong negative eigenvalue.
    img = np.zeros((20, 30, 20), np.float32)
    img[:, 15, :] = 100.0
    ev, vec = hessian_eigenvalues(img, 1.5, (2.0, 1.0, 1.0), np.ones(img.shape, bool), first_vector=True)
    centre = np.ravel_multi_index((10, 15, 10), img.shape)
    assert ev[centre, 0] < -5 * abs(ev[centre, 1])
    assert abs(vec[centre, 1]) > 0.99


# --- real scans ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest(chest_segmented):
    ct, sset = chest_segmented
    lesion = segment_lesion(ct, CHEST_MASS_LPS)
    write_overlays(ct, sset, lesion)
    return ct, sset, lesion


@pytest.fixture(scope="module")
def abdomen():
    from planner.anatomy import load_structures
    from planner.images import load_image

    ct = load_image(ABDOMEN_CT)
    return ct, segment_ct(ct), load_structures(ABDOMEN_SEG, ct)


@pytest.mark.shared_data
def test_chest_lungs(chest) -> None:
    ct, sset, _ = chest
    vol = {n: sset[n].voxel_count * sset.voxel_volume_ml() for n in ("lung_left", "lung_right")}
    for n, ml in vol.items():
        assert 1000.0 <= ml <= 4000.0, f"{n}: {ml:.0f} ml"
    lx = lps_of_mask(ct, sset.mask("lung_left"))[:, 0].mean()
    rx = lps_of_mask(ct, sset.mask("lung_right"))[:, 0].mean()
    assert lx > rx + 100.0
    assert not np.any(sset.mask("lung_left") & sset.mask("lung_right"))


@pytest.mark.shared_data
def test_chest_airways(chest) -> None:
    ct, sset, _ = chest
    tr = sset.mask("trachea")
    pts = lps_of_mask(ct, tr)
    top = ct.corners()[:, 2].max()
    assert pts[:, 2].max() > top - 20.0, "the trachea reaches the top of the scan (neck)"
    assert abs(np.median(pts[:, 0])) < 30.0, "the trachea is near the mid-line"
    assert 15.0 <= sset["trachea"].voxel_count * sset.voxel_volume_ml() <= 120.0
    # The bronchi hang from the trachea: together one connected tree with two main branches.
    from scipy import ndimage as ndi

    tree = tr | sset.mask("airways")
    lab, n = ndi.label(tree, structure=np.ones((3, 3, 3), bool))
    assert n >= 1
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.max() >= 0.95 * tree.sum()
    br = lps_of_mask(ct, sset.mask("airways"))
    assert (br[:, 0] > 10).any() and (br[:, 0] < -10).any(), "both main bronchi"


@pytest.mark.shared_data
def test_chest_bones(chest) -> None:
    ct, sset, _ = chest
    ml = {s.name: s.voxel_count * sset.voxel_volume_ml() for s in sset.by_class("bone")}
    for n in ("bone", "vertebrae", "ribs_left", "ribs_right", "scapula_left", "scapula_right", "sternum"):
        assert ml.get(n, 0.0) > 20.0, f"{n} missing or tiny: {ml.get(n)}"
    left = lps_of_mask(ct, sset.mask("lung_left"))
    right = lps_of_mask(ct, sset.mask("lung_right"))
    for side, lung in (("left", left), ("right", right)):
        rib = lps_of_mask(ct, sset.mask(f"ribs_{side}"))
        scap = lps_of_mask(ct, sset.mask(f"scapula_{side}"))
        sign = 1.0 if side == "left" else -1.0
        # Ribs wrap the lung laterally; the scapula is a plate behind and beside the chest.
        assert sign * np.percentile(rib[:, 0], 90 if side == "left" else 10) > sign * np.median(lung[:, 0])
        assert np.median(scap[:, 1]) > np.median(lung[:, 1]) + 20.0
        assert sign * np.median(scap[:, 0]) > 60.0
    spine = lps_of_mask(ct, sset.mask("vertebrae"))
    assert abs(np.median(spine[:, 0])) < 15.0
    sternum = lps_of_mask(ct, sset.mask("sternum"))
    assert np.median(sternum[:, 1]) < np.median(spine[:, 1]) - 80.0


def table_gap_mm(ct: Image, body: np.ndarray) -> tuple[float, float]:
    """(posterior-most body y in the middle slice, table top y there) in LPS mm. The table top is found in the middle
    slice, below the middle third of the body's width: going posterior from the patient's back,
    past the skin (to the first row darker than -800 HU on average), the first row brighter
    than -800 HU again."""
    g = WorkGrid(ct, 0.1)  # no blocking: only the [s, p, l] view of the CT lattice
    v = g.reorient(ct.voxels)
    b = g.reorient(body)
    s = v.shape[0] // 2
    rows = np.flatnonzero(b[s].any(axis=1))
    cols = np.flatnonzero(b[s].any(axis=0))
    third = (cols[-1] - cols[0]) // 3
    back = int(rows[-1])
    prof = v[s, back:, cols[0] + third: cols[-1] - third].mean(axis=1)
    dark = np.flatnonzero(prof < -800)
    assert len(dark), "no air or cushion behind the patient"
    bright = np.flatnonzero(prof[dark[0]:] > -800)
    assert len(bright), "no table found behind the patient"
    table_row = back + int(dark[0]) + int(bright[0])
    body_y = float(g.spl_to_lps([s, back, cols[0] + third])[1])
    table_y = float(g.spl_to_lps([s, table_row, cols[0] + third])[1])
    return body_y, table_y


@pytest.mark.shared_data
def test_chest_body_excludes_table(chest) -> None:
    ct, sset, _ = chest
    body = sset.mask("body")
    body_y, table_y = table_gap_mm(ct, body)
    assert body_y < table_y - 3.0, f"body reaches y={body_y:.1f}, table top at y={table_y:.1f}"
    # The table is flat along the scan: no slice of the body reaches it.
    assert lps_of_mask(ct, body)[:, 1].max() < table_y - 3.0
    assert 15000.0 < sset["body"].voxel_count * sset.voxel_volume_ml() < 40000.0


@pytest.mark.shared_data
def test_chest_mass(chest) -> None:
    ct, sset, lesion = chest
    meas = lesion_measurements(lesion, ct)
    assert 10.0 <= meas["diameter_mm"] <= 30.0, meas
    assert np.linalg.norm(np.array(meas["centroid_lps"]) - CHEST_MASS_LPS) < 10.0, meas
    assert meas["max_diameter_mm"] < 40.0
    # The mass is not labelled as vessel.
    assert np.count_nonzero(lesion & sset.mask("lung_vessels")) < 0.05 * np.count_nonzero(lesion)


@pytest.mark.shared_data
def test_chest_lung_interior(chest) -> None:
    ct, sset, _ = chest
    lungs = sset.mask("lung_left") | sset.mask("lung_right")
    ves = sset.mask("lung_vessels")
    assert ves.any() and not np.any(ves & ~lungs)
    assert 20.0 < sset["lung_vessels"].voxel_count * sset.voxel_volume_ml() < 600.0
    assert np.median(ct.voxels[ves]) > -400
    # Fissures are drawn only where credible surfaces were found (lobes are named only when their
    # sizes are plausible too); a lung without them is named in the notes instead of being given
    # doubtful pieces, and so is one whose fissures come from the second look.
    fis = sset.mask("lung_fissures")
    for side in ("left", "right"):
        has_lobes = f"lung_lower_lobe_{side}" in sset
        found = np.count_nonzero(fis & sset.mask(f"lung_{side}")) > 20
        assert found or not has_lobes, side
        if found and not has_lobes:
            assert any(n.startswith(f"{side} lung: its fissures were found by a second look") for n in sset.notes)
        if not found:
            assert any(f"fissures not found credibly in the {side} lung" in n for n in sset.notes), sset.notes
    assert np.count_nonzero(fis & sset.mask("lung_left")) > 20, "the left major fissure is clear on this scan"
    if "emphysema" in sset:
        assert np.all(ct.voxels[sset.mask("emphysema")] < -850)


@pytest.mark.shared_data
def test_abdomen_against_totalsegmentator(abdomen) -> None:
    ct, sset, ref = abdomen
    body = sset.mask("body")
    union = np.zeros(ct.shape, bool)
    for s in ref:
        union[s.bbox()] |= s.mask
    assert np.count_nonzero(union & body) >= 0.99 * np.count_nonzero(union)
    lobes = [n for n in ref.names() if n.startswith("lung_") and "lobe" in n]
    d_lung = dice(ref.union(lobes), sset.mask("lung_left") | sset.mask("lung_right"))
    bones = [n for n in ref.names() if n.startswith(("vertebrae_", "rib_", "hip_", "femur_", "sacrum"))]
    d_bone = dice(ref.union(bones), sset.mask("bone"))
    print(f"abdomen Dice: lungs {d_lung:.3f}, bone {d_bone:.3f}")
    assert d_lung >= 0.90
    assert d_bone >= 0.82
    # Left is left.
    ref_left = ref.union([n for n in lobes if "left" in n])
    assert dice(ref_left, sset.mask("lung_left")) >= 0.85
    # No gas-filled bowel called lung, no airway in a scan without a trachea.
    assert "trachea" not in sset
    # The table (below the patient's back) is not body.
    body_y, table_y = table_gap_mm(ct, body)
    assert body_y < table_y - 3.0, f"body reaches y={body_y:.1f}, table top at y={table_y:.1f}"


# --- overlays -------------------------------------------------------------------------------------------
OVERLAY_COLOURS = {
    "lung_left": (70, 130, 255), "lung_right": (60, 200, 120), "trachea": (255, 230, 0), "airways": (255, 150, 0),
    "vertebrae": (255, 40, 40), "ribs_left": (255, 0, 255), "ribs_right": (0, 230, 255), "sternum": (255, 140, 0),
    "scapula_left": (40, 40, 255), "scapula_right": (0, 140, 0), "clavicula_left": (150, 0, 255),
    "clavicula_right": (160, 255, 0), "hip_left": (200, 120, 60), "hip_right": (120, 200, 60),
    "lung_vessels": (230, 0, 0), "heart": (255, 90, 90), "aorta": (255, 255, 255), "emphysema": (20, 20, 20), "lung_fissures": (255, 0, 180), "lesion": (0, 255, 0),
}


def _overlay_rgb(hu: np.ndarray, masks: dict[str, np.ndarray], body: np.ndarray | None) -> np.ndarray:
    from scipy import ndimage as ndi

    g = (np.clip((hu.astype(np.float32) + 1000.0) / 1400.0, 0, 1) * 255).astype(np.float32)
    rgb = np.stack([g, g, g], axis=-1)
    for name, m in masks.items():
        if m.any():
            c = np.array(OVERLAY_COLOURS.get(name, (255, 0, 0)), np.float32)
            rgb[m] = 0.45 * rgb[m] + 0.55 * c
    if body is not None:
        edge = body & ~ndi.binary_erosion(body)
        rgb[edge] = (255, 200, 140)
    return rgb.astype(np.uint8)


def write_overlays(ct: Image, sset, lesion: np.ndarray, folder: str | None = None) -> list[Path]:
    """Axial slices at z = 60, 0, -8, -60 mm and a coronal slice, masks coloured; returns paths."""
    from PIL import Image as PILImage

    out_dir = Path(folder or tempfile.gettempdir())
    if not os.access(out_dir, os.W_OK):
        return []
    names = [n for n in OVERLAY_COLOURS if n in sset and n != "lesion"]
    full = {n: sset.mask(n) for n in names}
    full["lesion"] = lesion
    body = sset.mask("body") if "body" in sset else None
    paths = []
    for z in (60, 0, -8, -60):
        k = int(round(ct.lps_to_ijk([0.0, 0.0, float(z)])[2]))
        if not 0 <= k < ct.shape[0]:
            continue
        rgb = _overlay_rgb(ct.voxels[k], {n: m[k] for n, m in full.items()}, None if body is None else body[k])
        p = out_dir / f"autoseg_axial_z{z}.png"
        PILImage.fromarray(rgb).save(p)
        paths.append(p)
    j = int(round(ct.lps_to_ijk(list(CHEST_MASS_LPS))[1]))
    rgb = _overlay_rgb(ct.voxels[::-1, j], {n: m[::-1, j] for n, m in full.items()}, None if body is None else body[::-1, j])
    rgb = np.repeat(rgb, max(1, int(round(ct.spacing[2] / ct.spacing[0]))), axis=0)
    p = out_dir / "autoseg_coronal.png"
    PILImage.fromarray(rgb).save(p)
    paths.append(p)
    return paths
