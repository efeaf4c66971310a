"""Structure sets: vocabulary, TotalSegmentator folders, label maps, grids and their geometry."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import ABDOMEN_CT, ABDOMEN_SEG
from planner.anatomy import StructureClass, StructureSet, class_of, load_structures, structure_table
from planner.anatomy.registry import class_colours
from planner.errors import InputError
from planner.images import Image, load_image, save_image
from planner.testing.dicom_write import write_image_as_dicom


def sphere_image(centre, radius, spacing, size, origin):
    """A binary sphere on an axis-aligned LPS grid."""
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = origin
    kk, jj, ii = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
    pts = np.stack([ii, jj, kk], -1) * spacing + np.asarray(origin)
    return Image((np.linalg.norm(pts - centre, axis=-1) <= radius).astype(np.uint8), aff)


def test_vocabulary_covers_totalsegmentator_and_every_class_has_a_colour():
    table = structure_table()
    for name in ["aorta", "rib_left_5", "lung_upper_lobe_right", "trachea", "femur_left", "costal_cartilages",
                 "vertebrae_S1", "pulmonary_vein", "lung_vessels", "patella"]:
        assert name in table
    assert class_of("aorta") == StructureClass.VESSEL
    assert class_of("rib_right_12") == StructureClass.BONE
    assert class_of("lung_lower_lobe_left") == StructureClass.LOBE
    assert class_of("spinal_cord") == StructureClass.NERVE
    assert class_of("no_such_structure") == StructureClass.OTHER
    assert set(class_colours()) == set(StructureClass)


def test_structure_set_crops_and_expands_masks():
    ct = Image(np.zeros((10, 12, 14), np.int16), np.eye(4))
    sset = StructureSet.for_image(ct)
    m = np.zeros(ct.shape, bool)
    m[2:4, 5:9, 1:3] = True
    s = sset.add("aorta", m)
    assert s.mask.shape == (2, 4, 2) and s.offset == (2, 5, 1)
    assert np.array_equal(sset.mask("aorta"), m)
    assert np.array_equal(sset.union(classes=["vessel"]), m)
    assert sset.add("liver", np.zeros(ct.shape, bool)) is None and sset.empty == ["liver"]
    with pytest.raises(InputError, match="given twice"):
        sset.add("aorta", m)


@pytest.mark.shared_data
def test_totalsegmentator_folder_imports_every_nonempty_mask():
    ct = load_image(ABDOMEN_CT)
    sset = load_structures(ABDOMEN_SEG, ct)
    raw = {p.name[:-7]: int(np.count_nonzero(nib.load(str(p)).get_fdata() > 0)) for p in ABDOMEN_SEG.glob("*.nii.gz")}
    assert sorted(sset.names()) == sorted(n for n, c in raw.items() if c)
    assert sorted(sset.empty) == sorted(n for n, c in raw.items() if not c)
    for s in sset:
        assert s.voxel_count == raw[s.name], s.name  # same grid: nothing lost or added
    assert sset["aorta"].cls == StructureClass.VESSEL
    assert {s.cls for s in sset} >= {StructureClass.BONE, StructureClass.VESSEL, StructureClass.ORGAN}
    # The liver sits on the patient's right (negative x in LPS).
    liver = np.argwhere(sset.mask("liver"))
    assert ct.ijk_to_lps(liver[:, ::-1].mean(axis=0))[0] < 0


@pytest.mark.shared_data
def test_masks_land_on_a_dicom_grid_of_the_same_scan_exactly(tmp_path):
    """TotalSegmentator output (RAS NIfTI) onto the same scan stored as DICOM (LPS order)."""
    ct_nifti = load_image(ABDOMEN_CT)
    # The same voxels with i and j reversed (LPS order, as a scanner writes DICOM).
    aff = ct_nifti.affine.copy()
    ni, nj, _ = ct_nifti.size_ijk
    aff[:3, 3] += (ni - 1) * aff[:3, 0] + (nj - 1) * aff[:3, 1]
    aff[:3, :2] *= -1
    lps = Image(ct_nifti.voxels[:, ::-1, ::-1], aff)
    assert lps.orientation == "LPS"
    write_image_as_dicom(lps, tmp_path / "dicom", uid_seed="abd")
    ct_dicom = load_image(tmp_path / "dicom")
    assert ct_dicom.orientation != ct_nifti.orientation
    a = load_structures(ABDOMEN_SEG, ct_nifti)
    b = load_structures(ABDOMEN_SEG, ct_dicom)
    for name in ["aorta", "liver", "hip_left", "kidney_right"]:
        pa = ct_nifti.ijk_to_lps(np.argwhere(a.mask(name))[:, ::-1])
        pb = ct_dicom.ijk_to_lps(np.argwhere(b.mask(name))[:, ::-1])
        assert len(pa) == len(pb)
        assert np.allclose(np.sort(pa, axis=0), np.sort(pb, axis=0), atol=1e-3)


def test_masks_on_another_resolution_keep_their_place_and_volume(tmp_path):
    centre = np.array([3.3, -7.1, 12.4])
    mask = sphere_image(centre, 9.0, 1.5, 30, origin=(-20, -30, -10))
    path = tmp_path / "nodule.nii.gz"
    save_image(mask, path)
    (tmp_path / "nodule.json").write_text(json.dumps({"1": "lung_nodule"}))
    ct = Image(np.zeros((40, 44, 48), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]) + np.array(
        [[0, 0, 0, -22.0], [0, 0, 0, -30.0], [0, 0, 0, -8.0], [0, 0, 0, 0]]))
    sset = load_structures(path, ct)
    got = np.argwhere(sset.mask("lung_nodule"))
    c = ct.ijk_to_lps(got[:, ::-1].mean(axis=0))
    assert np.linalg.norm(c - centre) < 0.3
    vol = len(got) * 1.0
    assert abs(vol - 4 / 3 * np.pi * 9.0**3) / (4 / 3 * np.pi * 9.0**3) < 0.05
    assert sset["lung_nodule"].cls == StructureClass.TARGET


def test_label_map_tables_from_header_extension_sidecar_or_nothing(tmp_path):
    ct = Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:3, 1:3, 1:3] = 7
    labels[5:7, 5:7, 5:7] = 52
    path = tmp_path / "ml.nii.gz"
    save_image(Image(labels, np.eye(4)), path)
    with pytest.raises(InputError, match="needs a label table"):
        load_structures(path, ct)
    # The label table TotalSegmentator writes into the header (Caret XML extension).
    img = nib.load(str(path))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><CaretExtension><VolumeInformation Index="0"><LabelTable>'
           '<Label Key="7" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[pancreas]]></Label>'
           '<Label Key="52" Red="0" Green="1" Blue="0" Alpha="1"><![CDATA[aorta]]></Label>'
           '</LabelTable></VolumeInformation></CaretExtension>')
    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml.encode()))
    nib.save(img, str(path))
    sset = load_structures(path, ct)
    assert sorted(sset.names()) == ["aorta", "pancreas"]
    assert sset["aorta"].voxel_count == 8
    # A sidecar table that misses a value present in the map is refused.
    plain = tmp_path / "plain.nii.gz"
    save_image(Image(labels, np.eye(4)), plain)
    (tmp_path / "plain.txt").write_text("# value name r g b a\n7 pancreas 1 0 0 255\n")
    with pytest.raises(InputError, match=r"label values \[52\]"):
        load_structures(plain, ct)


def test_masks_that_do_not_overlap_the_ct_are_refused(tmp_path):
    mask = sphere_image(np.array([0.0, 0, 0]), 5, 1.0, 12, origin=(500, 500, 500))
    path = tmp_path / "far.nii.gz"
    save_image(mask, path)
    ct = Image(np.zeros((20, 20, 20), np.int16), np.eye(4))
    with pytest.raises(InputError, match="do not overlap the CT"):
        load_structures(path, ct, label_table={1: "liver"})
