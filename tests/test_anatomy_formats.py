"""DICOM SEG, DICOM RTSTRUCT and 3D Slicer .seg.nrrd onto the CT grid (and .seg.nrrd back out)."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from conftest import CT3SLICE
from dicomgen import ORIENTATIONS, Acquisition, write_acquisition
from planner.anatomy import (
    StructureSet,
    load_dicom_seg,
    load_rtstruct,
    load_slicer_seg,
    load_structures,
    save_slicer_seg,
)
from planner.anatomy.dicom_seg import RTSTRUCT_STORAGE
from planner.errors import InputError
from planner.images import Image, load_image
from planner.images.geometry import flip_xy
from planner.images.nrrd_io import load_nrrd
from planner.images.resample import resample_to_grid

hd = pytest.importorskip("highdicom")


# ---------------------------------------------------------------------------------------------
# Generated scans and analytic shapes (LPS mm)
# ---------------------------------------------------------------------------------------------
BALL_A = (np.array([-4.1, 3.3, 1.7]), 9.13)
BALL_B = (np.array([3.9, 1.2, -0.6]), 7.41)  # overlaps A
BOX_C = (np.array([10.2, -20.3, -9.7]), np.array([19.6, -13.1, 6.2]))  # disjoint from both


def inside(points: np.ndarray, what: str) -> np.ndarray:
    if what == "C":
        lo, hi = BOX_C
        return np.all((points >= lo) & (points <= hi), axis=-1)
    c, r = BALL_A if what == "A" else BALL_B
    return np.linalg.norm(points - c, axis=-1) <= r


def voxel_centres(ct: Image) -> np.ndarray:
    """LPS centres of every CT voxel, shape (nk, nj, ni, 3)."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in ct.shape), indexing="ij")
    return ct.ijk_to_lps(np.stack([ii, jj, kk], -1).astype(float))


def pixel_centres(ds: Dataset) -> np.ndarray:
    """LPS centres of the pixels of one single-frame image, shape (rows, columns, 3)."""
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    jj, ii = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
    return np.asarray(ds.ImagePositionPatient, float) + ii[..., None] * dc * iop[:3] + jj[..., None] * dr * iop[3:]


def make_ct(folder: Path, orientation: str = "axial-HFS", seed: str = "fmt", **kw) -> tuple[Image, list[Dataset]]:
    acq = Acquisition(*ORIENTATIONS[orientation], rows=40, columns=44, n_slices=kw.pop("n_slices", 14), step=2.5)
    write_acquisition(folder, acq, seed=seed, **kw)
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    return load_image(folder), datasets


@pytest.fixture(scope="module")
def hfs(tmp_path_factory) -> tuple[Image, list[Dataset]]:
    return make_ct(tmp_path_factory.mktemp("hfs"), "axial-HFS")


def category() -> "hd.sr.CodedConcept":
    return hd.sr.CodedConcept("85756007", "SCT", "Tissue")


def descriptions(labels: list[str]) -> list:
    return [
        hd.seg.SegmentDescription(
            segment_number=n + 1, segment_label=label, segmented_property_category=category(),
            segmented_property_type=category(), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, label in enumerate(labels)
    ]


def write_seg(path: Path, sources: list[Dataset], pixels: np.ndarray, labels: list[str], kind: str = "BINARY", **kw) -> Path:
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=kind, segment_descriptions=descriptions(labels),
        series_instance_uid=generate_uid(), series_number=7, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="1", device_serial_number="1", **kw,
    )
    seg.save_as(path)
    return path


def seg_pixels(datasets: list[Dataset], shapes: str) -> np.ndarray:
    """Frames (n, rows, columns, segments) of the analytic shapes on each source image."""
    return np.stack([np.stack([inside(pixel_centres(ds), s) for s in shapes], -1) for ds in datasets]).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# DICOM SEG
# ---------------------------------------------------------------------------------------------
def test_seg_round_trip_keeps_every_voxel_and_overlaps(hfs, tmp_path):
    ct, datasets = hfs
    path = write_seg(tmp_path / "seg.dcm", datasets, seg_pixels(datasets, "ABC"), ["Liver", "Spinal Cord", "lesion 1"])
    sset = load_dicom_seg(path, ct)
    assert sset.names() == ["liver", "spinal_cord", "lesion 1"]  # TotalSegmentator names where one matches
    pts = voxel_centres(ct)
    for name, shape in zip(sset.names(), "ABC"):
        assert np.array_equal(sset.mask(name), inside(pts, shape)), name
    assert (sset.mask("liver") & sset.mask("spinal_cord")).any()
    # A folder holding the CT and the SEG, through the dispatcher, gives the same.
    for ds in datasets:
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm")
    again = load_structures(tmp_path, ct)
    assert np.array_equal(again.mask("liver"), sset.mask("liver"))


@pytest.mark.parametrize("by_frame", [False, True], ids=["volume", "frame-by-frame"])
def test_seg_frames_are_placed_by_their_own_positions(hfs, tmp_path, monkeypatch, by_frame):
    """A SEG on its own grid (finer, shifted, fewer and non-CT slice positions, oblique)."""
    ct, datasets = hfs
    if by_frame:  # the path taken when the frames are not a regular stack
        monkeypatch.setattr(hd.seg.Segmentation, "get_volume_geometry", lambda self, **kw: None)
    row, col = np.array(ORIENTATIONS["oblique"][0]), np.array(ORIENTATIONS["oblique"][1])
    normal = np.cross(row, col)
    ps, step, n = 0.9, 1.3, 20
    corner = BALL_A[0] - 13.0 * (row + col) - (n - 1) * step / 2 * normal
    positions = [corner + s * step * normal for s in range(n)]
    jj, ii = np.meshgrid(np.arange(30), np.arange(30), indexing="ij")
    frames = np.stack([inside(p + ii[..., None] * ps * row + jj[..., None] * ps * col, "A") for p in positions])
    path = write_seg(
        tmp_path / "own.dcm", datasets, frames.astype(np.uint8), ["nodule"],
        pixel_measures=hd.PixelMeasuresSequence([ps, ps], step, step),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", [*row, *col]),
        plane_positions=[hd.PlanePositionSequence("PATIENT", p) for p in positions],
    )
    got = load_dicom_seg(path, ct).mask("nodule")
    truth = inside(voxel_centres(ct), "A")
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.9
    centroid = ct.ijk_to_lps(np.argwhere(got)[:, ::-1].mean(axis=0))
    assert np.all(np.abs(ct.lps_to_ijk(centroid) - ct.lps_to_ijk(BALL_A[0])) < 0.5)


def test_seg_frame_by_frame_path_matches_the_volume_path(hfs, tmp_path, monkeypatch):
    ct, datasets = hfs
    path = write_seg(tmp_path / "seg.dcm", datasets, seg_pixels(datasets, "AB"), ["a", "b"])
    by_volume = load_dicom_seg(path, ct)
    monkeypatch.setattr(hd.seg.Segmentation, "get_volume_geometry", lambda self, **kw: None)
    by_frame = load_dicom_seg(path, ct)
    for name in ["a", "b"]:
        assert np.array_equal(by_frame.mask(name), by_volume.mask(name))


def test_fractional_seg_is_thresholded_at_one_half(hfs, tmp_path):
    ct, datasets = hfs
    pix = seg_pixels(datasets, "AB")
    frac = np.where(pix[..., 0] > 0, 0.8, np.where(pix[..., 1] > 0, 0.3, 0.0)).astype(np.float32)
    path = write_seg(tmp_path / "frac.dcm", datasets, frac, ["a"], kind="FRACTIONAL")
    got = load_dicom_seg(path, ct).mask("a")
    assert np.array_equal(got, inside(voxel_centres(ct), "A"))


def test_seg_of_another_scan_is_refused(hfs, tmp_path):
    ct, datasets = hfs
    path = write_seg(tmp_path / "seg.dcm", datasets, seg_pixels(datasets, "A"), ["a"])
    other, _ = make_ct(tmp_path / "other", seed="other")
    with pytest.raises(InputError, match="frame of reference .* differs from the CT's"):
        load_dicom_seg(path, other)
    # Same frame of reference, another series far away: refused, naming the series.
    far, _ = make_ct(tmp_path / "far", seed="far", s_values=np.arange(14) * 2.5 + 400,
                     extra={"FrameOfReferenceUID": ct.meta.frame_of_reference_uid})
    with pytest.raises(InputError, match=r"references series .* do not overlap the CT"):
        load_dicom_seg(path, far)
    with pytest.raises(InputError, match="holds 14 DICOM files but no segmentation"):
        load_dicom_seg(tmp_path / "other", ct)


@pytest.mark.shared_data
def test_real_liver_seg_matches_the_nrrd_label_map():
    ct = load_image(CT3SLICE / "ct")
    sset = load_structures(CT3SLICE / "liver.dcm", ct)
    assert sset.names() == ["liver"]
    ref = load_nrrd(CT3SLICE / "liver_seg.nrrd")
    truth = resample_to_grid(ref.voxels > 0, ref.affine, ct.shape, ct.affine, order=0).astype(bool)
    got = sset.mask("liver")
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice >= 0.99, dice
    # The liver lies on the patient's right (negative x).
    assert ct.ijk_to_lps(np.argwhere(got)[:, ::-1].mean(axis=0))[0] < 0


@pytest.mark.shared_data
def test_real_partially_overlapping_segments_stay_separate():
    ct = load_image(CT3SLICE / "ct")
    sset = load_dicom_seg(CT3SLICE / "partial_overlaps.dcm", ct)
    assert sset.names() == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    # Each segment keeps every pixel its frames hold (the SEG shares the CT's grid).
    ds = pydicom.dcmread(CT3SLICE / "partial_overlaps.dcm")
    frames = ds.pixel_array
    for n, name in enumerate(sset.names(), start=1):
        idx = [f for f, g in enumerate(ds.PerFrameFunctionalGroupsSequence)
               if g.SegmentIdentificationSequence[0].ReferencedSegmentNumber == n]
        assert sset[name].voxel_count == int(np.count_nonzero(frames[idx])), name
    assert (sset.mask("GREEN") & sset.mask("ORANGE")).sum() > 1000
    assert (sset.mask("GREEN") & sset.mask("PURPLE")).any()
    assert sset["GREEN"].colour == (128, 174, 128)  # from RecommendedDisplayCIELabValue
    with pytest.raises(InputError, match="holds 2 SEG/RTSTRUCT files"):
        load_structures(CT3SLICE, ct)
    with pytest.raises(InputError, match="no segmentation"):
        load_structures(CT3SLICE / "ct", ct)


# ---------------------------------------------------------------------------------------------
# RTSTRUCT
# ---------------------------------------------------------------------------------------------
def circle(centre: np.ndarray, radius: float, u: np.ndarray, v: np.ndarray, n: int = 72) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return centre + radius * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)


def write_rtstruct(path: Path, frame_uid: str, rois: list[tuple[str, list[np.ndarray]]]) -> Path:
    """A minimal RT Structure Set: one ROI per (name, contours), each contour (n, 3) LPS mm."""
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, fm.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StructureSetLabel = "RTSTRUCT", "DEMO-0001", "test"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref])
    rois_seq, contours_seq = [], []
    for n, (name, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = n, frame_uid, name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois_seq.append(roi)
        item = Dataset()
        item.ReferencedROINumber, item.ROIDisplayColor = n, [255, 20 * n, 0]
        cs = []
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
            c.ContourData = [f"{x:.6f}" for x in np.asarray(pts).ravel()]
            cs.append(c)
        item.ContourSequence = DicomSequence(cs)
        contours_seq.append(item)
    ds.StructureSetROISequence = DicomSequence(rois_seq)
    ds.ROIContourSequence = DicomSequence(contours_seq)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("orientation", ["axial-HFS", "axial-HFP", "oblique"])
def test_rtstruct_disks_and_a_ring_with_a_hole(tmp_path, orientation):
    ct, _ = make_ct(tmp_path / "ct", orientation, seed=orientation, n_slices=10)
    u, v, n = (ct.direction[:, a] for a in range(3))
    centre = np.array([2.3, -1.7, 0.9])
    slices = range(2, ct.shape[0] - 2)
    planes = {k: centre + ((ct.ijk_to_lps([0, 0, k]) - centre) @ n) * n for k in slices}  # disk centre per slice
    disk = [circle(planes[k], 11.0, u, v) for k in slices]
    ring = [c for k in slices for c in (circle(planes[k] + 3 * u, 15.0, u, v), circle(planes[k] + 3 * u, 6.0, u, v))]
    path = write_rtstruct(tmp_path / "rs.dcm", ct.meta.frame_of_reference_uid, [("Aorta", disk), ("ring", ring)])
    sset = load_rtstruct(path, ct)
    assert sset.names() == ["aorta", "ring"] and sset["aorta"].colour == (255, 20, 0)
    px = ct.spacing[0] * ct.spacing[1]
    for k in slices:
        for name, c, area in [("aorta", planes[k], np.pi * 11.0**2),
                              ("ring", planes[k] + 3 * u, np.pi * (15.0**2 - 6.0**2))]:
            m = sset.mask(name)[k]
            assert abs(m.sum() * px - area) / area < 0.04, (name, k)
            centroid_ij = np.argwhere(m)[:, ::-1].mean(axis=0)
            assert np.all(np.abs(centroid_ij - ct.lps_to_ijk(c)[:2]) < 0.5), (name, k)
        hole = np.rint(ct.lps_to_ijk(planes[k] + 3 * u)).astype(int)
        assert not sset.mask("ring")[k, hole[1], hole[0]]  # the inner contour cuts a hole
    assert not sset.mask("aorta")[0].any() and not sset.mask("aorta")[-1].any()
    assert load_structures(path, ct).names() == ["aorta", "ring"]


def test_rtstruct_off_the_slice_planes_or_of_another_scan_is_refused(hfs, tmp_path):
    ct, _ = hfs
    u, n = ct.direction[:, 0], ct.direction[:, 2]
    tilted = circle(ct.ijk_to_lps([20, 20, 7]), 8.0, u, n)  # a plane across the slices
    path = write_rtstruct(tmp_path / "tilted.dcm", ct.meta.frame_of_reference_uid, [("x", [tilted])])
    with pytest.raises(InputError, match="not a CT slice plane"):
        load_rtstruct(path, ct)
    flat = circle(ct.ijk_to_lps([20, 20, 7]), 8.0, u, ct.direction[:, 1])
    path = write_rtstruct(tmp_path / "other.dcm", "1.2.3.4", [("x", [flat])])
    with pytest.raises(InputError, match="frame of reference 1.2.3.4 differs"):
        load_rtstruct(path, ct)
    far = write_rtstruct(tmp_path / "far.dcm", ct.meta.frame_of_reference_uid, [("x", [flat + 500 * n])])
    with pytest.raises(InputError, match="lie outside the CT's slices"):
        load_rtstruct(far, ct)
    with pytest.raises(InputError, match="a DICOM RTSTRUCT, not a DICOM SEG"):
        load_dicom_seg(far, ct)


# ---------------------------------------------------------------------------------------------
# 3D Slicer .seg.nrrd
# ---------------------------------------------------------------------------------------------
def oblique_grid() -> Image:
    """An anisotropic, oblique, left-handed-free grid: any axis mix-up shows."""
    rot = np.array(ORIENTATIONS["oblique"][0]), np.array(ORIENTATIONS["oblique"][1])
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = 0.7 * rot[0], 0.9 * rot[1], 2.0 * np.cross(*rot)
    aff[:3, 3] = [-14.0, -18.0, -12.0]
    return Image(np.zeros((12, 40, 36), np.int16), aff)


def three_structures(ct: Image) -> StructureSet:
    sset = StructureSet.for_image(ct)
    m = np.zeros(ct.shape, bool)
    a, b, c = m.copy(), m.copy(), m.copy()
    a[2:8, 5:20, 4:18] = True
    b[5:10, 15:30, 10:25] = True  # overlaps a
    c[1:4, 32:38, 28:34] = True
    sset.add("liver", a, colour=(200, 10, 30))
    sset.add("lesion one", b, colour=(1, 2, 254))
    sset.add("aorta", c)
    return sset


def test_slicer_seg_round_trip_with_layers_and_geometry(tmp_path):
    ct = oblique_grid()
    sset = three_structures(ct)
    path = tmp_path / "s.seg.nrrd"
    save_slicer_seg(sset, path)
    back = load_slicer_seg(path, ct)
    assert back.names() == sset.names()
    for s in sset:
        assert np.array_equal(back.mask(s.name), sset.mask(s.name)) and back[s.name].colour == s.colour
        assert back[s.name].offset == s.offset and back[s.name].mask.shape == s.mask.shape  # tight crops
    data, h = nrrd.read(str(path), index_order="F")  # file axis order: (layer, i, j, k)
    assert h["dimension"] == 4 and h["kinds"] == ["list", "domain", "domain", "domain"]
    assert h["space"] == "left-posterior-superior" and h["encoding"] == "gzip"
    assert h["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert h["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert h["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert [h[f"Segment{n}_Name"] for n in range(3)] == ["liver", "lesion one", "aorta"]
    assert [h[f"Segment{n}_Layer"] for n in range(3)] == ["0", "1", "0"]  # only the overlapping one moves
    assert [float(x) for x in h["Segment0_Color"].split()] == pytest.approx([200 / 255, 10 / 255, 30 / 255], abs=1e-6)
    assert h["Segment2_Extent"] == "28 33 32 37 1 3"
    # Row n of 'space directions' is the step along file axis n = i, j, k.
    i, j, k = 30, 33, 2
    layer, value = int(h["Segment2_Layer"]), int(h["Segment2_LabelValue"])
    assert data[layer, i, j, k] == value and data[layer, i - 3, j, k] == 0
    dirs = np.asarray(h["space directions"])[1:]
    assert np.allclose(h["space origin"] + np.array([i, j, k]) @ dirs, ct.ijk_to_lps([i, j, k]), atol=1e-4)
    assert load_structures(path, ct).names() == ["liver", "lesion one", "aorta"]


def test_slicer_seg_without_overlap_is_one_3d_layer(tmp_path):
    ct = oblique_grid()
    sset = three_structures(ct)
    single = StructureSet.for_image(ct)
    for name in ["liver", "aorta"]:
        single.add(name, sset.mask(name), colour=sset[name].colour)
    save_slicer_seg(single, tmp_path / "one.seg.nrrd")
    h = nrrd.read_header(str(tmp_path / "one.seg.nrrd"))
    assert h["dimension"] == 3 and h["Segment1_Layer"] == "0" and h["Segment1_LabelValue"] == "2"
    back = load_slicer_seg(tmp_path / "one.seg.nrrd", ct)
    assert np.array_equal(back.mask("aorta"), sset.mask("aorta"))


def test_old_style_ras_cropped_slicer_file_lands_on_the_ct(tmp_path):
    """Pre-4.11 layout (one segment per layer, no LabelValue/Layer), RAS space, a cropped grid."""
    ct = oblique_grid()
    sset = three_structures(ct)
    lo = np.array([4, 5, 1])  # (i, j, k) of the crop's first voxel
    crop = (slice(1, 11), slice(5, 39), slice(4, 35))
    layers = np.stack([sset.mask(n)[crop] for n in ["liver", "lesion one"]], -1).astype(np.uint8)
    aff = ct.affine.copy()
    aff[:3, 3] = ct.ijk_to_lps(lo.astype(float))
    ras = flip_xy(aff)
    header = {
        "space": "right-anterior-superior", "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.vstack([np.full(3, np.nan), ras[:3, :3].T]), "space origin": ras[:3, 3],
        "Segment0_ID": "s0", "Segment0_Name": "Liver", "Segment0_Color": "0.5 0.5 0.5",
        "Segment1_ID": "s1", "Segment1_Name": "lesion one",
    }
    nrrd.write(str(tmp_path / "old.seg.nrrd"), layers, header, index_order="C")
    back = load_structures(tmp_path / "old.seg.nrrd", ct)
    assert back.names() == ["liver", "lesion one"] and back["liver"].colour == (128, 128, 128)
    for name in back.names():
        assert np.array_equal(back.mask(name), sset.mask(name)), name


def test_slicer_seg_that_misses_the_ct_is_refused(tmp_path):
    ct = oblique_grid()
    far = Image(ct.voxels, ct.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 300], [0, 0, 0, 1.0]]))
    sset = StructureSet.for_image(far)
    m = np.zeros(far.shape, bool)
    m[2:4, 2:4, 2:4] = True
    sset.add("liver", m)
    save_slicer_seg(sset, tmp_path / "far.seg.nrrd")
    with pytest.raises(InputError, match="do not overlap the CT"):
        load_slicer_seg(tmp_path / "far.seg.nrrd", ct)
    nrrd.write(str(tmp_path / "plain.seg.nrrd"), m.astype(np.uint8),
               {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": [0, 0, 0]})
    with pytest.raises(InputError, match="no Segment<N>_ fields"):
        load_slicer_seg(tmp_path / "plain.seg.nrrd", ct)


def test_a_structures_file_read_again_comes_from_the_cache_unchanged(tmp_path, monkeypatch):
    """The second reading of the same file onto the same CT comes from the mask cache and is the
    same structure set; a changed file or another CT is read afresh; a damaged entry is ignored."""
    from planner.anatomy import mask_cache
    from planner.anatomy import slicer_seg

    monkeypatch.setenv("PLANNER_CACHE", str(tmp_path / "cache"))
    ct = oblique_grid()
    sset = three_structures(ct)
    sset_path = tmp_path / "s.seg.nrrd"
    save_slicer_seg(sset, sset_path)
    first = load_slicer_seg(sset_path, ct)
    entries = list((tmp_path / "cache" / "structures").glob("*.npz"))
    assert len(entries) == 1
    reads = []
    real = slicer_seg.read_slicer_seg
    monkeypatch.setattr(slicer_seg, "read_slicer_seg", lambda *a, **k: reads.append(a) or real(*a, **k))
    again = load_slicer_seg(sset_path, ct)
    assert reads == []  # from the cache
    assert again.names() == first.names() and again.empty == first.empty
    for s in first:
        b = again[s.name]
        assert (b.offset, b.colour, b.cls, b.source) == (s.offset, s.colour, s.cls, s.source)
        assert np.array_equal(b.mask, s.mask)
    # the file changes (one segment fewer): read afresh, not the old entry
    fewer = StructureSet.for_image(ct)
    fewer.add("liver", sset.mask("liver"), colour=sset["liver"].colour)
    save_slicer_seg(fewer, sset_path)
    assert load_slicer_seg(sset_path, ct).names() == ["liver"] and len(reads) == 1
    # another CT (other voxels, same grid): read afresh
    other = ct.with_voxels(np.asarray(ct.voxels) + 1)
    load_slicer_seg(sset_path, other)
    assert len(reads) == 2
    # a damaged entry is ignored and replaced
    for e in (tmp_path / "cache" / "structures").glob("*.npz"):
        e.write_bytes(e.read_bytes()[:100])
    assert load_slicer_seg(sset_path, ct).names() == ["liver"] and len(reads) == 3
    assert load_slicer_seg(sset_path, ct).names() == ["liver"] and len(reads) == 3
